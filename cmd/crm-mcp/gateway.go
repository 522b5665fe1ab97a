package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/crm-mcp/crm-mcp/gateway"
	"github.com/crm-mcp/crm-mcp/govern"
)

// gateway runs serve's server with the gateway's MCP endpoint: the tools
// of the upstream MCP servers GATEWAY_POLICY names, behind the same front
// door, scopes, step-up, audit trail, metrics and limits.
func (a *app) gateway(ctx context.Context) int {
	cfg, err := loadConfig(a.environ)
	if err == nil && strings.TrimSpace(cfg.GatewayPolicy) == "" {
		err = varErrorf("GATEWAY_POLICY", "is required by crm-mcp gateway: the path of the YAML policy file naming the upstreams and their tools")
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp gateway: invalid configuration:\n%s", formatConfigErrors(err))
		return 1
	}
	pol, err := a.loadGatewayPolicy(&cfg)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp gateway: invalid policy (GATEWAY_POLICY):\n%s", formatConfigErrors(err))
		return 1
	}
	return a.serveConfig(ctx, cfg, serveOptions{command: "gateway", endpoint: a.gatewayEndpoint(pol), toolNames: gatewayToolNames(pol)})
}

// loadGatewayPolicy reads GATEWAY_POLICY and fits the configuration to its
// tools: STEPUP_TOOLS must name them, and MCP_SCOPES_SUPPORTED, unset,
// lists their scopes rather than the CRM's.
func (a *app) loadGatewayPolicy(cfg *config) (*gateway.Policy, error) {
	pol, err := gateway.Load(cfg.GatewayPolicy, a.lookupEnv)
	if err != nil {
		return nil, err
	}
	names := gatewayToolNames(pol)
	var scopes []string
	for _, up := range pol.Upstreams {
		for _, t := range up.ToolNames() {
			for _, s := range up.Tools[t].Scopes {
				if !slices.Contains(scopes, s) {
					scopes = append(scopes, s)
				}
			}
		}
	}
	slices.Sort(scopes)
	var unknown []string
	for _, t := range cfg.Tools {
		if !slices.Contains(names, t) {
			unknown = append(unknown, strconv.Quote(truncate(t)))
		}
	}
	if len(unknown) > 0 {
		return nil, varErrorf("STEPUP_TOOLS", "%s: not a tool of the gateway's policy; its tools are %s", strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	if strings.TrimSpace(a.environ["MCP_SCOPES_SUPPORTED"]) == "" {
		cfg.ScopesSupported = scopes
	}
	return pol, nil
}

// gatewayToolNames are the policy's tools, upstream.tool: a bounded set,
// so metrics label calls by them.
func gatewayToolNames(pol *gateway.Policy) []string {
	var names []string
	for _, up := range pol.Upstreams {
		for _, t := range up.ToolNames() {
			names = append(names, up.Name+"."+t)
		}
	}
	return names
}

// lookupEnv is os.LookupEnv over the environment run was given: the
// policy's ${VAR}s.
func (a *app) lookupEnv(name string) (string, bool) {
	v, ok := a.environ[name]
	return v, ok
}

// commandEnv is what a stdio upstream starts with: enough to find and run
// a program (npx needs PATH and HOME), never the gateway's secrets. The
// names are exact: a prefix such as npm_config_ would let through
// registry credentials (npm_config__authToken, npm_config_//host/:_auth).
// The policy's env adds the upstream's own credentials.
func (a *app) commandEnv() []string {
	var out []string
	for k, v := range a.environ {
		if slices.Contains(commandEnvNames, k) {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

// commandEnvNames are the variables of the gateway's environment a stdio
// upstream gets.
var commandEnvNames = []string{"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "npm_config_cache", "npm_config_prefix"}

// hasCommandUpstream: pol starts a program of its own.
func hasCommandUpstream(pol *gateway.Policy) bool {
	for _, up := range pol.Upstreams {
		if len(up.Command) > 0 {
			return true
		}
	}
	return false
}

// gatewayEndpoint builds the gateway once serve has its front door,
// step-up and audit trail.
func (a *app) gatewayEndpoint(pol *gateway.Policy) func(context.Context, endpointDeps) (endpoint, pinger, error) {
	return func(ctx context.Context, d endpointDeps) (endpoint, pinger, error) {
		gcfg := govern.Config{
			UsernameClaim:      d.cfg.UserClaim,
			Logger:             d.log,
			Recorder:           d.record,
			MaxRequestsPerUser: d.cfg.MaxRequestsPerUser,
			MaxRequests:        d.cfg.MaxRequests,
			MaxWaitingPerUser:  d.cfg.MaxStepUpWaitingPerUser,
			MaxWaiting:         d.cfg.MaxStepUpWaiting,
			OnLimit:            d.onLimit,
		}
		if su := d.stepUp; su != nil {
			gcfg.Guard, gcfg.Terms, gcfg.OnWrite, gcfg.AlwaysTools = su.Guard, su.Terms, su.OnWrite, su.Tools
		}
		g, err := govern.New(gcfg)
		if err != nil {
			return nil, nil, err
		}
		if hasCommandUpstream(pol) {
			if err := undumpable(); err != nil {
				return nil, nil, fmt.Errorf("making the gateway's memory and environment unreadable to its stdio upstreams (prctl PR_SET_DUMPABLE): %w", err)
			}
		}
		gw, err := gateway.New(ctx, gateway.Config{
			Policy:     pol,
			Governor:   g,
			Auth:       d.rs,
			CommandEnv: a.commandEnv(),
			Logger:     d.log,
			Version:    versionString(),
		})
		if err != nil {
			return nil, nil, err
		}
		if ctx.Err() != nil {
			gw.Close()
			return nil, nil, ctx.Err()
		}
		d.log.Info("gateway serving", "policy", d.cfg.GatewayPolicy, "tools", gw.Tools(), "problems", len(gw.Problems()))
		return gw, gatewayReady{gw}, nil
	}
}

// gatewayReady answers /readyz for the gateway: it has no database; the
// upstreams' reachability is reported instead (serve.go, readyHandler).
type gatewayReady struct{ gw *gateway.Gateway }

func (r gatewayReady) Ping(context.Context) error { return nil }

func (r gatewayReady) Upstreams() []gateway.UpstreamStatus { return r.gw.Upstreams() }

// checkGateway is check's part for GATEWAY_POLICY: the policy loads, and
// each upstream answers and offers every tool the policy names.
func (a *app) checkGateway(ctx context.Context, cfg config, r *checkReport) {
	if strings.TrimSpace(cfg.GatewayPolicy) == "" {
		return
	}
	pol, err := a.loadGatewayPolicy(&cfg)
	if err != nil {
		for _, e := range leafErrors(err) {
			r.fail("gateway policy", e.Error())
		}
		return
	}
	r.pass("gateway policy", fmt.Sprintf("%s: %d upstream(s)", cfg.GatewayPolicy, len(pol.Upstreams)))
	probs := gateway.Check(ctx, pol, nil, a.commandEnv(), nil)
	for _, up := range pol.Upstreams {
		what := "gateway upstream " + up.Name
		var mine []string
		for _, p := range probs {
			if p.Upstream == up.Name {
				mine = append(mine, p.String())
			}
		}
		if len(mine) > 0 {
			r.fail(what, strings.Join(mine, "; "))
		} else {
			r.pass(what, fmt.Sprintf("reachable, offers the %d tool(s) the policy names", len(up.Tools)))
		}
	}
}
