package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
)

const healthcheckUsage = `usage: crm-mcp healthcheck [flags]

Asks a running server whether it lives: GET /healthz, exit 0 on 200 OK,
1 otherwise. It is the container image's HEALTHCHECK, so that the image
needs no shell or curl. The URL is http://MCP_LISTEN_ADDR/healthz, with a
wildcard host (":8080", "0.0.0.0:8080") asked on loopback; -url overrides.

flags:
`

// healthcheck runs "crm-mcp healthcheck".
func (a *app) healthcheck(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("crm-mcp healthcheck", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	target := fs.String("url", "", "`URL` to GET instead of http://MCP_LISTEN_ADDR/healthz")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), healthcheckUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(a.stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(a.stderr, "crm-mcp healthcheck: unexpected arguments %q\n\n", fs.Args())
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(a.stderr, "crm-mcp healthcheck: -timeout must be greater than zero, got %s\n", *timeout)
		return 2
	}
	u := *target
	if u == "" {
		addr, ok := a.environ["MCP_LISTEN_ADDR"]
		if !ok {
			addr = defaultListenAddr()
		}
		var err error
		if u, err = healthURL(addr); err != nil {
			fmt.Fprintf(a.stderr, "crm-mcp healthcheck: MCP_LISTEN_ADDR: %v\n", err)
			return 1
		}
	} else if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		fmt.Fprintf(a.stderr, "crm-mcp healthcheck: -url %s is not an absolute http(s) URL\n", shownURL(u))
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := getHealth(ctx, u); err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp healthcheck: %v\n", err)
		return 1
	}
	fmt.Fprintf(a.stdout, "ok: %s\n", u)
	return 0
}

// defaultListenAddr is MCP_LISTEN_ADDR's default, read from config so the
// two cannot drift apart.
func defaultListenAddr() string {
	f, _ := reflect.TypeFor[config]().FieldByName("ListenAddr")
	return f.Tag.Get("envDefault")
}

// healthURL is where a server listening on addr answers /healthz from
// this host: a wildcard or missing host is reached on loopback.
func healthURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", truncate(addr))
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/healthz"}).String(), nil
}

// getHealth GETs u and wants 200 OK. No proxy (the server is local) and
// no redirects: anything but a direct 200 is unhealthy.
func getHealth(ctx context.Context, u string) error {
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s, want 200 OK", u, resp.Status)
	}
	return nil
}

// shownURL quotes a URL for an error message, any password hidden.
func shownURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		s = u.Redacted()
	} else if err != nil && strings.Contains(s, "@") {
		s = "(unparsable URL with '@', not shown)"
	}
	return strconv.Quote(s)
}
