package main

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// connLimiter bounds the open connections of the MCP listener, overall
// and per source, so that a connection flood runs into these bounds and
// not into the process's file descriptor limit. Past that limit accept(2)
// fails (EMFILE) for every listener at once, the metrics one included,
// and the database, the audit file and Duo calls fail with it; net/http
// then retries Accept in a loop while the kernel's backlog fills.
//
// At a bound a new connection is still accepted (so the backlog never
// fills), then:
//
//   - the longest idle connection is closed to make room, one that has
//     sent no byte of a request yet or sits between keep-alive requests
//     (http.StateNew, http.StateIdle): the source's own at its bound,
//     anyone's at the overall bound. A flood of idle connections thus
//     only replaces its own, and a fresh client (a health probe, a user)
//     gets in and is served before the flood's newer connections push it
//     out;
//   - if none is idle, every connection is reading or serving a request
//     (each bounded by the server's timeouts and the request bounds of
//     tools), and the new connection is closed at once: a refusal costs an
//     accept and a close, no goroutine and no read.
//
// The per-source bound is what keeps one source from holding the whole
// overall bound with connections that cannot be evicted (a request's
// headers sent slowly stay active for the server's ReadHeaderTimeout). A
// source is an IP address, loopback included, or an IPv6 /64, which one
// host usually holds whole.
//
// The idle connections are kept in lists ordered by when they became
// idle, so that admitting, evicting and a state change cost the same at
// any bound: the accept loop and every request's state change share the
// lock.
//
// It is safe for concurrent use.
type connLimiter struct {
	max, maxPerSource int
	// onRefuse hears each connection closed by a bound: "evicted" (an
	// idle one, to make room) or "refused" (the new one).
	onRefuse func(action string)

	mu      sync.Mutex
	open    int
	idle    list.List // of *limitedConn, the longest idle at the front
	sources map[netip.Addr]*connSource
}

// connSource is what one source holds.
type connSource struct {
	key  netip.Addr
	open int
	idle list.List // of *limitedConn, the longest idle at the front
}

// newConnLimiter bounds the connections to max overall and maxPerSource
// per source (at most max).
func newConnLimiter(max, maxPerSource int, onRefuse func(action string)) *connLimiter {
	if onRefuse == nil {
		onRefuse = func(string) {}
	}
	return &connLimiter{max: max, maxPerSource: min(maxPerSource, max), onRefuse: onRefuse, sources: map[netip.Addr]*connSource{}}
}

// limitedConn is one counted connection.
type limitedConn struct {
	net.Conn
	l   *connLimiter
	src *connSource
	// Guarded by l.mu: counted until closed or evicted; while idle, its
	// places in the limiter's and its source's idle lists.
	counted       bool
	inIdle, inSrc *list.Element
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.forget(c)
	c.l.mu.Unlock()
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

// connSourceOf is the source a connection counts against: its remote IP
// address, or the /64 of an IPv6 one. Addresses that are not TCP's (none
// on this listener) share one source.
func connSourceOf(c net.Conn) netip.Addr {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		ip = p.Addr()
	}
	return ip
}

// admit counts c, making room by closing the longest idle connection if
// at a bound, or closes c and returns nil.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	key := connSourceOf(c)
	l.mu.Lock()
	src := l.sources[key]
	var victim *limitedConn
	full := true
	switch {
	case src != nil && src.open >= l.maxPerSource:
		victim = frontConn(&src.idle)
	case l.open >= l.max:
		victim = frontConn(&l.idle)
	default:
		full = false
	}
	if full && victim == nil {
		l.mu.Unlock()
		c.Close()
		l.onRefuse("refused")
		return nil
	}
	if victim != nil {
		l.forget(victim)
	}
	if src == nil || src.open == 0 { // forget may have dropped it
		src = &connSource{key: key}
		l.sources[key] = src
	}
	lc := &limitedConn{Conn: c, l: l, src: src, counted: true}
	l.open++
	src.open++
	l.markIdle(lc)
	l.mu.Unlock()
	if victim != nil {
		victim.Close() // net/http's read fails and it lets the connection go
		l.onRefuse("evicted")
	}
	return lc
}

func frontConn(idle *list.List) *limitedConn {
	if e := idle.Front(); e != nil {
		return e.Value.(*limitedConn)
	}
	return nil
}

// forget stops counting lc, once; l.mu is held.
func (l *connLimiter) forget(lc *limitedConn) {
	if !lc.counted {
		return
	}
	lc.counted = false
	l.markBusy(lc)
	l.open--
	if lc.src.open--; lc.src.open == 0 {
		delete(l.sources, lc.src.key)
	}
}

// markIdle puts lc at the back of the idle lists (it is now the most
// recently idle); l.mu is held.
func (l *connLimiter) markIdle(lc *limitedConn) {
	if lc.inIdle != nil {
		l.idle.MoveToBack(lc.inIdle)
		lc.src.idle.MoveToBack(lc.inSrc)
		return
	}
	lc.inIdle = l.idle.PushBack(lc)
	lc.inSrc = lc.src.idle.PushBack(lc)
}

// markBusy takes lc out of the idle lists; l.mu is held.
func (l *connLimiter) markBusy(lc *limitedConn) {
	if lc.inIdle == nil {
		return
	}
	l.idle.Remove(lc.inIdle)
	lc.src.idle.Remove(lc.inSrc)
	lc.inIdle, lc.inSrc = nil, nil
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
	if !lc.counted { // evicted or closed: a late state change
		return
	}
	switch state {
	case http.StateNew, http.StateIdle:
		l.markIdle(lc)
	default:
		l.markBusy(lc)
	}
}

// Open is the number of connections counted, for a metrics gauge.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}
