package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullDisk stands between the Log and its file: while full, a write puts
// part of the line in the file, as a write that runs out of space does,
// and fails with ENOSPC.
type fullDisk struct {
	f    *os.File
	full bool
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if !d.full {
		return d.f.Write(p)
	}
	n, _ := d.f.Write(p[:len(p)/2])
	return n, syscall.ENOSPC
}

// openOnFullDisk opens a new Log whose writes go through a fullDisk, not
// full yet.
func openOnFullDisk(t *testing.T) (string, *Log, *fullDisk) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, Options{})
	require.NoError(t, err)
	disk := &fullDisk{f: l.f}
	l.w = disk
	return path, l, disk
}

// TestRecoversAfterFailedWrite: once the disk has room again, the next
// Record takes back the partial line, records the outage, and goes on;
// the chain is whole, with no restart.
func TestRecoversAfterFailedWrite(t *testing.T) {
	path, l, disk := openOnFullDisk(t)
	ctx := context.Background()
	ev := Event{Kind: StepUpApproved, Subject: "alice", Tool: "get_contact"}
	require.NoError(t, l.Record(ctx, ev))

	disk.full = true
	err := l.Record(ctx, ev)
	require.Error(t, err)
	assert.True(t, errors.Is(err, syscall.ENOSPC), "%v", err)
	require.Error(t, l.Record(ctx, ev), "still full")
	require.Error(t, l.Record(ctx, Event{Kind: ToolCalled, Tool: "get_contact", Outcome: "ok"}), "still full")

	disk.full = false
	require.NoError(t, l.Record(ctx, ev), "recovered without a restart")
	require.NoError(t, l.Record(ctx, ev))
	require.NoError(t, l.Close())

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := Verify(bytes.NewReader(b))
	require.NoError(t, err, "the chain continues")
	assert.Zero(t, s.TornBytes)
	assert.Equal(t, 4, s.Records, "approved, recovered, approved, approved")
	ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	assert.Contains(t, ls[1], `"event":"audit.recovered"`)
	assert.Contains(t, ls[1], "3 event(s) were refused")
	assert.Contains(t, ls[1], "no space left on device")
}

// TestRecoversToTheLastSyncedLine: an outcome line is written unsynced;
// when a later write fails, whether that line reached the disk is
// unknown, so the recovery cuts the file back to the last synced line,
// chains to it, and counts the line cut away.
func TestRecoversToTheLastSyncedLine(t *testing.T) {
	path, l, disk := openOnFullDisk(t)
	ctx := context.Background()
	ev := Event{Kind: StepUpApproved, Subject: "alice", Tool: "get_contact"}
	require.NoError(t, l.Record(ctx, ev))
	require.NoError(t, l.Record(ctx, Event{Kind: ToolCalled, Tool: "get_contact", Outcome: "ok"}), "unsynced")

	disk.full = true
	require.Error(t, l.Record(ctx, ev))
	disk.full = false
	require.NoError(t, l.Record(ctx, ev), "recovered")
	require.NoError(t, l.Close())

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := Verify(bytes.NewReader(b))
	require.NoError(t, err, "the chain continues")
	assert.Equal(t, 3, s.Records, "approved, recovered, approved")
	ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	require.Len(t, ls, 3)
	assert.Contains(t, ls[1], `"event":"audit.recovered"`)
	assert.Contains(t, ls[1], `"seq":2`)
	assert.Contains(t, ls[1], "1 event(s) were refused")
	assert.Contains(t, ls[1], "1 unsynced line(s) after the last synced one")
	assert.NotContains(t, string(b), `"outcome":"ok"`, "the unsynced line is cut away")
}
