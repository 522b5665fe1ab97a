package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// checkTimeout bounds the network part of check, per step.
const checkTimeout = startupRefreshTimeout

// checkReport prints one line per check and counts the failures. It is
// safe for concurrent use: the front door's background key fetches log
// their warnings into it (warnHandler).
type checkReport struct {
	w io.Writer

	mu             sync.Mutex
	passed, failed int
	warned         map[string]bool // WARN lines printed, so each prints once
}

func (r *checkReport) pass(what, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passed++
	r.line("PASS", what, detail)
}

func (r *checkReport) fail(what, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	r.line("FAIL", what, detail)
}

// warn prints a warning once, however many parts of check log it.
func (r *checkReport) warn(what, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.warned[what+detail] {
		return
	}
	if r.warned == nil {
		r.warned = map[string]bool{}
	}
	r.warned[what+detail] = true
	r.line("WARN", what, detail)
}

// line prints one check on one line: joined errors become "; "-separated.
func (r *checkReport) line(verdict, what, detail string) {
	fmt.Fprintf(r.w, "%s  %s: %s\n", verdict, what, strings.ReplaceAll(strings.TrimSpace(detail), "\n", "; "))
}

// done prints the summary and returns the exit code.
func (r *checkReport) done() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed > 0 {
		fmt.Fprintf(r.w, "check failed: %d of %d checks failed\n", r.failed, r.passed+r.failed)
		return 1
	}
	fmt.Fprintf(r.w, "check passed: %d checks\n", r.passed)
	return 0
}

// check validates the configuration and reaches what serve depends on
// over the network: each issuer's metadata and JWKS and, in the
// introspection modes, its introspection endpoint with the configured
// client credentials. It changes nothing (the database is left alone:
// opening it would create and seed it).
func (a *app) check(ctx context.Context) int {
	r := &checkReport{w: a.stdout}
	cfg, err := loadConfig(a.environ)
	if err != nil {
		for _, e := range leafErrors(err) {
			r.fail("configuration", e.Error())
		}
		return r.done()
	}
	r.pass("configuration", fmt.Sprintf("resource %s (MCP at %s), %d issuer(s), AUTH_MODE %s", cfg.ResourceURL, cfg.mcpPath, len(cfg.Issuers), cfg.mode))
	for _, w := range cfg.warnings {
		r.warn("configuration", w)
	}
	if len(cfg.unknown) > 0 {
		r.warn("configuration", "ignoring variables this version does not read (a typo?): "+strings.Join(cfg.unknown, ", "))
	}

	// The front door's warnings become WARN lines of the report, and its
	// other log lines are left out: the report is for a person to read.
	log := slog.New(&warnHandler{r: r, what: "authorization server"})
	rs, err := resourceserver.New(cfg.resourceServerConfig(log))
	if err != nil {
		for _, e := range leafErrors(nameFields(err)) {
			r.fail("configuration", e.Error())
		}
		return r.done()
	}
	defer rs.Close()

	refreshCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	refreshErr := rs.Refresh(refreshCtx)
	cancel()
	a.checkIssuers(cfg, rs, refreshErr, r)
	if cfg.mode != resourceserver.ModeJWT {
		for _, is := range cfg.Issuers {
			what := "introspection " + is
			if err := probeIntrospection(ctx, cfg, is, log); err != nil {
				r.fail(what, err.Error())
			} else {
				r.pass(what, "the endpoint answered a made-up token as inactive: reachable, client credentials accepted")
			}
		}
	}
	a.checkDuoAuthAPI(ctx, cfg, r)
	a.checkGateway(ctx, cfg, r)
	return r.done()
}

// checkIssuers reports each issuer's discovery and JWKS fetch.
func (a *app) checkIssuers(cfg config, rs *resourceserver.Server, refreshErr error, r *checkReport) {
	failures := map[string]string{}
	var unattributed []error
	for _, e := range leafErrors(refreshErr) {
		var ie *resourceserver.IssuerError
		if errors.As(e, &ie) {
			failures[ie.Issuer] = ie.Err.Error()
		} else {
			unattributed = append(unattributed, e)
		}
	}
	status := map[string]resourceserver.IssuerStatus{}
	for _, st := range rs.Status() {
		status[st.Issuer] = st
	}
	for _, is := range cfg.Issuers {
		what := "issuer " + is
		st := status[is]
		msg, failed := failures[is]
		switch {
		case failed:
			r.fail(what, msg)
		case cfg.mode == resourceserver.ModeIntrospection:
			if cfg.IntrospectionURL != "" {
				r.pass(what, "introspection endpoint set by DUO_INTROSPECTION_URL (no JWKS in introspection mode)")
			} else {
				r.pass(what, "metadata discovered (no JWKS in introspection mode)")
			}
		case !st.Usable:
			r.fail(what, orDefault(st.LastError, "no usable keys"))
		default:
			source := "metadata discovered, JWKS"
			if cfg.JWKSURL != "" {
				source = "JWKS from DUO_JWKS_URL"
			}
			r.pass(what, fmt.Sprintf("%s fetched: %d usable key(s)", source, st.Keys))
		}
	}
	if len(unattributed) > 0 {
		// Not attributable to one issuer (should not happen); still a failure.
		r.fail("authorization servers", errors.Join(unattributed...).Error())
	}
}

// probeIntrospection sends a made-up opaque token to issuer's
// introspection endpoint with the configured client credentials. An
// "inactive" answer proves the endpoint is reachable and accepts the
// credentials; a refused call or an HTTP error proves the opposite.
func probeIntrospection(ctx context.Context, cfg config, issuer string, log *slog.Logger) error {
	pc := cfg.resourceServerConfig(log)
	pc.Mode = resourceserver.ModeIntrospection
	pc.CacheSize = -1
	pc.Issuers = nil
	for _, is := range cfg.resourceServerConfig(log).Issuers {
		if is.URL == issuer {
			pc.Issuers = append(pc.Issuers, is)
		}
	}
	probe, err := resourceserver.New(pc)
	if err != nil {
		return nameFields(err)
	}
	defer probe.Close()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	_, err = probe.Verify(ctx, "crm-mcp-check-"+rand.Text())
	switch {
	case errors.Is(err, resourceserver.ErrInvalidToken):
		return nil
	case err == nil:
		return errors.New("the endpoint called a made-up token active: is it really the introspection endpoint of this issuer?")
	}
	return err
}

// checkDuoAuthAPI reaches Duo's Auth API with the step-up integration's
// keys (/auth/v2/check, signed), which proves the host, the TLS trust and
// the keys.
func (a *app) checkDuoAuthAPI(ctx context.Context, cfg config, r *checkReport) {
	if !cfg.stepUpOn() {
		r.warn("Duo Auth API", "STEPUP_MODE=off: sensitive calls run without Duo Push approval")
		return
	}
	// The guard's warnings (a clock that differs from Duo's, a CA file
	// trusted instead of Duo's pinned bundle) become WARN lines.
	su, err := cfg.stepUp(slog.New(&warnHandler{r: r, what: "Duo Auth API"}))
	if err != nil {
		r.fail("Duo Auth API", err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := su.Guard.Check(ctx); err != nil {
		r.fail("Duo Auth API", err.Error())
		return
	}
	r.pass("Duo Auth API", "/auth/v2/check at "+cfg.DuoHost+" accepted the integration keys")
}

// warnHandler turns log records at WARN and above into WARN lines of a
// check report, attributes included.
type warnHandler struct {
	r     *checkReport
	what  string
	attrs []slog.Attr
}

func (h *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	rec.Attrs(add)
	h.r.warn(h.what, b.String())
	return nil
}

func (h *warnHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnHandler{r: h.r, what: h.what, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *warnHandler) WithGroup(string) slog.Handler { return h }
