package tools

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// BenchmarkServe is the path `crm-mcp serve` takes for one call, in one
// process, for profiling it: the production handler behind a real HTTP
// server, with Streamable HTTP sessions (one per worker), step-up on, a
// JSON request log and SQLite, driven in parallel (8 workers on 2 CPUs)
// with list_contacts and no arguments, the comparison's call. ns/op is
// wall time per call at that parallelism; allocs/op include the client's.
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
		StepUp: &StepUp{Guard: guard, Terms: terms, OnWrite: true}})
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
			"Content-Type":  {"application/json"},
			"Accept":        {"application/json, text/event-stream"},
			"Authorization": {"Bearer " + raw},
		}
		post := func(body string) *http.Response {
			req, _ := http.NewRequest("POST", resource, strings.NewReader(body))
			req.Header = header
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return nil
			}
			return resp
		}
		var buf bytes.Buffer
		resp := post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`)
		if resp == nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		header["Mcp-Session-Id"] = []string{resp.Header.Get("Mcp-Session-Id")}
		header["Mcp-Protocol-Version"] = []string{"2025-06-18"}
		resp = post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{}}}`
		for pb.Next() {
			resp := post(call)
			if resp == nil {
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
