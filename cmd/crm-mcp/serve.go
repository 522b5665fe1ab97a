package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/gateway"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
	"github.com/crm-mcp/crm-mcp/tools"
)

const (
	// startupRefreshTimeout bounds the first discovery and JWKS fetch.
	startupRefreshTimeout = 10 * time.Second
	// openTimeout bounds opening, migrating and seeding the database.
	openTimeout = 30 * time.Second
	// shutdownTimeout is how long in-flight requests (a tool call may be
	// waiting on a Duo Push) get to finish after a signal.
	shutdownTimeout = 30 * time.Second
	// readyPingTimeout bounds the database check of /readyz.
	readyPingTimeout = 2 * time.Second
)

// serve runs the server until ctx is cancelled (SIGINT, SIGTERM), then
// shuts down gracefully. It returns 0 after a clean shutdown.
func (a *app) serve(ctx context.Context) int {
	cfg, err := loadConfig(a.environ)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp serve: invalid configuration:\n%s", formatConfigErrors(err))
		return 1
	}
	return a.serveConfig(ctx, cfg, serveOptions{})
}

// serveOptions is what dev adds to serve; the zero value is serve itself.
type serveOptions struct {
	// command names the command in messages; "" means "serve".
	command string
	// listener, when set, is served instead of listening on
	// cfg.ListenAddr (dev listens first, to learn its port and derive
	// every URL from it). serveConfig closes it.
	listener net.Listener
	// routes, when set, adds routes to the server's mux, and the server
	// then starts serving them at once, before the authorization server's
	// keys are first fetched: dev's authorization server answers on this
	// same listener, so that fetch would otherwise wait for a server that
	// does not serve yet. The MCP endpoint and serve's own routes join once
	// they are built; until then they answer 404.
	routes func(mux *http.ServeMux)
	// ready, when set, is called with the listening address once the MCP
	// endpoint is served, before the listening hook.
	ready func(addr string)
	// guard, when set, hears the step-up Guard the server uses (nil when
	// step-up is off), once it is built: dev's push page shows where each
	// user stands against its push cap and cooldown.
	guard func(*stepup.Guard)
	// endpoint, when set, builds the MCP endpoint in place of the CRM's
	// tools (the gateway), with the same front door, step-up, audit trail
	// and metrics. No CRM database is opened then; ready answers /readyz
	// in its place.
	endpoint func(ctx context.Context, d endpointDeps) (e endpoint, ready pinger, err error)
	// toolNames are the endpoint's tools beyond the CRM's, for metrics.
	toolNames []string
}

// endpoint is what serve mounts at the resource path: tools.Handler, or
// the gateway.
type endpoint interface {
	http.Handler
	Requests() int
	StepUpWaiting() int
	Shutdown(ctx context.Context) error
}

// endpointDeps is what serve has built that an endpoint uses.
type endpointDeps struct {
	cfg     config
	rs      *resourceserver.Server
	stepUp  *tools.StepUp // nil when STEPUP_MODE=off
	record  func(context.Context, govern.Event) error
	onLimit func(limit string)
	log     *slog.Logger
}

// serveConfig is serve with a loaded configuration.
func (a *app) serveConfig(ctx context.Context, cfg config, opts serveOptions) int {
	command := cmp.Or(opts.command, "serve")
	log := cfg.newLogger(a.stderr)
	log.Info("starting crm-mcp", append([]any{"version", versionString()}, cfg.logAttrs()...)...)
	cfg.logWarnings(log)

	// Built first: it needs no network, and a bad key or CA file should
	// fail before anything is listened on or created.
	stepUpLog := log
	if cfg.DatabaseURL != "" {
		stepUpLog = slog.New(slog.DiscardHandler) // built again below, with the shared state
	}
	stepUp, err := cfg.stepUp(stepUpLog)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp %s: invalid configuration:\n%s", command, formatConfigErrors(err))
		return 1
	}

	// Listen before anything slow, so that an address in use fails at once.
	ln := opts.listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			log.Error("cannot listen: is another process using the address? (MCP_LISTEN_ADDR)", "addr", cfg.ListenAddr, "error", err.Error())
			return 1
		}
	}
	defer ln.Close() // for the early returns; Shutdown closes it otherwise
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			log.Error("cannot listen for metrics: is another process using the address? (METRICS_ADDR)", "addr", cfg.MetricsAddr, "error", err.Error())
			return 1
		}
		defer metricsLn.Close()
	}

	// The audit trail before anything that decides: no decision may go
	// unrecorded. Closed last, once every call has finished.
	auditLog, auditDest, err := cfg.openAudit(a.stdout)
	if err != nil {
		log.Error("cannot open the audit trail (AUDIT_LOG_PATH): the server does not run without it", "error", err.Error())
		return 1
	}
	m := newMetrics()
	m.tools = append(m.tools, opts.toolNames...)
	tr := newTrail(auditLog, m, log)
	defer func() {
		if err := tr.close(); err != nil {
			log.Warn("closing the audit trail", "error", err.Error())
		} else {
			log.Info("closed the audit trail")
		}
	}()
	log.Info("audit trail", "to", auditDest, "include_args", cfg.AuditIncludeArgs)
	if cfg.AuditLogPath == "" {
		log.Info("the audit trail goes to standard output, unsynced, and restarts its chain at each start; set AUDIT_LOG_PATH for a file that is synced and continues its chain")
	}

	mux := http.NewServeMux()
	srv := newHTTPServer(mux, log)
	srv.ConnContext = withPeer // the source of a refused request (trail.refused)
	maxConns := cfg.connectionLimit()
	conns := newConnLimiter(maxConns, cfg.connectionLimitPerIP(maxConns), m.connClosed)
	ln = conns.Listener(ln)
	srv.ConnState = conns.ConnState
	log.Info("connections to the MCP listener are bounded", "max", conns.max, "max_per_ip", conns.maxPerSource)
	served := make(chan error, 1)
	drained := false // set once the graceful shutdown at the end has run
	if opts.routes != nil {
		opts.routes(mux)
		go func() { served <- srv.Serve(ln) }()
		defer func() {
			if !drained { // an early return: stop serving the extra routes
				srv.Close()
				<-served
			}
		}()
	}

	openCtx, cancel := context.WithTimeout(ctx, openTimeout)
	var store *crm.Store
	if opts.endpoint == nil {
		store, err = cfg.openStore(openCtx)
	}
	var state *pgstate.State
	if err == nil {
		state, err = cfg.openStepUpState(openCtx)
		if err != nil && store != nil {
			store.Close()
		}
	}
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			log.Info("interrupted during start-up")
			return 0
		}
		log.Error("cannot open the CRM database ("+cfg.databaseVar()+")", append(cfg.databaseLogAttrs(), "error", err.Error())...)
		return 1
	}
	// The insufficient_scope challenges, for the explained refusal: in
	// Postgres when replicas share it, so that a client that signs in again
	// and lands on another replica still gets it; nil, the Governor keeps
	// its own in memory.
	var refusals govern.RefusalMemory
	if state != nil {
		refusals = state.Refusals(0, 0)
		defer state.Close()
		// The Guard built above checked the configuration; this one keeps
		// its state in Postgres, shared with the other replicas.
		cfg.stepUpState = state
		if stepUp, err = cfg.stepUp(log); err != nil {
			fmt.Fprintf(a.stderr, "crm-mcp %s: invalid configuration:\n%s", command, formatConfigErrors(err))
			return 1
		}
	}
	defer func() {
		if store == nil {
			return
		}
		if err := store.Close(); err != nil {
			log.Warn("closing the CRM database", "error", err.Error())
		} else {
			log.Info("closed the CRM database")
		}
	}()

	rsCfg := cfg.resourceServerConfig(log)
	rsCfg.OnRefuse = tr.refused
	rsCfg.OnIntrospect = m.introspected
	rs, err := resourceserver.New(rsCfg)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp %s: invalid configuration:\n%s", command, formatConfigErrors(nameFields(err)))
		return 1
	}
	defer func() {
		rs.Close()
		log.Info("stopped the authorization server key refresh")
	}()
	refreshCtx, cancel := context.WithTimeout(ctx, startupRefreshTimeout)
	err = rs.Refresh(refreshCtx)
	cancel()
	if ctx.Err() != nil {
		log.Info("interrupted during start-up")
		return 0
	}
	if err != nil {
		// Not fatal: the keys keep being fetched in the background, and
		// until they are, tokens are refused and /readyz says 503. A
		// replica that cannot reach Duo for a moment should still start.
		log.Warn("AUTHORIZATION SERVER NOT REACHABLE AT START: every token is refused and /readyz answers 503 until its keys are fetched; check DUO_ISSUER and the network",
			"error", err.Error())
	} else {
		log.Info("fetched the authorization server keys", "issuers", rs.Status())
	}

	if opts.guard != nil {
		if stepUp != nil {
			opts.guard(stepUp.Guard)
		} else {
			opts.guard(nil)
		}
	}
	if stepUp == nil {
		log.Warn("STEP-UP IS OFF (STEPUP_MODE=off): sensitive tool calls and restricted records need NO Duo Push approval")
	}

	var mcpHandler endpoint
	var ready pinger = store
	if opts.endpoint != nil {
		mcpHandler, ready, err = opts.endpoint(ctx, endpointDeps{cfg: cfg, rs: rs, stepUp: stepUp, record: tr.record, onLimit: m.limited, log: log})
		if err != nil {
			if ctx.Err() != nil {
				log.Info("interrupted during start-up")
				return 0
			}
			log.Error("cannot build the MCP endpoint", "error", err.Error())
			return 1
		}
	} else if mcpHandler, err = toolsHandler(cfg, rs, stepUp, tr, m, store, refusals, log); err != nil {
		log.Error("cannot build the MCP handler", "error", err.Error())
		return 1
	}

	m.watch(rs.Status)
	m.watchLimits(conns.Open, mcpHandler.Requests, mcpHandler.StepUpWaiting)
	addRoutes(mux, cfg, rs, ready, m.countRequests(mcpHandler), log)
	if opts.routes == nil {
		go func() { served <- srv.Serve(ln) }()
	}
	var metricsSrv *http.Server
	metricsServed := make(chan error, 1)
	if metricsLn != nil {
		metricsSrv = m.server(log)
		go func() { metricsServed <- metricsSrv.Serve(metricsLn) }()
		log.Info("serving metrics", "addr", metricsLn.Addr().String(), "path", "/metrics")
		if a.metricsListening != nil {
			a.metricsListening(metricsLn.Addr().String())
		}
	}
	log.Info("listening", "addr", ln.Addr().String(), "mcp_path", cfg.mcpPath, "metadata_paths", rs.MetadataPaths(), "resource_metadata", rs.ResourceMetadataURL())
	if opts.ready != nil {
		opts.ready(ln.Addr().String())
	}
	if a.listening != nil {
		a.listening(ln.Addr().String())
	}

	code := 0
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new connections; in-flight requests get time to finish", "timeout", shutdownTimeout.String())
	case err := <-served:
		// Serve returns only on a listener failure here.
		log.Error("server stopped unexpectedly", "error", err.Error())
		code = 1
	case err := <-metricsServed:
		log.Error("metrics server stopped unexpectedly", "error", err.Error())
		code = 1
	}

	// A fresh context: ctx is already cancelled, and the drain needs its
	// own deadline. Both shutdowns run at once: the server's stops
	// accepting and waits for every active request; the MCP handler's waits
	// for the tool calls in flight, then closes the MCP sessions, which ends
	// their long-lived SSE streams (the server's would otherwise wait on
	// them until its deadline).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var mcpErr error
	var wg sync.WaitGroup
	wg.Go(func() { mcpErr = mcpHandler.Shutdown(shutdownCtx) })
	err = srv.Shutdown(shutdownCtx)
	wg.Wait()
	if mcpErr != nil {
		log.Warn("tool calls still running at the deadline; closed their MCP sessions", "error", mcpErr.Error())
	} else {
		log.Info("tool calls finished; closed the MCP sessions")
	}
	if err != nil {
		log.Warn("requests still running at the deadline; closing their connections", "error", err.Error())
		srv.Close()
	} else {
		log.Info("all requests finished; HTTP server stopped")
	}
	if code == 0 {
		<-served // http.ErrServerClosed
	}
	drained = true
	if metricsSrv != nil {
		// Scrapes are short; the deadline is the one the drain used.
		if err := metricsSrv.Shutdown(shutdownCtx); err != nil {
			metricsSrv.Close()
		}
		log.Info("metrics server stopped")
	}
	// Deferred: stop the key refresh, close the database, then the audit
	// trail, which the last calls wrote to.
	return code
}

// toolsHandler is the CRM's MCP endpoint.
func toolsHandler(cfg config, rs *resourceserver.Server, stepUp *tools.StepUp, tr *trail, m *metrics, store *crm.Store, refusals govern.RefusalMemory, log *slog.Logger) (*tools.Handler, error) {
	mcpCfg := tools.Config{
		StepUp:                stepUp,
		Store:                 store,
		Auth:                  rs,
		HideUnauthorizedTools: cfg.HideUnauthorizedTools,
		Refusals:              refusals,
		Logger:                log,
		Version:               versionString(),
		Record:                tr.record,
		OnLimit:               m.limited,
	}
	cfg.applyLimits(&mcpCfg)
	return tools.NewHandler(mcpCfg)
}

func (c config) logWarnings(log *slog.Logger) {
	for _, w := range c.warnings {
		log.Warn(w)
	}
	if len(c.unknown) > 0 {
		log.Warn("ignoring environment variables this version does not read: a typo?", "variables", c.unknown)
	}
}

// addRoutes routes the server's few paths on its private mux (never
// http.DefaultServeMux, which any imported package may add to).
func addRoutes(mux *http.ServeMux, cfg config, rs *resourceserver.Server, store pinger, mcpHandler http.Handler, log *slog.Logger) {
	for _, p := range rs.MetadataPaths() {
		mux.Handle(p, rs.MetadataHandler())
	}
	// Exactly the resource's path: "/mcp" matches only /mcp, and a path
	// ending in "/" would otherwise match everything below it.
	pattern := cfg.mcpPath
	if strings.HasSuffix(pattern, "/") {
		pattern += "{$}"
	}
	mux.Handle(pattern, mcpHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /readyz", readyHandler(store, rs, log))
}

type pinger interface {
	Ping(ctx context.Context) error
}

type readiness interface {
	Ready() error
	Status() []resourceserver.IssuerStatus
}

// readyReport is the body of /readyz. It is unauthenticated, so it holds
// nothing secret: the issuers are public (they are in the metadata) and a
// database failure is only named; its detail goes to the log.
type readyReport struct {
	Ready   bool                          `json:"ready"`
	DB      string                        `json:"db,omitempty"`
	Auth    string                        `json:"auth"`
	Issuers []resourceserver.IssuerStatus `json:"issuers"`
	// Upstreams, for the gateway: which can be reached. One that cannot
	// leaves the gateway ready, since the others serve; its calls get a
	// tool error naming it.
	Upstreams []gateway.UpstreamStatus `json:"upstreams,omitempty"`
}

// upstreams is the gateway's part of /readyz.
type upstreams interface {
	Upstreams() []gateway.UpstreamStatus
}

// readyHandler answers 200 when the database answers and every issuer's
// keys are usable, 503 otherwise.
func readyHandler(store pinger, rs readiness, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := readyReport{Ready: true, DB: "ok", Auth: "ok", Issuers: rs.Status()}
		ctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
		defer cancel()
		if up, ok := store.(upstreams); ok {
			rep.DB, rep.Upstreams = "", up.Upstreams()
		} else if err := store.Ping(ctx); err != nil {
			rep.Ready, rep.DB = false, "unavailable"
			log.Warn("readiness: the CRM database does not answer", "error", err.Error())
		}
		if err := rs.Ready(); err != nil {
			// Debug only: the key refresh already warns about each failed
			// fetch, and probes come every few seconds.
			rep.Ready, rep.Auth = false, "no usable keys"
			log.Debug("readiness: tokens cannot be verified", "error", err.Error())
		}
		if rep.Issuers == nil {
			rep.Issuers = []resourceserver.IssuerStatus{}
		}
		status := http.StatusOK
		if !rep.Ready {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(rep)
	})
}

// newHTTPServer configures the HTTP server's limits.
//
// MCP keeps responses open for a long time: a POST answering a tool call
// can wait a minute or more on a Duo Push (there is no GET stream, and
// subscriptions/listen ends at once: tools/streams.go). So there is no
// WriteTimeout: its deadline is set when a request starts and never
// lifted, and it would cut both mid-stream. ReadTimeout is safe: it bounds
// reading the headers and the body only, because net/http lifts the read
// deadline once the body has been read (to watch for the client hanging
// up), so the handler may then run as long as it needs. TestHTTPServerTimeouts
// holds net/http to that.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// Headers must arrive promptly (slowloris).
		ReadHeaderTimeout: 10 * time.Second,
		// And the body soon after: MCP requests are small JSON documents.
		// Without this a client dribbling a body a byte at a time holds a
		// connection and a goroutine for ever.
		ReadTimeout: 30 * time.Second,
		// Keep-alive connections between requests. Each holds a descriptor
		// and a goroutine, and idle ones are the first to go when the
		// connections reach MCP_MAX_CONNECTIONS (connlimit.go).
		IdleTimeout: 2 * time.Minute,
		// Access tokens are a few KB; 64 KiB leaves room without letting a
		// client park a megabyte of headers per connection.
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
