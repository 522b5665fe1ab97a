package audit

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"
)

// A Tally counts the requests the front door refuses (no token, a bad
// token, a bad Origin...) and writes one auth.failed line per reason and
// source per interval, with the count, instead of a line per request.
//
// Why: such a request comes from someone the server does not know, and
// nothing is decided about a caller because of it. A line and an fsync
// each, under the lock every decision shares, let an anonymous flood slow
// every approved call and grow the trail without bound. Counted, a
// refusal costs a map increment; the trail grows by at most MaxKeys+1
// lines per reason per interval whatever the flood; and the lines are not
// fsynced on their own: they reach the disk with the next decision's
// fsync or Close, so a crash may lose the last interval's counts, never a
// decision. Decisions about a verified caller (scope.denied, step-up) are
// still recorded one by one with Record.
//
//	t := audit.NewTally(log, time.Minute, 1000)
//	defer t.Close() // writes what is counted; before log.Close
//	t.Add("expired", "192.0.2.7")
type Tally struct {
	log      *Log
	maxKeys  int
	interval time.Duration

	mu     sync.Mutex
	since  time.Time
	counts map[tallyKey]int

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type tallyKey struct{ reason, source string }

// OtherSource is the source of the refusals counted once an interval
// already holds MaxKeys sources: the count stays exact, only who is lost.
const OtherSource = "other"

// NewTally counts refusals for log and writes them every interval, at
// most maxKeys (reason, source) keys per interval plus one OtherSource
// key per reason. Reasons should come from a fixed list (they are not
// bounded otherwise). Close stops it.
func NewTally(log *Log, interval time.Duration, maxKeys int) *Tally {
	t := &Tally{
		log: log, maxKeys: max(maxKeys, 1), interval: interval,
		since: log.now(), counts: map[tallyKey]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go t.run()
	return t
}

func (t *Tally) run() {
	defer close(t.done)
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.Flush()
		}
	}
}

// Add counts one refused request. It never waits on the disk.
func (t *Tally) Add(reason, source string) {
	k := tallyKey{reason, source}
	t.mu.Lock()
	if _, ok := t.counts[k]; !ok && len(t.counts) >= t.maxKeys {
		k.source = OtherSource
	}
	t.counts[k]++
	t.mu.Unlock()
}

// Flush writes what was counted since the last Flush, one line per key,
// and starts a new interval. The run that calls it every interval
// ignores its error: Record then fails the next decision closed, and the
// Log's recovery line says how many events were refused.
func (t *Tally) Flush() error {
	t.mu.Lock()
	counts, since := t.counts, t.since
	t.counts, t.since = map[tallyKey]int{}, t.log.now()
	t.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	from := since.UTC().Format(time.RFC3339Nano)
	t.log.mu.Lock()
	defer t.log.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b tallyKey) int {
		return cmp.Or(cmp.Compare(a.reason, b.reason), cmp.Compare(a.source, b.source))
	})
	var first error
	for _, k := range keys {
		n := counts[k]
		ln := line{
			Time: t.log.now().UTC().Format(time.RFC3339Nano), Event: AuthFailed, Decision: "deny",
			Reason: k.reason, Source: k.source, Count: n, Since: from,
		}
		if err := t.log.append(ln); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops the interval and writes what is counted. Call it before
// the Log's Close. It may be called more than once, concurrently: every
// call returns once the first has written, with its error.
func (t *Tally) Close() error {
	t.closeOnce.Do(func() {
		close(t.stop)
		<-t.done
		t.closeErr = t.Flush()
	})
	return t.closeErr
}
