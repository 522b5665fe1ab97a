package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimiter bounds the open connections of the MCP listener, so that a
// connection flood runs into this bound and not into the process's file
// descriptor limit. Past that limit accept(2) fails (EMFILE) for every
// listener at once, the metrics one included, and the database, the
// audit file and Duo calls fail with it; net/http then retries Accept in a
// loop while the kernel's backlog fills.
//
// At the bound a new connection is still accepted (so the backlog never
// fills), then:
//
//   - the longest idle connection is closed to make room, one that has
//     sent no byte of a request yet or sits between keep-alive requests
//     (http.StateNew, http.StateIdle). A flood of idle connections thus
//     only replaces its own, and a fresh client (a health probe, a user)
//     gets in and is served before the flood's newer connections push it
//     out;
//   - if none is idle, every connection is reading or serving a request
//     (each bounded by the server's timeouts and the request bounds of
//     tools), and the new connection is closed at once: a refusal costs an
//     accept and a close, no goroutine and no read.
//
// It is safe for concurrent use.
type connLimiter struct {
	max int
	now func() time.Time
	// onRefuse hears each connection closed by the bound: "evicted" (an
	// idle one, to make room) or "refused" (the new one).
	onRefuse func(action string)

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
}

func newConnLimiter(max int, onRefuse func(action string)) *connLimiter {
	if onRefuse == nil {
		onRefuse = func(string) {}
	}
	return &connLimiter{max: max, now: time.Now, onRefuse: onRefuse, conns: map[*limitedConn]struct{}{}}
}

// limitedConn is one counted connection.
type limitedConn struct {
	net.Conn
	l     *connLimiter
	idle  bool      // StateNew or StateIdle; guarded by l.mu
	since time.Time // when it last became idle; guarded by l.mu
	once  sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

// Listener wraps ln; pair it with ConnState on the http.Server.
func (l *connLimiter) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l}
}

type limitListener struct {
	net.Listener
	l *connLimiter
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ll.l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c, making room by closing the longest idle connection if
// at the bound, or closes c and returns nil.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	l.mu.Lock()
	var victim *limitedConn
	if len(l.conns) >= l.max {
		for x := range l.conns {
			if x.idle && (victim == nil || x.since.Before(victim.since)) {
				victim = x
			}
		}
		if victim == nil {
			l.mu.Unlock()
			c.Close()
			l.onRefuse("refused")
			return nil
		}
		delete(l.conns, victim)
	}
	lc := &limitedConn{Conn: c, l: l, idle: true, since: l.now()}
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		victim.Close() // net/http's read fails and it lets the connection go
		l.onRefuse("evicted")
	}
	return lc
}

// ConnState is http.Server.ConnState: it tells idle connections from busy
// ones.
func (l *connLimiter) ConnState(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateNew, http.StateIdle:
		lc.idle, lc.since = true, l.now()
	default:
		lc.idle = false
	}
}

// Open is the number of connections counted, for a metrics gauge.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}
