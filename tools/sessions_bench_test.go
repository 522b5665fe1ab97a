package tools

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// BenchmarkSessionMemory sends initializes from one read-only token, as
// the attack of issue 8 did, in process, and reports the process's RSS
// (and the Go heap in use) idle and after 1,000 and 10,000 of them:
//   - bounded: the defaults (DefaultMaxSessionsPerUser, so this user keeps
//     10 sessions and each initialize beyond closes the oldest);
//   - unbounded: limits too high to matter, which is what main did.
//
// Run: go test ./tools -run XXX -bench BenchmarkSessionMemory -benchtime 1x
// (each run is the 10,000 initializes; about half a minute on 2 cores).
func BenchmarkSessionMemory(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"bounded", func(*Config) {}},
		{"unbounded", func(c *Config) {
			c.MaxSessionsPerUser, c.MaxSessions, c.SessionIdleTimeout = 1<<30, 1<<30, 24*time.Hour
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				h, raw, done := sessionBenchHandler(b, tc.cfg)
				idle, idleHeap := memory()
				initializeMany(b, h, raw, 1000)
				at1k, at1kHeap := memory()
				n1k := countSessions(h)
				initializeMany(b, h, raw, 9000)
				at10k, at10kHeap := memory()
				n10k := countSessions(h)
				b.ReportMetric(idle, "MB-RSS-idle")
				b.ReportMetric(at1k, "MB-RSS-1k")
				b.ReportMetric(at10k, "MB-RSS-10k")
				b.ReportMetric(at10kHeap-idleHeap, "MB-heap-growth-10k")
				b.ReportMetric(float64(n10k), "sessions-10k")
				b.Logf("%s: RSS idle %.1f MB, after 1,000 initializes %.1f MB (%d sessions), after 10,000 %.1f MB (%d sessions); Go heap in use %.1f, %.1f, %.1f MB",
					tc.name, idle, at1k, n1k, at10k, n10k, idleHeap, at1kHeap, at10kHeap)
				done()
			}
		})
	}
}

// sessionBenchHandler is the production handler, stateful, with a warm
// token cache.
func sessionBenchHandler(b *testing.B, tune func(*Config)) (*Handler, string, func()) {
	ctx := context.Background()
	store, err := crm.Open(ctx, filepath.Join(b.TempDir(), "crm.db"))
	if err != nil {
		b.Fatal(err)
	}
	as := rstest.NewServer()
	as.KID("RS256")
	const resource = "http://127.0.0.1:9/mcp"
	quiet := slog.New(slog.DiscardHandler)
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	raw := as.Mint(as.Claims("alice", resource, ScopeContactsRead))
	if _, err := rs.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	cfg := Config{Store: store, Auth: rs, Logger: quiet}
	tune(&cfg)
	h, err := NewHandler(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return h, raw, func() {
		h.Shutdown(ctx)
		rs.Close()
		as.Close()
		store.Close()
	}
}

func initializeMany(b *testing.B, h *Handler, raw string, n int) {
	const body = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"flood","version":"1"}}}`
	for range n {
		r := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+raw)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Header().Get("Mcp-Session-Id") == "" {
			b.Fatalf("initialize: %d %.200s", w.Code, w.Body.String())
		}
	}
}

func countSessions(h *Handler) int {
	n := 0
	for range h.server.Sessions() {
		n++
	}
	return n
}

// memory returns the process's resident set and the Go heap in use, in
// MB, after a collection that returns what it can to the OS.
func memory() (rss, heap float64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapInuse) / (1 << 20)
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1, heap // not Linux: RSS unknown
	}
	fields := strings.Fields(string(statm))
	if len(fields) < 2 {
		return -1, heap
	}
	pages, _ := strconv.ParseFloat(fields[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20), heap
}
