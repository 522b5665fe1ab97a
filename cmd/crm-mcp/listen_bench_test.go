package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// BenchmarkListenFlood is the attack of issue 16, finding 1, against the
// real binary: one token with NO scopes tries 5,000 subscriptions/listen
// streams, 100 at a time, holding each one the server keeps open, and the
// server process's own RSS, goroutines (go_goroutines from its metrics)
// and open descriptors (/proc/<pid>/fd) are read once all were tried:
//   - session: on one legacy (2025-11-25) session;
//   - stateless: MCP_STATELESS=true, as 2026-07-28 requests.
//
// held counts the streams still open when measured, refused the attempts
// answered 429; the log line also counts those acknowledged and ended.
//
// Run: go test ./cmd/crm-mcp -run XXX -bench BenchmarkListenFlood -benchtime 1x
func BenchmarkListenFlood(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "crm-mcp")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for _, stateless := range []bool{false, true} {
		name := map[bool]string{false: "session", true: "stateless"}[stateless]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				rss, goroutines, fds, held, refused := listenFlood(b, bin, stateless, 5000, 100)
				b.ReportMetric(rss, "MB-RSS")
				b.ReportMetric(goroutines, "goroutines")
				b.ReportMetric(fds, "fds")
				b.ReportMetric(float64(held), "held")
				b.ReportMetric(float64(refused), "refused")
			}
		})
	}
}

func listenFlood(b *testing.B, bin string, stateless bool, n, concurrency int) (rss, goroutines, fds float64, held, refused int) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	dir := b.TempDir()
	cmd := exec.Command(bin, "serve")
	// LOG_LEVEL=info: the addresses are logged at info.
	cmd.Env = []string{
		"MCP_LISTEN_ADDR=127.0.0.1:0", "METRICS_ADDR=127.0.0.1:0",
		"MCP_RESOURCE_URL=" + testResource, "DUO_ISSUER=" + as.Issuer(),
		"CRM_DB_PATH=" + filepath.Join(dir, "crm.db"), "AUDIT_LOG_PATH=" + filepath.Join(dir, "audit.log"),
		"STEPUP_MODE=off", "LOG_LEVEL=info", "MCP_STATELESS=" + strconv.FormatBool(stateless),
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr, metricsAddr := serverAddrs(b, stderr)
	go io.Copy(io.Discard, stderr)
	endpoint := "http://" + addr + "/mcp"
	token := as.Mint(as.Claims("mallory", testResource)) // no scopes

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: concurrency}}
	post := func(ctx context.Context, body string, headers ...string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", endpoint, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		return client.Do(req)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var headers []string
	meta := ""
	if stateless {
		headers = []string{"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen"}
		meta = `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"flood","version":"1"}}`
	} else {
		resp, err := post(ctx, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"flood","version":"1"}}}`)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("initialize: %v %v", err, resp)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		headers = []string{"Mcp-Session-Id", resp.Header.Get("Mcp-Session-Id"), "MCP-Protocol-Version", "2025-11-25"}
		resp, err = post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, headers...)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}

	var mu sync.Mutex
	var open []io.Closer
	var ended, other int
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"promptsListChanged":true,"resourcesListChanged":true}%s}}`, i+2, meta)
			resp, err := post(ctx, body, headers...)
			if err != nil {
				return
			}
			if resp.StatusCode == http.StatusTooManyRequests {
				mu.Lock()
				refused++
				mu.Unlock()
			}
			if resp.StatusCode != http.StatusOK {
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				mu.Lock()
				if other++; other == 1 && resp.StatusCode != http.StatusTooManyRequests {
					b.Logf("first refusal: %d %s", resp.StatusCode, msg)
				}
				mu.Unlock()
				resp.Body.Close()
				return
			}
			// Read up to the acknowledgement; a server that ends the
			// stream there is done, one that keeps it open is held open.
			r := bufio.NewReader(resp.Body)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					resp.Body.Close()
					return
				}
				if strings.Contains(line, "notifications/subscriptions/acknowledged") {
					break
				}
			}
			done := make(chan struct{})
			go func() { io.Copy(io.Discard, r); close(done) }()
			select {
			case <-done: // ended with its result
				resp.Body.Close()
				mu.Lock()
				ended++
				mu.Unlock()
			case <-time.After(500 * time.Millisecond):
				mu.Lock()
				open = append(open, resp.Body)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Second) // let the server settle
	held = len(open)
	rss = procRSS(b, cmd.Process.Pid)
	goroutines = scrapeGauge(b, "http://"+metricsAddr+"/metrics", "go_goroutines")
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	fds = float64(len(entries))
	b.Logf("%d listen attempts: %d acknowledged and ended, %d held open, %d refused with 429, %d other answers: RSS %.1f MB, %.0f goroutines, %.0f open descriptors", n, ended, held, refused, other-refused, rss, goroutines, fds)
	for _, c := range open {
		c.Close()
	}
	return rss, goroutines, fds, held, refused
}

// serverAddrs reads the MCP and metrics addresses from the server's JSON
// log.
func serverAddrs(b *testing.B, stderr io.Reader) (addr, metricsAddr string) {
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line.Msg {
		case "serving metrics":
			metricsAddr = line.Addr
		case "listening":
			return line.Addr, metricsAddr
		}
	}
	b.Fatal("the server exited before listening")
	return "", ""
}

// procRSS is a process's resident set in MB.
func procRSS(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// scrapeGauge reads an unlabelled series from a Prometheus scrape.
func scrapeGauge(b *testing.B, url, series string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	b.Fatalf("no %s in the scrape", series)
	return 0
}
