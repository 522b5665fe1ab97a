package main

import (
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/tools"
)

// The Prometheus metrics, served on their own listener (METRICS_ADDR),
// never on the MCP one: they describe the server's traffic to whoever can
// scrape them, which should be the monitoring network only.
//
// Every label takes its values from a fixed list, so that no client can
// grow the number of series: a value outside it is counted as "other"
// (or "unknown" for a tool name). No label holds a user, a client or a
// token.

// Label values.
var (
	// authReasons are resourceserver.Refusal's reason codes.
	authReasons = []string{"no_token", "invalid_request", "malformed", "signature", "issuer", "expired", "not_yet_valid",
		"audience", "claims", "inactive", "invalid_token", "unavailable", "origin", "insufficient_scope", "internal"}
	// toolOutcomes: the tool ran and succeeded or failed, or it was
	// refused before it ran (scope, step-up denied or failed).
	toolOutcomes = []string{"ok", "error", "refused"}
	// stepUpOutcomes: how a call needing approval was decided. approved
	// (a push), grant (an earlier approval covered it), bypass (Duo's
	// policy let the user through), off (STEPUP_MODE=off); then the
	// reasons of stepup.denied and stepup.failed.
	stepUpOutcomes = []string{"approved", "grant", "bypass", "off", "denied", "fraud", "timeout", "cooldown", "cap",
		"busy", "duo_error", "locked_out", "enroll", "preauth_denied", "cancelled", "unshowable", "no_duo_user", "error"}
	// suppressedReasons: the fatigue guard refused to push.
	suppressedReasons = []string{"cooldown", "cap"}
)

// maxWaiting bounds the step-up requests whose outcome is awaited for the
// wait histogram; beyond it a request is not timed (a leak would otherwise
// be possible if an outcome were never recorded).
const maxWaiting = 10000

// metrics are the server's series, in a registry of their own (never
// prometheus.DefaultRegisterer, which any imported package may add to).
type metrics struct {
	reg *prometheus.Registry
	// tools are the tool names a label may hold (toolLabel): the CRM's,
	// or the gateway's policy's too.
	tools []string

	httpRequests     *prometheus.CounterVec
	authFailures     *prometheus.CounterVec
	toolCalls        *prometheus.CounterVec
	stepUpDecisions  *prometheus.CounterVec
	stepUpSuppressed *prometheus.CounterVec
	stepUpWait       *prometheus.HistogramVec
	introspection    *prometheus.HistogramVec
	auditFailures    prometheus.Counter
	limitRefusals    *prometheus.CounterVec
	connsClosed      *prometheus.CounterVec

	now     func() time.Time
	mu      sync.Mutex
	waiting map[string]time.Time // request id of a stepup.requested line -> when
}

func newMetrics() *metrics {
	m := &metrics{
		reg:   prometheus.NewRegistry(),
		tools: tools.Names(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_http_requests_total",
			Help: "Requests to the MCP endpoint, by HTTP status, counted when they end (an SSE stream when it closes).",
		}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_auth_failures_total",
			Help: "Requests refused by the front door or the scope check, by reason (resourceserver.Refusal's codes).",
		}, []string{"reason"}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_tool_calls_total",
			Help: "Tool calls by tool and outcome: ok or error once run, refused when a scope or step-up stopped it first.",
		}, []string{"tool", "outcome"}),
		stepUpDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_stepup_decisions_total",
			Help: "Step-up decisions on calls that needed approval, by outcome.",
		}, []string{"outcome"}),
		stepUpSuppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_stepup_suppressed_pushes_total",
			Help: "Pushes the fatigue guard did not send: the user's deny cool-down, or the push cap.",
		}, []string{"reason"}),
		stepUpWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "crm_mcp_stepup_wait_seconds",
			Help:    "Time from a step-up request to its decision, per call, by how it ended (approved, denied, failed).",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300},
		}, []string{"outcome"}),
		introspection: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "crm_mcp_introspection_duration_seconds",
			Help:    "Latency of token introspection calls to the authorization server, by result (ok: an answer, active or not).",
			Buckets: prometheus.DefBuckets,
		}, []string{"result"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crm_mcp_audit_write_failures_total",
			Help: "Audit lines that could not be written; after one, every tool call fails closed until the server restarts.",
		}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_limit_refusals_total",
			Help: "Requests (429) and tool calls (a tool error) refused by a bound on what is in progress, by bound: requests_per_user, requests, stepup_waiting_per_user, stepup_waiting.",
		}, []string{"limit"}),
		connsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crm_mcp_connections_closed_by_limit_total",
			Help: "MCP listener connections closed at MCP_MAX_CONNECTIONS or MCP_MAX_CONNECTIONS_PER_IP: evicted (the longest idle one, to make room) or refused (the new one, when none was idle).",
		}, []string{"action"}),
		now:     time.Now,
		waiting: map[string]time.Time{},
	}
	m.reg.MustRegister(m.httpRequests, m.authFailures, m.toolCalls, m.stepUpDecisions, m.stepUpSuppressed,
		m.stepUpWait, m.introspection, m.auditFailures, m.limitRefusals, m.connsClosed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every series exists from the start at 0, so that a rate or an alert
	// on it has data before the first event.
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, name := range tools.Names() {
		for _, o := range toolOutcomes {
			m.toolCalls.WithLabelValues(name, o)
		}
	}
	for _, o := range stepUpOutcomes {
		m.stepUpDecisions.WithLabelValues(o)
	}
	for _, r := range suppressedReasons {
		m.stepUpSuppressed.WithLabelValues(r)
	}
	for _, o := range []string{"approved", "denied", "failed"} {
		m.stepUpWait.WithLabelValues(o)
	}
	for _, r := range []string{"ok", "error"} {
		m.introspection.WithLabelValues(r)
	}
	for _, l := range limitNames {
		m.limitRefusals.WithLabelValues(l)
	}
	for _, a := range []string{"evicted", "refused"} {
		m.connsClosed.WithLabelValues(a)
	}
	return m
}

// limitNames are tools' Limit* bounds, the values of the limit label.
var limitNames = []string{tools.LimitRequestsPerUser, tools.LimitRequests, tools.LimitStepUpWaitingPerUser, tools.LimitStepUpWaiting}

// limited is tools.Config.OnLimit.
func (m *metrics) limited(limit string) {
	m.limitRefusals.WithLabelValues(bounded(limit, limitNames)).Inc()
}

// connClosed is connLimiter's onRefuse.
func (m *metrics) connClosed(action string) {
	m.connsClosed.WithLabelValues(action).Inc()
}

// watchLimits adds the gauges of what is held open, read at each scrape.
func (m *metrics) watchLimits(conns, requests, stepUpWaiting func() int) {
	gauge := func(name, help string, f func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	m.reg.MustRegister(
		gauge("crm_mcp_connections_open", "Open connections to the MCP listener (bounded by MCP_MAX_CONNECTIONS).", conns),
		gauge("crm_mcp_requests_in_flight", "POSTs to the MCP endpoint in progress (bounded by MCP_MAX_REQUESTS).", requests),
		gauge("crm_mcp_stepup_waiting_calls", "Tool calls waiting on a Duo Push (bounded by STEPUP_MAX_WAITING).", stepUpWaiting),
	)
}

// bounded is v if it is one of the values, else "other".
func bounded(v string, values []string) string {
	if slices.Contains(values, v) {
		return v
	}
	return "other"
}

// toolLabel is a tool name fit for a label: one of m.tools.
func (m *metrics) toolLabel(name string) string {
	if slices.Contains(m.tools, name) {
		return name
	}
	return "unknown"
}

// observe counts one decision of a governed call by its codes (kind and
// outcome), never its text; err is whether its audit line was written. A
// decision that is not on record was not acted on (the call failed
// closed), so only the failure is counted then.
func (m *metrics) observe(e govern.Event, err error) {
	if err != nil {
		m.auditFailures.Inc()
	}
	waited, timed := m.waited(e, err == nil)
	if err != nil {
		return
	}
	tool := m.toolLabel(e.Tool)
	switch e.Kind {
	case audit.ScopeDenied: // the in-MCP check, behind the HTTP gate
		m.authFailures.WithLabelValues("insufficient_scope").Inc()
		m.toolCalls.WithLabelValues(tool, "refused").Inc()
	case audit.StepUpApproved:
		m.stepUpDecisions.WithLabelValues(approvedOutcome(e)).Inc()
		if timed {
			m.stepUpWait.WithLabelValues("approved").Observe(waited.Seconds())
		}
	case audit.StepUpDenied:
		m.stepUpDecisions.WithLabelValues(bounded(string(e.Outcome), stepUpOutcomes)).Inc()
		m.toolCalls.WithLabelValues(tool, "refused").Inc()
		if timed {
			m.stepUpWait.WithLabelValues("denied").Observe(waited.Seconds())
		}
	case audit.StepUpFailed:
		reason := bounded(string(e.Outcome), stepUpOutcomes)
		m.stepUpDecisions.WithLabelValues(reason).Inc()
		if slices.Contains(suppressedReasons, reason) {
			m.stepUpSuppressed.WithLabelValues(reason).Inc()
		}
		m.toolCalls.WithLabelValues(tool, "refused").Inc()
		if timed {
			m.stepUpWait.WithLabelValues("failed").Observe(waited.Seconds())
		}
	case audit.ToolCalled:
		switch e.Outcome {
		case govern.OK:
			m.toolCalls.WithLabelValues(tool, "ok").Inc()
		case govern.Error:
			m.toolCalls.WithLabelValues(tool, "error").Inc()
		} // not a write's "started" line, nor an invalid call
	}
}

// waited notes when a step-up request was put on record (written), and at
// its outcome returns how long the call waited. Calls are told apart by
// their request id, which the governor gives every line of one call.
func (m *metrics) waited(e govern.Event, written bool) (time.Duration, bool) {
	if e.RequestID == "" {
		return 0, false
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.Kind {
	case audit.StepUpRequested:
		if written && len(m.waiting) < maxWaiting {
			m.waiting[e.RequestID] = now
		}
	case audit.StepUpApproved, audit.StepUpDenied, audit.StepUpFailed:
		if at, ok := m.waiting[e.RequestID]; ok {
			delete(m.waiting, e.RequestID)
			return now.Sub(at), true
		}
	}
	return 0, false
}

// approvedOutcome is the label of an approval: approved (a push), grant,
// bypass (how, stepup.Approval.By), or off.
func approvedOutcome(e govern.Event) string {
	if e.Outcome == govern.StepUpOff {
		return "off"
	}
	switch e.Via {
	case "push":
		return "approved"
	case "grant", "bypass":
		return e.Via
	}
	return "other"
}

// refused counts a request the front door refused; err is whether its
// audit line was written (the refusal stands either way).
func (m *metrics) refused(rf resourceserver.Refusal, err error) {
	if err != nil {
		m.auditFailures.Inc()
	}
	m.authFailures.WithLabelValues(bounded(rf.Reason, authReasons)).Inc()
}

// introspected is resourceserver.Config.OnIntrospect.
func (m *metrics) introspected(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.introspection.WithLabelValues(result).Observe(took.Seconds())
}

// countRequests counts the requests h answers, by status.
func (m *metrics) countRequests(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.httpRequests, h)
}

// watch adds the series read at each scrape: the issuers' key state.
func (m *metrics) watch(status func() []resourceserver.IssuerStatus) {
	m.reg.MustRegister(&keysCollector{status: status, now: m.now})
}

// keysCollector reports each issuer's JWKS from resourceserver's Status
// at scrape time. The issuer label holds configured issuer URLs only.
type keysCollector struct {
	status func() []resourceserver.IssuerStatus
	now    func() time.Time
}

var (
	keysAgeDesc = prometheus.NewDesc("crm_mcp_jwks_age_seconds",
		"Time since the issuer's keys were last fetched successfully (absent until the first success).", []string{"issuer"}, nil)
	keysFailuresDesc = prometheus.NewDesc("crm_mcp_jwks_refresh_failures_total",
		"Failed fetches of the issuer's keys since start.", []string{"issuer"}, nil)
	keysUsableDesc = prometheus.NewDesc("crm_mcp_jwks_usable",
		"1 while the issuer's keys may be used; 0 when never fetched or older than the maximum age (its tokens are refused).", []string{"issuer"}, nil)
)

func (k *keysCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysAgeDesc
	ch <- keysFailuresDesc
	ch <- keysUsableDesc
}

func (k *keysCollector) Collect(ch chan<- prometheus.Metric) {
	now := k.now()
	for _, st := range k.status() {
		if !st.FetchedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(keysAgeDesc, prometheus.GaugeValue, now.Sub(st.FetchedAt).Seconds(), st.Issuer)
		}
		ch <- prometheus.MustNewConstMetric(keysFailuresDesc, prometheus.CounterValue, float64(st.Failures), st.Issuer)
		usable := 0.0
		if st.Usable {
			usable = 1
		}
		ch <- prometheus.MustNewConstMetric(keysUsableDesc, prometheus.GaugeValue, usable, st.Issuer)
	}
}

// metricsServer serves GET /metrics and nothing else.
func (m *metrics) server(log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Registry: m.reg, // promhttp_metric_handler_errors_total
	}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
