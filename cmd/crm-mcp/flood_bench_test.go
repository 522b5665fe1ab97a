package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// BenchmarkFlood is the third security review's measurement: crm-mcp serve
// (in-process, stateless, step-up on against the fake Duo, an audit FILE
// so every decision's fsync is real, the log at its default level to
// /dev/null) answers one authorized caller's approved call (get_contact
// of a restricted record: a push, then the grant; a synced decision
// line each time) while floodWorkers clients hammer it: idle, then an
// unauthenticated flood (no token), then an authorized flood of the same
// concurrency (another user's plain list_contacts). It reports the
// caller's median latency in each phase and the floods' rates.
//
//	go test ./cmd/crm-mcp -run XXX -bench BenchmarkFlood -benchtime 1x
func BenchmarkFlood(b *testing.B) {
	const floodWorkers, samples = 8, 300
	as := rstest.NewServer()
	defer as.Close()
	duo := duotest.NewServer()
	defer duo.Close()
	duo.SetDefault(duotest.Approve)
	dir := b.TempDir()
	ca := filepath.Join(dir, "duo-ca.pem")
	if err := os.WriteFile(ca, duo.CACertPEM(), 0o600); err != nil {
		b.Fatal(err)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devNull.Close()
	env := map[string]string{
		"MCP_LISTEN_ADDR": "127.0.0.1:0", "MCP_RESOURCE_URL": testResource, "DUO_ISSUER": as.Issuer(),
		"CRM_DB_PATH": filepath.Join(dir, "crm.db"), "AUDIT_LOG_PATH": filepath.Join(dir, "audit.log"),
		"MCP_STATELESS": "true", "DUO_AUTH_IKEY": duo.IKey(), "DUO_AUTH_SKEY": duo.SKey(),
		"DUO_AUTH_HOST": duo.Host(), "DUO_AUTH_CA_FILE": ca,
	}
	ctx, cancel := context.WithCancel(context.Background())
	listening, done := make(chan string, 1), make(chan int, 1)
	a := &app{environ: env, stdout: devNull, stderr: devNull, listening: func(addr string) { listening <- addr }}
	go func() { done <- a.run(ctx, []string{"serve"}) }()
	var url string
	select {
	case addr := <-listening:
		url = "http://" + addr + "/mcp"
	case <-done:
		b.Fatal("serve exited")
	}
	defer func() { cancel(); <-done }()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	post := func(token, body string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	const approved = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","arguments":{"id":6}}}`
	const plain = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{}}}`
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	alice := as.Mint(as.Claims("alice", testResource, "crm.contacts.read"))
	bob := as.Mint(as.Claims("bob", testResource, "crm.contacts.read"))
	if code, err := post(alice, approved); err != nil || code != http.StatusOK {
		b.Fatalf("the approved call: %d %v", code, err)
	}

	// phase measures alice's call while floodWorkers send flood (if any).
	phase := func(token, body string) (p50 time.Duration, rate float64) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		sent := 0
		for range floodWorkers {
			if body == "" {
				break
			}
			wg.Go(func() {
				n := 0
				for {
					select {
					case <-stop:
						mu.Lock()
						sent += n
						mu.Unlock()
						return
					default:
					}
					if _, err := post(token, body); err == nil {
						n++
					}
				}
			})
		}
		time.Sleep(200 * time.Millisecond) // the flood under way
		start := time.Now()
		lat := make([]time.Duration, 0, samples)
		for range samples {
			t0 := time.Now()
			code, err := post(alice, approved)
			if err != nil || code != http.StatusOK {
				b.Fatalf("the approved call under flood: %d %v", code, err)
			}
			lat = append(lat, time.Since(t0))
		}
		elapsed := time.Since(start)
		close(stop)
		wg.Wait()
		slices.Sort(lat)
		return lat[len(lat)/2], float64(sent) / elapsed.Seconds()
	}
	var idle, anon, authz time.Duration
	var anonRate, authzRate float64
	for b.Loop() {
		idle, _ = phase("", "")
		anon, anonRate = phase("", list)
		authz, authzRate = phase(bob, plain)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(idle), "idle-p50-ms")
	b.ReportMetric(ms(anon), "anon-flood-p50-ms")
	b.ReportMetric(ms(authz), "authz-flood-p50-ms")
	b.ReportMetric(anonRate, "anon-flood-req/s")
	b.ReportMetric(authzRate, "authz-flood-req/s")
	b.ReportMetric(0, "ns/op")
}
