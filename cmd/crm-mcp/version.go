package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/crm-mcp
var version = "dev"

func (a *app) version(context.Context) int {
	fmt.Fprint(a.stdout, versionText())
	return 0
}

// versionText is the output of "crm-mcp version": the version, the Go
// toolchain and platform, and the commit the binary was built from when
// the build recorded it.
func versionText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "crm-mcp %s\n", versionString())
	fmt.Fprintf(&b, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok && vcsInfo(bi.Settings) != "" {
		fmt.Fprintf(&b, "vcs: %s\n", vcsInfo(bi.Settings))
	}
	return b.String()
}

// versionString is the version alone, for logs and the MCP server's
// implementation info. Without -ldflags, a binary made by
// "go install ...@v1.2.3" still knows its module version.
func versionString() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// vcsInfo summarizes the build's vcs settings (recorded by go build
// unless -buildvcs=false), or returns "" when there are none.
func vcsInfo(settings []debug.BuildSetting) string {
	var system, rev, at string
	modified := false
	for _, s := range settings {
		switch s.Key {
		case "vcs":
			system = s.Value
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	out := strings.TrimSpace(system + " " + rev)
	if at != "" {
		out += " " + at
	}
	if modified {
		out += " (modified)"
	}
	return out
}
