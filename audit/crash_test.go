package audit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
)

// childEnv names the log file a child process writes to; see TestMain.
const childEnv = "AUDIT_TEST_CHILD_LOG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(writeForever(path))
	}
	os.Exit(m.Run())
}

// writeForever is the child of TestKillDuringWrite: it records events,
// small and large (a large write takes long enough to be caught in the
// middle), until it is killed.
func writeForever(path string) int {
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	big := strings.Repeat("x", 1<<20)
	for i := 0; ; i++ {
		e := audit.Event{Kind: audit.ToolCalled, Tool: "list_contacts", Outcome: "ok", Args: json.RawMessage(`{"limit":1}`)}
		if i%2 == 1 {
			e.Reason = big
		}
		if err := l.Record(context.Background(), e); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// TestKillDuringWrite kills a real process with SIGKILL while it writes
// the log, several times over the same file: in even rounds as soon as
// the file is seen to end mid-line (a write in progress), in odd rounds
// at whatever moment. After every kill the file verifies (a torn final
// line allowed), the next process continues the chain, and every torn
// line it found is on record as audit.recovered.
func TestKillDuringWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	const rounds = 4
	torn, records := 0, 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		ready, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "child: %s", stderr.String())
		require.Equal(t, "ready\n", ready)

		f, err := os.Open(path)
		require.NoError(t, err)
		start := fileSize(t, f)
		deadline := time.Now().Add(20 * time.Second)
		var catchBy time.Time // give up waiting for a write in progress
		for {
			size := fileSize(t, f)
			if size < start+2<<20 { // a few lines first
				require.True(t, time.Now().Before(deadline), "child wrote nothing: %s", stderr.String())
				time.Sleep(time.Millisecond)
				continue
			}
			if catchBy.IsZero() {
				catchBy = time.Now().Add(2 * time.Second)
			}
			if round%2 == 1 || midLine(t, f, size) || time.Now().After(catchBy) {
				break
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		require.NoError(t, f.Close())
		err = cmd.Wait()
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "child ended by itself: %v %s", err, stderr.String())
		require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal())

		s, err := verifyFile(t, path)
		require.NoError(t, err, "round %d", round)
		assert.Greater(t, s.Records, records, "round %d", round)
		records = s.Records
		if s.TornBytes > 0 {
			torn++
		}
		t.Logf("round %d: %d records, torn final line of %d bytes", round, s.Records, s.TornBytes)
	}

	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	s, err := verifyFile(t, path)
	require.NoError(t, err)
	assert.Zero(t, s.TornBytes)
	assert.Equal(t, torn, countEvent(t, path, audit.Recovered), "one audit.recovered per torn line")
	t.Logf("%d of %d kills left a torn final line", torn, rounds)
}

// midLine reports whether the file's byte at size-1 is not a newline:
// a write is under way (or was cut).
func midLine(t *testing.T, f *os.File, size int64) bool {
	t.Helper()
	b := make([]byte, 1)
	_, err := f.ReadAt(b, size-1)
	require.NoError(t, err)
	return b[0] != '\n'
}

func fileSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	require.NoError(t, err)
	return fi.Size()
}

func countEvent(t *testing.T, path string, kind audit.Kind) int {
	t.Helper()
	n := 0
	for _, ln := range lines(t, path) {
		var v struct{ Event audit.Kind }
		require.NoError(t, json.Unmarshal([]byte(ln), &v))
		if v.Event == kind {
			n++
		}
	}
	return n
}
