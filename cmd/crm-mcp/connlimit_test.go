package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// dialIdle opens n connections to addr that never send a byte.
func dialIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// metricValue reads one unlabelled (or fully labelled) series from a
// scrape.
func metricValue(t *testing.T, scrape, series string) float64 {
	t.Helper()
	v, ok := seriesValue(scrape, series)
	require.True(t, ok, "no series %s in the scrape", series)
	return v
}

// seriesValue is the value of series in a scrape, if it is there.
func seriesValue(scrape, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestConnectionFlood: with MCP_MAX_CONNECTIONS=8, a flood of idle
// connections to the MCP listener neither stops the metrics listener nor
// keeps out a fresh health probe or an authorized call: each new
// connection makes room by closing the longest idle one, so the count
// stays at the bound.
func TestConnectionFlood(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env := testEnv(t, as)
	env["MCP_MAX_CONNECTIONS"] = "8"
	env["MCP_MAX_CONNECTIONS_PER_IP"] = "8" // every test client is 127.0.0.1
	env["METRICS_ADDR"] = "127.0.0.1:0"
	s := startServe(t, env)
	require.NotEmpty(t, s.metricsAddr)

	dialIdle(t, s.addr, 8+40)

	// The metrics listener answers, and says the bound held. A dial
	// completes in the kernel before the server accepts it, so the
	// evictions are counted a moment after the last dial returns.
	var scrape string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		scrape = string(b)
		evicted, _ := seriesValue(scrape, `crm_mcp_connections_closed_by_limit_total{action="evicted"}`)
		return err == nil && resp.StatusCode == http.StatusOK && evicted >= 40
	}, 10*time.Second, 20*time.Millisecond, "the metrics listener answers and counts the evictions")
	assert.LessOrEqual(t, metricValue(t, scrape, "crm_mcp_connections_open"), 8.0)

	// A health probe and an authorized call on fresh connections get in.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	hz, err := client.Get(s.url("/healthz"))
	require.NoError(t, err)
	hz.Body.Close()
	assert.Equal(t, http.StatusOK, hz.StatusCode)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := connect(ctx, s.url("/mcp"), as.Mint(as.Claims("alice", testResource, "crm.contacts.read")))
	require.NoError(t, err)
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts"})
	require.NoError(t, err)
	assert.False(t, res.IsError)
}

// serveLimited serves HTTP on a loopback listener under a connLimiter of
// max connections, maxPerSource per source: GET /hold is held until the
// test ends, anything else answered at once. closed hears what the
// limiter closes.
func serveLimited(t *testing.T, max, maxPerSource int) (lim *connLimiter, ln net.Listener, closed chan string) {
	t.Helper()
	closed = make(chan string, 10)
	lim = newConnLimiter(max, maxPerSource, func(a string) { closed <- a })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	release := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				<-release
			}
		}),
		ConnState: lim.ConnState,
	}
	go srv.Serve(lim.Listener(ln))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return lim, ln, closed
}

// TestConnLimiterRefusesWhenNoneIdle: when every connection is busy, a new
// one is accepted and closed at once, without a read.
func TestConnLimiterRefusesWhenNoneIdle(t *testing.T) {
	lim, ln, closed := serveLimited(t, 2, 2)

	for range 2 { // two requests in progress
		c := dialIdle(t, ln.Addr().String(), 1)[0]
		_, err := io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return busyConns(lim) == 2 }, 5*time.Second, 5*time.Millisecond)

	c := dialIdle(t, ln.Addr().String(), 1)[0]
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "closed at once")
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, 2, lim.Open())
	assert.Equal(t, "refused", <-closed)
	assert.Empty(t, closed, "nothing evicted")
}

// busyConns is the number of connections lim counts that are not idle.
func busyConns(lim *connLimiter) int {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	return lim.open - lim.idle.Len()
}

// TestConnLimiterBoundsEachSource: one source holding connections that
// cannot be evicted (requests in progress: a body sent slowly, a call
// waiting on a push) gets no more than its share, and another source is
// still served. Loopback is a source like any other.
func TestConnLimiterBoundsEachSource(t *testing.T) {
	lim, ln, closed := serveLimited(t, 4, 2)

	// 127.0.0.2 holds a request in progress on each of four connections.
	flood := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	var held []net.Conn
	for range 4 {
		c, err := flood.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		_, err = io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		held = append(held, c)
		// Each is accepted and read before the next, so that the first
		// two are busy, not idle, when the others arrive.
		require.Eventually(t, func() bool { return busyConns(lim) == min(len(held), 2) && len(closed) == max(len(held)-2, 0) },
			5*time.Second, 5*time.Millisecond)
	}
	assert.Equal(t, 2, lim.Open(), "the source holds its share, no more")
	assert.Equal(t, "refused", <-closed)
	assert.Equal(t, "refused", <-closed)

	// 127.0.0.1 is served.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + ln.Addr().String() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestConnLimiterEvictsLongestIdle: a connection that served a request
// and is idle again is the most recently idle, not the one that connected
// first; at a source's bound its own longest idle makes room.
func TestConnLimiterEvictsLongestIdle(t *testing.T) {
	var actions []string
	lim := newConnLimiter(3, 2, func(a string) { actions = append(actions, a) })
	a, b := lim.admit(sourceConn(1)), lim.admit(sourceConn(1))
	other := lim.admit(sourceConn(2))
	lim.ConnState(a, http.StateActive)
	lim.ConnState(a, http.StateIdle) // a is now idle more recently than b
	c := lim.admit(sourceConn(1))    // source 1 is at its bound: b goes
	require.NotNil(t, c)
	assert.Equal(t, []string{"evicted"}, actions)
	assert.False(t, b.counted, "b evicted")
	assert.True(t, a.counted && other.counted && c.counted)
	assert.Equal(t, 3, lim.Open())

	lim.ConnState(b, http.StateIdle) // a late state change of the evicted one
	assert.Equal(t, 3, lim.idle.Len())
	d := lim.admit(sourceConn(3)) // overall bound: other, the longest idle, goes
	require.NotNil(t, d)
	assert.False(t, other.counted, "the longest idle evicted")
	assert.Equal(t, 3, lim.Open())
	assert.NoError(t, d.Close())
	assert.NoError(t, d.Close())
	assert.Equal(t, 2, lim.Open(), "closed twice, forgotten once")
	assert.Len(t, lim.sources, 1)
}

func TestDerivedConnections(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{256, 16},
		{1024, 768},
		{65536, 16384},
		{1 << 20, 16384},
	} {
		assert.Equal(t, tt.want, derivedConnections(tt.nofile), "RLIMIT_NOFILE %d", tt.nofile)
	}
}
