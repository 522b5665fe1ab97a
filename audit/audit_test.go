package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl-NOT-IN-THE-LOG"

// testFP is testToken's fingerprint as resourceserver.Fingerprint makes
// it; the log never holds more of the token.
const testFP = "sha256:78e1d89be06a1eda"

var t0 = time.Date(2026, 12, 1, 9, 30, 0, 123456789, time.UTC)

// session is one event of each kind, as a call through the front door,
// the scope check and step-up produces them.
func session() []audit.Event {
	who := func(e audit.Event) audit.Event {
		e.Issuer = "https://sso-test.sso.duosecurity.com/oauth2/DITEST"
		e.Subject = "alice"
		e.ClientID = "client-1"
		e.JTI = "jti-1"
		e.TokenFingerprint = testFP
		return e
	}
	args := json.RawMessage(`{"query":"defence", "limit":5}`)
	return []audit.Event{
		{Time: t0, Kind: audit.AuthFailed, RequestID: "r1", Reason: "token expired"},
		who(audit.Event{Time: t0.Add(1 * time.Second), Kind: audit.ScopeDenied, RequestID: "r2", Tool: "list_deals", Reason: "missing crm.deals.read"}),
		who(audit.Event{Time: t0.Add(2 * time.Second), Kind: audit.StepUpRequested, RequestID: "r3", Tool: "list_contacts", Args: args, Reason: `query mentions "defence"`, DuoTxID: "tx-1"}),
		who(audit.Event{Time: t0.Add(3 * time.Second), Kind: audit.StepUpApproved, RequestID: "r3", Tool: "list_contacts", Args: args, DuoTxID: "tx-1"}),
		who(audit.Event{Time: t0.Add(4 * time.Second), Kind: audit.ToolCalled, RequestID: "r3", Tool: "list_contacts", Args: args, Outcome: "ok", Duration: 1500 * time.Microsecond}),
		who(audit.Event{Time: t0.Add(5 * time.Second), Kind: audit.StepUpDenied, RequestID: "r4", Tool: "get_contact", Args: json.RawMessage(`{"id":6}`), DuoTxID: "tx-2", Reason: "deny"}),
		who(audit.Event{Time: t0.Add(6 * time.Second), Kind: audit.StepUpFailed, RequestID: "r5", Tool: "get_contact", Args: json.RawMessage(`{"id":6}`), Reason: "cooldown"}),
		who(audit.Event{Time: t0.Add(7 * time.Second), Kind: audit.StepUpFailed, RequestID: "r6", Tool: "get_contact", Args: json.RawMessage(`{"id":7}`), DuoTxID: "tx-3", Reason: "timeout"}),
		who(audit.Event{Time: t0.Add(8 * time.Second), Kind: audit.ToolCalled, RequestID: "r7", Tool: "create_contact", Args: json.RawMessage(`{"name":"Dana <d@x>"}`), Outcome: "error", Duration: 2 * time.Millisecond}),
	}
}

// writeLog records events into a new log file and returns its path.
func writeLog(t *testing.T, opts audit.Options, events []audit.Event) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, opts)
	require.NoError(t, err)
	for _, e := range events {
		require.NoError(t, l.Record(context.Background(), e))
	}
	require.NoError(t, l.Close())
	return path
}

func verifyFile(t *testing.T, path string) (audit.Summary, error) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	return audit.Verify(f)
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	ls := strings.SplitAfter(string(b), "\n")
	if ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestLineFormat pins the wire format: a golden file, re-encoded by
// nothing, so that any change to a line's bytes is deliberate.
func TestLineFormat(t *testing.T) {
	var buf bytes.Buffer
	l := audit.New(&buf, audit.Options{IncludeArgs: true})
	for _, e := range session() {
		require.NoError(t, l.Record(context.Background(), e))
	}
	golden := filepath.Join("testdata", "session.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, buf.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), buf.String())
	s, err := audit.Verify(bytes.NewReader(want))
	require.NoError(t, err)
	assert.Equal(t, len(session()), s.Records)
}

// TestChainVerifies checks the chain by its definition, independently of
// Verify: seq counts from 1, prev is the SHA-256 of the previous line's
// bytes without "\n", 64 zeros for the first.
func TestChainVerifies(t *testing.T) {
	path := writeLog(t, audit.Options{}, session())
	ls := lines(t, path)
	require.Len(t, ls, len(session()))
	prev := strings.Repeat("0", 64)
	for i, ln := range ls {
		require.True(t, strings.HasSuffix(ln, "\n"))
		var h struct {
			Seq  uint64 `json:"seq"`
			Prev string `json:"prev"`
		}
		require.NoError(t, json.Unmarshal([]byte(ln), &h))
		assert.Equal(t, uint64(i+1), h.Seq)
		assert.Equal(t, prev, h.Prev, "line %d", i+1)
		prev = sha(strings.TrimSuffix(ln, "\n"))
	}
	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, audit.Summary{Records: len(ls), Head: prev}, s)

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.NotContains(t, string(b), testToken)
	assert.NotContains(t, string(b), "NOT-IN-THE-LOG")
	assert.Contains(t, string(b), `"token_fp":"`+testFP+`"`)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the log is readable by its owner only")
}

func TestTamperedLogIsRejected(t *testing.T) {
	path := writeLog(t, audit.Options{}, session())
	orig := lines(t, path)
	tests := []struct {
		name   string
		edit   func(ls []string) []string
		line   int
		reason string
	}{
		{"line edited", func(ls []string) []string {
			ls[2] = strings.Replace(ls[2], `"subject":"alice"`, `"subject":"mallory"`, 1)
			return ls
		}, 4, "not the SHA-256 of line 3: line 3 was changed"},
		{"line removed", func(ls []string) []string { return append(ls[:2], ls[3:]...) }, 3, "seq is 4, want 3: 1 line(s) missing"},
		{"lines swapped", func(ls []string) []string { ls[2], ls[3] = ls[3], ls[2]; return ls }, 3, "seq is 4, want 3"},
		{"line repeated", func(ls []string) []string { return append(ls[:4], ls[3:]...) }, 5, "seq is 4, want 5: a line repeated"},
		{"first line's prev", func(ls []string) []string {
			ls[0] = strings.Replace(ls[0], strings.Repeat("0", 64), strings.Repeat("1", 64), 1)
			return ls
		}, 1, "prev of the first line must be 64 zeros"},
		{"first line removed", func(ls []string) []string { return ls[1:] }, 1, "seq is 2, want 1"},
		{"line break removed", func(ls []string) []string {
			ls[1] = strings.TrimSuffix(ls[1], "\n")
			return ls
		}, 2, "not an audit record"},
		{"empty line inserted", func(ls []string) []string { return append(ls[:3], append([]string{"\n"}, ls[3:]...)...) }, 4, "empty line"},
		{"line replaced by other JSON", func(ls []string) []string { ls[5] = `{"hello":"world"}` + "\n"; return ls }, 6, "no seq"},
		{"seq renumbered after a removal", func(ls []string) []string {
			ls = append(ls[:2], ls[3:]...)
			ls[2] = strings.Replace(ls[2], `"seq":4`, `"seq":3`, 1)
			return ls
		}, 3, "not the SHA-256 of line 2"},
		{"time replaced", func(ls []string) []string {
			ls[0] = strings.Replace(ls[0], `"time":"2026-12-01T09:30:00.123456789Z"`, `"time":"yesterday"`, 1)
			return ls
		}, 1, `time "yesterday" is not RFC 3339`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := tt.edit(append([]string(nil), orig...))
			_, err := audit.Verify(strings.NewReader(strings.Join(ls, "")))
			var le *audit.LineError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, tt.line, le.Line, "%v", err)
			assert.Contains(t, err.Error(), tt.reason)
			assert.True(t, strings.HasPrefix(err.Error(), "line "), "the error starts with the line: %v", err)
		})
	}
}

// TestShortenedLogNeedsTheHead documents what the chain cannot show on
// its own: the last lines removed. The head in the summary changes, which
// is what a copy kept elsewhere is compared with.
func TestShortenedLogNeedsTheHead(t *testing.T) {
	path := writeLog(t, audit.Options{}, session())
	full, err := verifyFile(t, path)
	require.NoError(t, err)
	ls := lines(t, path)
	s, err := audit.Verify(strings.NewReader(strings.Join(ls[:len(ls)-2], "")))
	require.NoError(t, err)
	assert.Equal(t, full.Records-2, s.Records)
	assert.NotEqual(t, full.Head, s.Head)
}

func TestRestartContinuesChain(t *testing.T) {
	events := session()
	path := writeLog(t, audit.Options{}, events[:4])
	before := lines(t, path)

	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	for _, e := range events[4:] {
		require.NoError(t, l.Record(context.Background(), e))
	}
	require.NoError(t, l.Close())

	after := lines(t, path)
	require.Len(t, after, len(events))
	assert.Equal(t, before, after[:4], "earlier lines untouched")
	assert.Contains(t, after[4], `"seq":5,"prev":"`+sha(strings.TrimSuffix(before[3], "\n"))+`"`)
	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, len(events), s.Records)
	assert.Zero(t, s.TornBytes)
}

// TestTornFinalLine simulates a crash in the middle of a write: the file
// ends with part of a line. Verify accepts it without counting it; Open
// removes it and records that it did, and the chain goes on.
func TestTornFinalLine(t *testing.T) {
	events := session()
	path := writeLog(t, audit.Options{}, events[:3])
	// What the fourth Record would have written, cut short.
	whole := writeLog(t, audit.Options{}, events[:4])
	fourth := lines(t, whole)[3]
	torn := fourth[:len(fourth)/2]
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(torn)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, 3, s.Records)
	assert.Equal(t, len(torn), s.TornBytes)

	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	require.NoError(t, l.Record(context.Background(), events[3]))
	require.NoError(t, l.Close())

	ls := lines(t, path)
	require.Len(t, ls, 5)
	assert.Contains(t, ls[3], `"seq":4,`)
	assert.Contains(t, ls[3], `"event":"audit.recovered"`)
	assert.Contains(t, ls[3], "removed a torn final line of "+itoa(len(torn))+" bytes (sha256 "+sha(torn)+")")
	assert.Contains(t, ls[4], `"seq":5,`)
	s, err = verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, audit.Summary{Records: 5, Head: sha(strings.TrimSuffix(ls[4], "\n"))}, s)
}

func TestTornOnlyLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	require.NoError(t, os.WriteFile(path, []byte(`{"seq":1,"prev":"000`), 0o600))
	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, audit.Summary{TornBytes: 20}, s)

	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	ls := lines(t, path)
	require.Len(t, ls, 1)
	assert.Contains(t, ls[0], `{"seq":1,"prev":"`+strings.Repeat("0", 64)+`","time":"`)
	assert.Contains(t, ls[0], `"event":"audit.recovered"`)
	s, err = verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, 1, s.Records)
}

func TestOpenRefusesForeignFile(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":          "hello\n",
		"JSON without seq":  `{"msg":"started"}` + "\n",
		"not ours, no line": strings.Repeat("x", 40<<20),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			_, err := audit.Open(path, audit.Options{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, content, string(after), "the file is left alone")
		})
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	_, err = audit.Open(path, audit.Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use by another process")
	require.NoError(t, l.Close())
	l, err = audit.Open(path, audit.Options{})
	require.NoError(t, err, "the lock goes with Close")
	require.NoError(t, l.Close())
}

func TestOpenErrors(t *testing.T) {
	_, err := audit.Open(filepath.Join(t.TempDir(), "no-such-dir", "audit.log"), audit.Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no-such-dir")
}

// TestWriteFailureFailsClosed writes to /dev/full, where every write
// fails with ENOSPC as on a full disk.
func TestWriteFailureFailsClosed(t *testing.T) {
	l, err := audit.Open("/dev/full", audit.Options{})
	require.NoError(t, err, "/dev/full is needed for this test (Linux)")
	defer l.Close()
	err = l.Record(context.Background(), session()[0])
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no space left on device")
	err2 := l.Record(context.Background(), session()[1])
	require.Error(t, err2, "a log whose write failed refuses every later event until it can write again")
	assert.Contains(t, err2.Error(), "no space left on device")

	w := &failingWriter{after: 1}
	l = audit.New(w, audit.Options{})
	require.NoError(t, l.Record(context.Background(), session()[0]))
	require.Error(t, l.Record(context.Background(), session()[1]))
	require.Error(t, l.Record(context.Background(), session()[2]))
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after == 0 {
		return 0, errors.New("broken pipe")
	}
	w.after--
	return len(p), nil
}

func TestRecordValidation(t *testing.T) {
	tests := []struct {
		name string
		e    audit.Event
		want string
	}{
		{"no kind", audit.Event{}, `event "": Kind is not an event kind`},
		{"unknown kind", audit.Event{Kind: "tool.maybe"}, `event "tool.maybe": Kind is not an event kind`},
		{"recovered", audit.Event{Kind: audit.Recovered, Reason: "x"}, "Kind is written by the Log only"},
		{"auth.failed without reason", audit.Event{Kind: audit.AuthFailed}, `event "auth.failed": Reason is required`},
		{"stepup.failed without reason", audit.Event{Kind: audit.StepUpFailed}, `event "stepup.failed": Reason is required`},
		{"tool.called without tool", audit.Event{Kind: audit.ToolCalled, Outcome: "ok"}, "Tool is required"},
		{"tool.called without outcome", audit.Event{Kind: audit.ToolCalled, Tool: "get_contact"}, "Outcome is required"},
		{"contradicting decision", audit.Event{Kind: audit.StepUpDenied, Decision: "allow"}, `Decision "allow" contradicts the event, which is a deny`},
		{"unknown decision", audit.Event{Kind: audit.StepUpRequested, Decision: "maybe"}, `Decision "maybe" is not allow or deny`},
		{"bad args", audit.Event{Kind: audit.StepUpRequested, Args: json.RawMessage(`{"id":`)}, "Args is not JSON"},
		{"trailing args", audit.Event{Kind: audit.StepUpRequested, Args: json.RawMessage(`{} {}`)}, "Args is not JSON: invalid character"},
		{"negative duration", audit.Event{Kind: audit.ToolCalled, Tool: "t", Outcome: "ok", Duration: -1}, "Duration is negative"},
	}
	var buf bytes.Buffer
	l := audit.New(&buf, audit.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Record(context.Background(), tt.e)
			var fe *audit.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	assert.Empty(t, buf.String(), "nothing written")
	require.NoError(t, l.Record(context.Background(), session()[0]), "a refused event does not break the log")
}

func TestDecisionImpliedByKind(t *testing.T) {
	var buf bytes.Buffer
	l := audit.New(&buf, audit.Options{})
	for _, e := range session() {
		require.NoError(t, l.Record(context.Background(), e))
	}
	want := []string{"deny", "deny", "", "allow", "", "deny", "deny", "deny", ""}
	for i, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var v struct{ Decision string }
		require.NoError(t, json.Unmarshal([]byte(ln), &v))
		assert.Equal(t, want[i], v.Decision, "line %d", i+1)
	}
}

func TestArguments(t *testing.T) {
	record := func(opts audit.Options, args string) map[string]any {
		var buf bytes.Buffer
		require.NoError(t, audit.New(&buf, opts).Record(context.Background(), audit.Event{Kind: audit.StepUpRequested, Tool: "list_contacts", Args: json.RawMessage(args)}))
		var v map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &v))
		return v
	}
	// args_sha256 is the SHA-256 of the bytes the client sent, so that an
	// auditor holding the request recomputes it: two spellings of one
	// request hash apart.
	sent := "{ \"limit\" : 5,\n \"query\":\"Aegis secret plans\" }"
	a := record(audit.Options{}, `{"query":"Aegis secret plans","limit":5}`)
	b := record(audit.Options{}, sent)
	assert.Equal(t, sha(`{"query":"Aegis secret plans","limit":5}`), a["args_sha256"])
	assert.Equal(t, sha(sent), b["args_sha256"], "the hash is of the bytes as sent")
	assert.NotContains(t, a, "args", "arguments stay out without IncludeArgs")

	c := record(audit.Options{}, `{"query":"Aegis secret plans","limit":6}`)
	assert.NotEqual(t, a["args_sha256"], c["args_sha256"])

	d := record(audit.Options{IncludeArgs: true}, `{"query":"<Aegis> & co","limit":5}`)
	assert.Equal(t, map[string]any{"limit": 5.0, "query": "<Aegis> & co"}, d["args"])
	assert.Equal(t, sha(`{"query":"<Aegis> & co","limit":5}`), d["args_sha256"])

	e := record(audit.Options{IncludeArgs: true}, `{"amount":12345678901234567890.50}`)
	assert.Equal(t, sha(`{"amount":12345678901234567890.50}`), e["args_sha256"], "numbers as written")

	// A hash the caller computed from the raw bytes is written as given.
	var buf bytes.Buffer
	require.NoError(t, audit.New(&buf, audit.Options{}).Record(context.Background(), audit.Event{Kind: audit.StepUpRequested, Tool: "t", ArgsSHA256: sha(sent)}))
	assert.Contains(t, buf.String(), `"args_sha256":"`+sha(sent)+`"`)
	err := audit.New(&buf, audit.Options{}).Record(context.Background(), audit.Event{Kind: audit.StepUpRequested, Tool: "t", ArgsSHA256: "not-hex"})
	var fe *audit.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "ArgsSHA256", fe.Field)
}

func TestConcurrentRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				e := audit.Event{Kind: audit.ToolCalled, Tool: "get_contact", Outcome: "ok", RequestID: itoa(w*each + i)}
				assert.NoError(t, l.Record(context.Background(), e))
			}
		})
	}
	wg.Wait()
	require.NoError(t, l.Close())
	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Equal(t, workers*each, s.Records)
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "a second Close is harmless")
	assert.ErrorIs(t, l.Record(context.Background(), session()[0]), audit.ErrClosed)
}

// TestRecordsAtCallTime: an event without a time gets the time of
// Record.
func TestRecordsAtCallTime(t *testing.T) {
	var buf bytes.Buffer
	before := time.Now()
	require.NoError(t, audit.New(&buf, audit.Options{}).Record(context.Background(), audit.Event{Kind: audit.ScopeDenied}))
	var v struct{ Time time.Time }
	require.NoError(t, json.Unmarshal(buf.Bytes(), &v))
	assert.WithinRange(t, v.Time, before.Add(-time.Millisecond), time.Now().Add(time.Millisecond))
	assert.Equal(t, time.UTC, v.Time.Location())
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestOutcomeWrittenAtOnce: a call's outcome is not fsync'd on its own, but
// it is in the file when Record returns, chained like any line.
func TestOutcomeWrittenAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	defer l.Close()
	evs := session()
	require.NoError(t, l.Record(t.Context(), evs[3])) // a decision
	require.NoError(t, l.Record(t.Context(), evs[4])) // an outcome
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sum, err := audit.Verify(bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Records)
	assert.Contains(t, string(b), `"event":"tool.called"`)
}
