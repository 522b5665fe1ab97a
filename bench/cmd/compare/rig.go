package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/crm-mcp/crm-mcp/bench/load"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// rig is the servers under test and the stand-ins they trust.
type rig struct {
	work    string // binaries, database, CA file and server logs
	as      *rstest.Server
	duo     *duotest.Server
	servers []*server
}

// rigOptions says which servers to start and how they are spoken to.
type rigOptions struct {
	names    []string
	sessions int // tokens minted per server, one per user
	// protocol is the revision the load speaks; a server that cannot speak
	// it (the TypeScript SDK v1 peer, on 2026-07-28) gets
	// load.LegacyProtocolVersion.
	protocol string
	// gosdkStateless runs the go-sdk peer stateless: go-sdk's only way to
	// serve 2026-07-28.
	gosdkStateless bool
}

// startRig builds and starts the named servers, each with sessions
// tokens minted for its resource URL. Call close even when it fails.
func startRig(ctx context.Context, o rigOptions, stderr io.Writer) (*rig, error) {
	names, sessions := o.names, o.sessions
	rg := &rig{}
	root, err := moduleRoot(ctx)
	if err != nil {
		return rg, err
	}
	tsDir := filepath.Join(root, "bench", "peers", "typescript")
	if slices.Contains(names, typeScript) {
		if err := checkNodeModules(tsDir); err != nil {
			return rg, err
		}
	}
	if rg.work, err = os.MkdirTemp("", "crm-mcp-bench-"); err != nil {
		return rg, err
	}

	fmt.Fprintln(stderr, "compare: building crm-mcp and the go-sdk peer")
	for pkg, bin := range map[string]string{"./cmd/crm-mcp": crmMCP, "./bench/peers/gosdk": goSDK} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(rg.work, bin), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return rg, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}

	rg.as = rstest.NewServer()
	rg.as.KID("RS256") // the signing key exists before the first JWKS fetch
	rg.duo = duotest.NewServer()
	rg.duo.SetDefault(duotest.Approve) // a write in a custom mix is approved at once
	caFile := filepath.Join(rg.work, "duo-ca.pem")
	if err := os.WriteFile(caFile, rg.duo.CACertPEM(), 0o600); err != nil {
		return rg, err
	}

	as, duo := rg.as, rg.duo
	for _, name := range names {
		port, err := freePort()
		if err != nil {
			return rg, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		s := &server{name: name, url: "http://" + addr + "/mcp", log: filepath.Join(rg.work, name+".log"), protocol: o.protocol, asked: o.protocol, stateless: o.gosdkStateless}
		switch name {
		case crmMCP:
			s.cmd = exec.Command(filepath.Join(rg.work, crmMCP), "serve")
			s.cmd.Env = append(baseEnv(),
				"MCP_LISTEN_ADDR="+addr,
				"MCP_RESOURCE_URL="+s.url,
				"DUO_ISSUER="+as.Issuer(),
				"AUTH_MODE=jwt",
				"STEPUP_MODE=duo",
				"DUO_AUTH_IKEY="+duo.IKey(),
				"DUO_AUTH_SKEY="+duo.SKey(),
				"DUO_AUTH_HOST="+duo.Host(),
				"DUO_AUTH_CA_FILE="+caFile,
				"CRM_DB_PATH="+filepath.Join(rg.work, "crm.db"),
			)
		case goSDK:
			s.cmd = exec.Command(filepath.Join(rg.work, goSDK), "-addr", addr, "-issuer", as.Issuer(), "-jwks-url", as.JWKSURL(), "-stateless="+strconv.FormatBool(o.gosdkStateless))
			s.cmd.Env = baseEnv()
		case typeScript:
			s.cmd = exec.Command("node", "server.mjs", "--addr", addr, "--issuer", as.Issuer(), "--jwks-url", as.JWKSURL())
			s.cmd.Dir = tsDir
			s.cmd.Env = append(baseEnv(), "NODE_ENV=production")
			s.protocol = typeScriptProtocol(o.protocol)
		}
		for i := range sessions {
			s.tokens = append(s.tokens, as.Mint(as.Claims(fmt.Sprintf("bench-user-%d", i+1), s.url, scopes...)))
		}
		if err := s.start(ctx); err != nil {
			return rg, err
		}
		rg.servers = append(rg.servers, s)
	}
	return rg, nil
}

// close stops the servers and the stand-ins, and removes the work
// directory unless keep is set (a failed run keeps it for its logs).
func (rg *rig) close(keep bool, stderr io.Writer) {
	for _, s := range rg.servers {
		s.stop()
	}
	if rg.duo != nil {
		rg.duo.Close()
	}
	if rg.as != nil {
		rg.as.Close()
	}
	if rg.work == "" {
		return
	}
	if keep {
		fmt.Fprintf(stderr, "compare: binaries, database and server logs are in %s\n", rg.work)
		return
	}
	os.RemoveAll(rg.work)
}

// moduleRoot is the directory of the go.mod of the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run compare inside the crm-mcp module (go run ./bench/cmd/compare)")
	}
	return filepath.Dir(mod), nil
}

// typeScriptProtocol is the revision the TypeScript peer is spoken to in
// when the run asks for protocol: its SDK (v1) serves only the
// initialize-based revisions.
func typeScriptProtocol(protocol string) string {
	if protocol >= "2026-07-28" {
		return load.LegacyProtocolVersion
	}
	return protocol
}

// checkNodeModules says how to install the TypeScript peer's packages when
// they are missing.
func checkNodeModules(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		return fmt.Errorf("the TypeScript peer's packages are not installed: run npm ci --prefix %s (or leave the peer out with -servers crm-mcp,gosdk)", dir)
	}
	if _, err := exec.LookPath("node"); err != nil {
		return errors.New("the TypeScript peer needs node (20 or later) on PATH (or leave the peer out with -servers crm-mcp,gosdk)")
	}
	return nil
}
