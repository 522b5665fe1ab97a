package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// What an auditor and an on-call engineer see of the server's decisions:
// the audit trail (AUDIT_LOG_PATH) and the metrics (METRICS_ADDR,
// metrics.go), and how replicas keep them apart.

// ObserveSettings is the part of config about the audit trail, metrics
// and replicas. It is embedded in config, so env reads its fields like the
// others.
type ObserveSettings struct {
	// ReplicaID names this replica in AUDIT_LOG_PATH's {replica}; default
	// the host name (a container's, under Docker or Kubernetes).
	ReplicaID string `env:"MCP_REPLICA_ID"`

	AuditLogPath     string `env:"AUDIT_LOG_PATH"` // "": standard output
	AuditIncludeArgs bool   `env:"AUDIT_INCLUDE_ARGS" envDefault:"false"`

	MetricsAddr string `env:"METRICS_ADDR"` // "": no metrics
}

// replicaPlaceholder in AUDIT_LOG_PATH is replaced by the replica's id, so
// that replicas sharing a volume each write, lock and chain their own file.
const replicaPlaceholder = "{replica}"

// replicaIDPattern keeps a replica id fit for a file name.
var replicaIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkObserve validates the audit, metrics and replica variables.
func (c *config) checkObserve(check func(name string, err error)) {
	c.AuditLogPath = strings.TrimSpace(c.AuditLogPath)
	c.MetricsAddr = strings.TrimSpace(c.MetricsAddr)
	c.ReplicaID = strings.TrimSpace(c.ReplicaID)
	if strings.ContainsAny(strings.ReplaceAll(c.AuditLogPath, replicaPlaceholder, ""), "{}") {
		check("AUDIT_LOG_PATH", varErrorf("AUDIT_LOG_PATH", "%q: the only placeholder is %s", truncate(c.AuditLogPath), replicaPlaceholder))
	}
	if c.ReplicaID != "" && !replicaIDPattern.MatchString(c.ReplicaID) {
		check("MCP_REPLICA_ID", varErrorf("MCP_REPLICA_ID", "%q: want up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it becomes part of a file name)", truncate(c.ReplicaID)))
	}
	if c.MetricsAddr != "" {
		if err := checkAddr("METRICS_ADDR", c.MetricsAddr); err != nil {
			check("METRICS_ADDR", err)
		} else if sameListener(c.MetricsAddr, c.ListenAddr) {
			check("METRICS_ADDR", varErrorf("METRICS_ADDR", "%q is MCP_LISTEN_ADDR: metrics have their own listener, never the one MCP clients reach", truncate(c.MetricsAddr)))
		}
	}
	if c.AuditIncludeArgs {
		c.warnings = append(c.warnings, "AUDIT_INCLUDE_ARGS=true: the audit trail holds every call's arguments, which may be personal data its readers are not entitled to see")
	}
	if c.DatabaseURL == "" {
		return
	}
	if c.AuditLogPath != "" && !strings.Contains(c.AuditLogPath, replicaPlaceholder) {
		c.warnings = append(c.warnings, "CRM_DATABASE_URL is set (several replicas?) but AUDIT_LOG_PATH has no "+replicaPlaceholder+
			": give each replica its own file, e.g. /data/audit-"+replicaPlaceholder+".log (MCP_REPLICA_ID, default the host name)")
	}
}

// checkAddr checks that the variable name holds a host:port to listen on.
func checkAddr(name, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return varErrorf(name, "%q is not host:port (e.g. 127.0.0.1:9090, or :9090 for every interface)", truncate(addr))
	}
	if port == "" || strings.Trim(port, "0123456789") != "" || len(port) > 5 {
		return varErrorf(name, "%q has no valid port number", truncate(addr))
	}
	return nil
}

// sameListener reports whether listening on a and on b would take the
// same port: the same port number, on the same host or on every interface.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || strings.TrimLeft(pa, "0") == "" || strings.TrimLeft(pa, "0") != strings.TrimLeft(pb, "0") {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return strings.EqualFold(ha, hb) || wildcard(ha) || wildcard(hb)
}

// replicaID names this replica: MCP_REPLICA_ID, else the host name with
// every character a file name should not hold replaced by '-'.
func (c config) replicaID() (string, error) {
	if c.ReplicaID != "" {
		return c.ReplicaID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read the host name (%v): set MCP_REPLICA_ID", err)
	}
	id := strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '.' || r == '_' || r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '-'
	}, host)
	id = strings.TrimLeft(id, ".-_")
	if len(id) > 64 {
		id = id[:64]
	}
	if id == "" {
		return "", fmt.Errorf("the host name %q cannot name a file: set MCP_REPLICA_ID", truncate(host))
	}
	return id, nil
}

// auditPath is AUDIT_LOG_PATH with {replica} replaced; "" for standard
// output.
func (c config) auditPath() (string, error) {
	if !strings.Contains(c.AuditLogPath, replicaPlaceholder) {
		return c.AuditLogPath, nil
	}
	id, err := c.replicaID()
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(c.AuditLogPath, replicaPlaceholder, id), nil
}

// openAudit opens the audit trail: the file at AUDIT_LOG_PATH, fsynced
// and chained across restarts, or stdout (the process's standard output)
// when it is unset. It returns where the trail goes, for the log.
func (c config) openAudit(stdout io.Writer) (*audit.Log, string, error) {
	opts := audit.Options{IncludeArgs: c.AuditIncludeArgs}
	path, err := c.auditPath()
	if err != nil {
		return nil, "", err
	}
	if path == "" {
		return audit.New(stdout, opts), "standard output", nil
	}
	l, err := audit.Open(path, opts)
	return l, path, err
}

// observeLogAttrs is the audit, metrics and replica part of the start-up
// log line.
func (c config) observeLogAttrs() []any {
	return []any{
		"MCP_REPLICA_ID", orDefault(c.ReplicaID, "the host name"),
		"AUDIT_LOG_PATH", orDefault(c.AuditLogPath, "standard output"),
		"AUDIT_INCLUDE_ARGS", c.AuditIncludeArgs,
		"METRICS_ADDR", orDefault(c.MetricsAddr, "off"),
	}
}

// trail is where the server's decisions go: the audit log first, then
// the metrics, which count what the log holds.
type trail struct {
	audit *audit.Log
	// refusals counts the front door's refusals (see refused).
	refusals *audit.Tally
	m        *metrics
	log      *slog.Logger
}

const (
	// refusalInterval is how often the front door's refusals are written,
	// counted per reason and source.
	refusalInterval = time.Minute
	// refusalSources bounds the sources one interval names; refusals from
	// more are counted under audit.OtherSource.
	refusalSources = 1000
)

// newTrail starts the trail; close writes the refusals still counted.
func newTrail(l *audit.Log, m *metrics, log *slog.Logger) *trail {
	return &trail{audit: l, refusals: audit.NewTally(l, refusalInterval, refusalSources), m: m, log: log}
}

// close writes the last interval's refusals, then closes the audit log.
func (t *trail) close() error {
	if err := t.refusals.Close(); err != nil {
		t.log.Warn("writing the last refusal counts to the audit trail", "error", err.Error())
	}
	return t.audit.Close()
}

// record is tools.Config.Record: every decision on a tool call, as a
// typed event. The audit line and the metrics read its codes, never a
// message. Its error (the line is not on record) fails the call closed.
func (t *trail) record(ctx context.Context, e govern.Event) error {
	err := t.audit.Record(ctx, e.AuditEvent())
	t.m.observe(e, err)
	return err
}

// refused is resourceserver.Config.OnRefuse: a request the front door or
// the scope gate refused.
//
// A refusal of the front door (no token, a bad token, a bad Origin, a
// malformed request: auth.failed) concerns a caller the server does not
// know and decides nothing about anyone, so it is counted, not written:
// one line per reason and source per minute (audit.Tally), whose source
// is the client's IP address as the connection shows it (RemoteAddr;
// never X-Forwarded-For, which the client writes itself; behind a proxy
// it is the proxy's). Not the token's fingerprint: a flood of invented
// tokens would make each its own key. So an anonymous flood costs a map
// increment per request, not a line and an fsync under the lock every
// decision waits on, and grows the trail by a bounded number of lines.
//
// A valid token that lacks a tool's scopes (403 insufficient_scope:
// scope.denied) is a decision about a known caller: it stays a line of
// its own, synced, naming the token. The refusal stands whether or not
// its line is written, so a failure is only logged (and counted).
func (t *trail) refused(ctx context.Context, rf resourceserver.Refusal) {
	if rf.Reason != "insufficient_scope" {
		t.refusals.Add(cmp.Or(rf.Reason, "internal"), sourceOf(ctx))
		t.m.refused(rf, nil)
		return
	}
	// The gate knows the request id and the tool it refused.
	id, tool := newRequestID(), ""
	if r := govern.RequestFrom(ctx); r != nil {
		id, tool = r.ID, r.Tool
	}
	e := refusalEvent(rf, id)
	e.Tool = tool
	err := t.audit.Record(ctx, e)
	t.m.refused(rf, err)
	if err != nil {
		t.log.ErrorContext(ctx, "the audit trail refused the line of a refused request", "event", string(e.Kind), "request_id", e.RequestID, "error", err.Error())
		return
	}
	t.log.DebugContext(ctx, "refusal on record", "event", string(e.Kind), "request_id", e.RequestID, "reason", rf.Reason)
}

// refusalEvent is the audit line of an HTTP refusal: scope.denied for a
// valid token that lacks a tool's scopes (403 insufficient_scope, with the
// scopes challenged), auth.failed for everything else (401 bad or no token,
// 400 malformed request, 403 origin, 503 keys unavailable), with Refusal's
// short reason code. The token appears only by its fingerprint.
func refusalEvent(rf resourceserver.Refusal, requestID string) audit.Event {
	e := audit.Event{Kind: audit.AuthFailed, RequestID: requestID, TokenFingerprint: rf.Fingerprint, Reason: rf.Reason}
	if tok := rf.Token; tok != nil {
		e.Issuer, e.Subject, e.ClientID, e.JTI = tok.Issuer, tok.Subject, tok.ClientID, tok.JTI
	}
	if rf.Reason == "insufficient_scope" {
		e.Kind = audit.ScopeDenied
		e.Reason = "insufficient_scope; challenged: " + strings.Join(rf.Scopes, " ")
	}
	if e.Reason == "" {
		e.Reason = fmt.Sprintf("refused with HTTP %d", rf.Status) // the log requires a reason
	}
	return e
}

// newRequestID names a refused request the governor's gate never saw
// (the front door refused it first).
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// peerKey holds the remote address of a request's connection.
type peerKey struct{}

// withPeer is http.Server.ConnContext: it keeps the connection's remote
// address, from which sourceOf names a refused request's source.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, c.RemoteAddr())
}

// sourceOf is the client's IP address, as the connection shows it, or
// "unknown".
func sourceOf(ctx context.Context) string {
	addr, _ := ctx.Value(peerKey{}).(net.Addr)
	if addr == nil {
		return "unknown"
	}
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return "unknown"
}
