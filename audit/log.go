package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options tune a Log. The zero value is the safe default.
type Options struct {
	// IncludeArgs writes each call's arguments (as sent, space removed) next to
	// their hash. Off by default: arguments can hold personal data that the
	// readers of the audit trail are not entitled to see.
	IncludeArgs bool
}

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: log is closed")

// maxLine bounds a line, so that Verify and Open never hold more than a
// few lines in memory. Record refuses a longer event (fail closed)
// rather than write a line Verify would reject.
const maxLine = 16 << 20

// genesis is the prev of a chain's first line.
var genesis = strings.Repeat("0", 64)

// Log appends events to the audit trail. It is safe for concurrent use:
// Record calls are written one at a time, in the order they take the
// lock, and each line chains to the one written before it.
type Log struct {
	opts Options
	now  func() time.Time

	mu   sync.Mutex
	w    io.Writer
	f    *os.File // nil when writing to a plain writer: no fsync
	size int64    // bytes of f known to be complete lines
	seq  uint64   // of the last line written
	prev string   // hash of the last line written
	// The same after the last line whose fsync succeeded: the end of what
	// is known to be on disk, where recover cuts the file back to.
	syncedSize int64
	syncedSeq  uint64
	syncedPrev string
	failed     error // set by Close, or by a failed write to a plain writer: every Record returns it

	// A file whose write or fsync failed is broken: Record refuses its
	// events until a recovery succeeds (see recover).
	broken      error
	brokenSince time.Time
	refused     int    // events refused while broken
	lost        uint64 // unsynced lines cut away by recover
}

// New returns a Log writing to w (standard output, say), unsynced. Its
// chain starts at seq 1. A failed write makes every later Record fail.
func New(w io.Writer, opts Options) *Log {
	return &Log{opts: opts, now: time.Now, w: w, prev: genesis}
}

// Open opens the audit log at path for appending, creating it (mode 0600)
// if needed, and continues the chain from its last complete line. A torn
// final line left by a crash is truncated away and recorded as a
// Recovered event (see the package documentation). Open refuses a file
// whose last complete line is not an audit record, and a file another
// Log holds open (an advisory lock, so that two servers never interleave
// their lines). An empty path means standard output: New(os.Stdout, opts).
func Open(path string, opts Options) (*Log, error) {
	if path == "" {
		return New(os.Stdout, opts), nil
	}
	created := true
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if errors.Is(err, fs.ErrExist) {
		created = false
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l, err := open(f, path, created, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func open(f *os.File, path string, created bool, opts Options) (*Log, error) {
	if err := lockFile(f); err != nil {
		return nil, fmt.Errorf("audit: %s is in use by another process (cannot lock it: %w)", path, err)
	}
	if created {
		// The new directory entry must survive a crash as well as the
		// lines written to it.
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	last, torn, err := readTail(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	l := &Log{opts: opts, now: time.Now, w: f, f: f, size: fi.Size(), prev: genesis}
	if last != nil {
		var h header
		if err := json.Unmarshal(last, &h); err != nil || h.Seq == nil || *h.Seq == 0 || h.Prev == nil || len(*h.Prev) != len(genesis) {
			return nil, fmt.Errorf("audit: %s: its last complete line is not an audit record; refusing to append to it (check it with crm-mcp audit verify)", path)
		}
		l.seq = *h.Seq
		l.prev = hashHex(last)
	}
	// What the file holds is taken as synced: Close synced it, and the
	// lines a killed process left unsynced are in the page cache, where
	// the first synced line's fsync takes them to disk.
	l.syncedSize, l.syncedSeq, l.syncedPrev = l.size, l.seq, l.prev
	if len(torn) > 0 {
		l.size -= int64(len(torn))
		l.syncedSize = l.size
		if err := f.Truncate(l.size); err != nil {
			return nil, fmt.Errorf("audit: %s: removing a torn final line: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("audit: %s: %w", path, err)
		}
		reason := fmt.Sprintf("removed a torn final line of %d bytes (sha256 %s) left by a crash during a write", len(torn), hashHex(torn))
		if err := l.append(line{Time: l.now().UTC().Format(time.RFC3339Nano), Event: Recovered, Reason: reason}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Record writes e as one line and, for a file, fsyncs it before
// returning. An error means the event is not on record: the caller must
// not act on the decision (fail closed). After a failed write to a file
// (a full disk, say) each later Record first tries to recover: it takes
// back what the failed write left, writes an audit.recovered line saying
// how long the trail was broken and how many events it refused, and goes
// on; until that succeeds it refuses its event too. A failed write to a
// plain writer fails every later Record: bytes already sent cannot be
// taken back.
//
// Record does not give up when ctx is done: an event about a cancelled
// call must still be recorded, and a write cannot be undone halfway.
func (l *Log) Record(ctx context.Context, e Event) error {
	ln, err := toLine(e, l.opts.IncludeArgs, l.now())
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.append(ln)
}

// append chains ln to the last line and writes it; l.mu is held (or l is
// not shared yet).
func (l *Log) append(ln line) error {
	if l.failed != nil {
		return l.failed
	}
	if l.broken != nil {
		if err := l.recover(); err != nil {
			l.refused++
			return err
		}
	}
	return l.appendLine(ln)
}

// appendLine encodes, escapes, chains and writes ln; l.mu is held.
func (l *Log) appendLine(ln line) error {
	ln.Seq = l.seq + 1
	ln.Prev = l.prev
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ln); err != nil { // Encode ends the line with "\n"
		return fmt.Errorf("audit: encoding event %q: %w", ln.Event, err)
	}
	out := escapeLine(b.Bytes())
	if len(out) > maxLine {
		return &FieldError{Kind: ln.Event, Field: "Args", Msg: fmt.Sprintf("make the line %d bytes long, over the limit of %d", len(out), maxLine)}
	}
	sync := needsSync(ln)
	if err := l.write(out, sync); err != nil {
		if l.f == nil {
			l.failed = fmt.Errorf("audit: writing the log failed, every later event is refused: %w", err)
			return l.failed
		}
		l.broken = err
		l.brokenSince = l.now()
		l.refused = 1
		return fmt.Errorf("audit: writing the log failed, events are refused until it can be written again: %w", err)
	}
	l.seq = ln.Seq
	l.prev = hashHex(out[:len(out)-1])
	if sync {
		l.syncedSize, l.syncedSeq, l.syncedPrev = l.size, l.seq, l.prev
	}
	return nil
}

// recover makes a broken file whole again: it cuts the file back to the
// end of its last synced line, syncs that, and writes a synced
// audit.recovered line that chains to that line and says what was refused
// and what was cut away. Its error leaves the file broken; the next
// Record tries again. Called with l.mu held.
//
// The last synced line is the only safe point. After a failed write or
// fsync, what is on disk past it is unknown: a failed write may have left
// part of a line; a failed fsync means the kernel may have dropped the
// dirty pages of every line written since the last good one, the unsynced
// ones (outcomes, Tally counts) included, and marked them clean, so a
// later fsync succeeds without writing them (a full disk under delayed
// allocation fails the same way, at writeback). Chaining to such a line
// would make a chain that no longer verifies once the page cache is gone
// (a reboot). So those lines are cut away even if they are still
// readable, and the recovered line counts them.
func (l *Log) recover() error {
	refusing := fmt.Errorf("audit: the log cannot be written (since %s: %w), every event is refused until it can", l.brokenSince.UTC().Format(time.RFC3339), l.broken)
	if err := l.f.Truncate(l.syncedSize); err != nil {
		return refusing
	}
	// The file now ends at the last synced line, whatever happens next.
	l.lost += l.seq - l.syncedSeq
	l.size, l.seq, l.prev = l.syncedSize, l.syncedSeq, l.syncedPrev
	if err := l.f.Sync(); err != nil {
		return refusing
	}
	reason := fmt.Sprintf("the log could not be written from %s to %s (%v): %d event(s) were refused, and not acted on",
		l.brokenSince.UTC().Format(time.RFC3339Nano), l.now().UTC().Format(time.RFC3339Nano), l.broken, l.refused)
	if l.lost > 0 {
		reason += fmt.Sprintf("; %d unsynced line(s) after the last synced one (outcomes of calls already answered, counts of refusals) were cut away, since whether they reached the disk is unknown", l.lost)
	}
	cause, since, refused := l.broken, l.brokenSince, l.refused
	l.broken = nil
	if err := l.appendLine(line{Time: l.now().UTC().Format(time.RFC3339Nano), Event: Recovered, Reason: reason}); err != nil {
		// Still broken: keep the first failure's time and count.
		l.broken, l.brokenSince, l.refused = cause, since, refused
		return refusing
	}
	l.refused, l.lost = 0, 0
	return nil
}

// needsSync reports whether a line must be on disk before Record
// returns: every decision, and a write's "started" line, since the caller
// acts on them next. The outcome of a call that already ran acts on
// nothing: it is written at once and reaches the disk with the next synced
// line (or Close), so a read does not pay an fsync for its outcome.
func needsSync(ln line) bool {
	switch ln.Event {
	case ToolCalled:
		return ln.Outcome == "started"
	case AuthFailed:
		// A Tally's count of refusals at the front door (Count set): a
		// summary of requests already answered, which nothing acts on.
		return ln.Count == 0
	}
	return true
}

func (l *Log) write(b []byte, sync bool) error {
	n, err := l.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if l.f == nil {
		return err
	}
	if err != nil {
		// Best effort: take back a partial line, so that the file ends
		// with a complete one. Open repairs it if this fails too.
		if n > 0 {
			l.f.Truncate(l.size)
		}
		return err
	}
	if !sync {
		l.size += int64(len(b))
		return nil
	}
	if err := l.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty
		// pages: whether the line is on disk is unknown.
		return err
	}
	l.size += int64(len(b))
	return nil
}

// Close syncs and closes the file (a writer is left open). Record
// returns ErrClosed afterwards.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == ErrClosed {
		return nil
	}
	l.failed = ErrClosed
	if l.f == nil {
		return nil
	}
	if l.broken != nil {
		// Best effort: leave only the lines known to be on disk (see
		// recover).
		l.f.Truncate(l.syncedSize)
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// readTail returns the last complete line of the file (without its "\n";
// nil when there is none) and the bytes after it, a torn final line. It
// reads backwards from the end, looking at each byte once, until it has
// seen the newline that ends the last line and the one before it, or the
// start of the file.
func readTail(r io.ReaderAt, size int64) (last, torn []byte, err error) {
	const chunk = 64 << 10
	end := int64(-1)  // offset of the last "\n"
	start := int64(0) // offset of the last line
	off := size
scan:
	for off > 0 {
		if size-off > 2*maxLine {
			return nil, nil, fmt.Errorf("its last %d bytes hold no complete line: not an audit log, or damaged (check it with crm-mcp audit verify)", size-off)
		}
		n := min(int64(chunk), off)
		off -= n
		p := make([]byte, n)
		if err := readAt(r, p, off); err != nil {
			return nil, nil, err
		}
		for i := len(p) - 1; i >= 0; i-- {
			switch {
			case p[i] != '\n':
			case end < 0:
				end = off + int64(i)
			default:
				start = off + int64(i) + 1
				break scan
			}
		}
	}
	from := start
	if end < 0 {
		from = 0
	}
	b := make([]byte, size-from)
	if err := readAt(r, b, from); err != nil {
		return nil, nil, err
	}
	if end < 0 {
		return nil, b, nil
	}
	return b[:end-start], b[end-start+1:], nil
}

// readAt fills p from r at off; io.ReaderAt may report io.EOF along
// with a full read at the end of the file.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
