package audit_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// TestHiddenCharactersEscaped: a right-to-left override in a token's sub
// or in an argument reaches the file as \u202e, not as itself, so a reader's
// terminal shows what the line says; a JSON reader still gets the exact
// value, the arguments still hash to args_sha256, and the chain verifies.
func TestHiddenCharactersEscaped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{IncludeArgs: true})
	require.NoError(t, err)
	sub := "mallory\u202egnp.exe"
	args := `{"name":"Riley\u200b Vance\u2066","note":"a\u0007b\u007fc"}`
	require.NoError(t, l.Record(context.Background(), audit.Event{Kind: audit.StepUpApproved, Subject: sub, Tool: "get_contact", Args: json.RawMessage(args), Reason: "push\u2028x"}))
	require.NoError(t, l.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, r := range []string{"\u202e", "\u200b", "\u2066", "\u2028", "\a", "\x7f"} {
		assert.NotContains(t, string(b), r, "written raw: %q", r)
	}
	assert.Contains(t, string(b), `mallory\u202egnp.exe`)
	var got struct {
		Subject  string          `json:"subject"`
		Args     json.RawMessage `json:"args"`
		ArgsHash string          `json:"args_sha256"`
	}
	require.NoError(t, json.Unmarshal(b, &got), "%s", b)
	assert.Equal(t, sub, got.Subject, "a JSON reader gets the exact value")
	var want, have any
	require.NoError(t, json.Unmarshal([]byte(args), &want))
	require.NoError(t, json.Unmarshal(got.Args, &have))
	assert.Equal(t, want, have)
	_, err = verifyFile(t, path)
	require.NoError(t, err)
}

// TestEscapesWhatThePushEscapes: whatever character a field holds, the
// file holds none that stepup.Display would escape for an approver.
func TestEscapesWhatThePushEscapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	var sb strings.Builder
	flush := func() {
		require.NoError(t, l.Record(context.Background(), audit.Event{Kind: audit.StepUpApproved, Subject: sb.String()}))
		sb.Reset()
	}
	// Every plane that has characters assigned, and both ends of the
	// private use planes.
	for _, span := range [][2]rune{{0, 0x323AF}, {0xE0000, 0xE01EF}, {0xF0000, 0xF00FF}, {0x10FF00, utf8.MaxRune}} {
		for r := span[0]; r <= span[1]; r++ {
			if !utf8.ValidRune(r) {
				continue
			}
			sb.WriteRune(r)
			sb.WriteByte('x') // no run of combining marks
			if sb.Len() > 1<<20 {
				flush()
			}
		}
	}
	flush()
	require.NoError(t, l.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r >= utf8.RuneSelf || r == 0x7f {
			require.Equal(t, string(r), stepup.Display(string(r)), "U+%04X is in the file as itself, but a push escapes it", r)
		}
		i += size
	}
	_, err = verifyFile(t, path)
	require.NoError(t, err)
}

// TestTallyCountsRefusals: refusals are counted, not written one by one;
// each interval writes one line per reason and source, bounded, and Close
// writes the last interval.
func TestTallyCountsRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	tally := audit.NewTally(l, time.Hour, 3)
	for range 1000 {
		tally.Add("no_token", "192.0.2.1")
	}
	tally.Add("expired", "192.0.2.1")
	tally.Add("malformed", "192.0.2.2")
	for i := range 50 { // past MaxKeys: counted under "other"
		tally.Add("malformed", "198.51.100."+itoa(i))
	}
	assert.Empty(t, lines(t, path), "nothing written per request")
	require.NoError(t, l.Record(context.Background(), session()[3]), "a decision in between")
	require.NoError(t, tally.Close())
	require.NoError(t, tally.Close(), "twice is harmless")
	require.NoError(t, l.Close())

	type counted struct {
		Event, Decision, Reason, Source, Since string
		Count                                  int
	}
	var got []counted
	for _, ln := range lines(t, path)[1:] {
		var c counted
		require.NoError(t, json.Unmarshal([]byte(ln), &c))
		assert.NotEmpty(t, c.Since)
		c.Since = ""
		got = append(got, c)
	}
	assert.Equal(t, []counted{
		{Event: "auth.failed", Decision: "deny", Reason: "expired", Source: "192.0.2.1", Count: 1},
		{Event: "auth.failed", Decision: "deny", Reason: "malformed", Source: "192.0.2.2", Count: 1},
		{Event: "auth.failed", Decision: "deny", Reason: "malformed", Source: "other", Count: 50},
		{Event: "auth.failed", Decision: "deny", Reason: "no_token", Source: "192.0.2.1", Count: 1000},
	}, got)
	_, err = verifyFile(t, path)
	require.NoError(t, err)
}

// TestTallyClosedConcurrently: Close called at once from several
// goroutines (a shutdown path and a deferred Close) stops the Tally once,
// and every call returns.
func TestTallyClosedConcurrently(t *testing.T) {
	l := audit.New(io.Discard, audit.Options{})
	for range 20000 { // the window between two Closes is narrow
		tally := audit.NewTally(l, time.Hour, 3)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				<-start
				assert.NoError(t, tally.Close())
			})
		}
		close(start)
		wg.Wait()
	}
}
