package tools

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// BenchmarkServe is the path `crm-mcp serve` takes for one call, in one
// process, for profiling it: the production handler behind a real HTTP
// server, stateless, step-up on, a JSON request log and SQLite, driven in
// parallel (8 workers on 2 CPUs, one user each) with 2026-07-28
// list_contacts requests, the comparison's call. ns/op is wall time per
// call at that parallelism; allocs/op include the client's. govern's
// BenchmarkToolsCall counts the parses of a governed call's arguments.
//
//	go test ./tools -run XXX -bench BenchmarkServe -cpuprofile cpu.out
func BenchmarkServe(b *testing.B) {
	srv := httptest.NewUnstartedServer(nil)
	resource := "http://" + srv.Listener.Addr().String() + "/mcp"
	store, as, rs := benchParts(b, resource)
	duo := duotest.NewServer()
	defer duo.Close()
	quiet := slog.New(slog.DiscardHandler)
	guard, err := stepup.New(stepup.Config{IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	terms, _ := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	// The request log as serve writes it: JSON lines, here to nowhere.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h, err := NewHandler(Config{Store: store, Auth: rs, Logger: log,
		StepUp: &StepUp{Guard: guard, Terms: terms, OnWrite: true},
		Record: func(context.Context, govern.Event) error { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	srv.Config.Handler = h
	srv.Start()
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	var users atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		raw := as.Mint(as.Claims("bench-user-"+strconv.FormatInt(users.Add(1), 10), resource, ScopeContactsRead))
		header := http.Header{
			"Content-Type":         {"application/json"},
			"Accept":               {"application/json, text/event-stream"},
			"Authorization":        {"Bearer " + raw},
			"Mcp-Protocol-Version": {"2026-07-28"},
			"Mcp-Method":           {"tools/call"},
			"Mcp-Name":             {"list_contacts"},
		}
		const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}`
		var buf bytes.Buffer
		for pb.Next() {
			req, _ := http.NewRequest("POST", resource, strings.NewReader(call))
			req.Header = header
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			buf.Reset()
			buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(buf.Bytes(), []byte("Maya Okafor")) {
				b.Errorf("status %d: %.300s", resp.StatusCode, buf.String())
				return
			}
		}
	})
}

func benchParts(b *testing.B, resource string) (*crm.Store, *rstest.Server, *resourceserver.Server) {
	store, err := crm.Open(context.Background(), filepath.Join(b.TempDir(), "crm.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	as := rstest.NewServer()
	b.Cleanup(as.Close)
	as.KID("RS256")
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rs.Close)
	return store, as, rs
}
