package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// cellStats is one server at one concurrency over the rounds.
type cellStats struct {
	rps, p99ms float64
	cpuUS      float64 // server CPU µs per call; 0 when not measured
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func stats(rs []cellResult) cellStats {
	var rps, p99, cpu []float64
	for _, r := range rs {
		rps = append(rps, r.Throughput())
		p99 = append(p99, ms(r.Percentile(99)))
		if r.cpuPerCall >= 0 {
			cpu = append(cpu, float64(r.cpuPerCall.Nanoseconds())/1000)
		}
	}
	st := cellStats{rps: median(rps), p99ms: median(p99)}
	if len(cpu) == len(rs) {
		st.cpuUS = median(cpu)
	}
	return st
}

// writeTable prints the markdown table: req/s and p99 per server and
// concurrency, then crm-mcp's throughput over each peer's.
func writeTable(w io.Writer, o options, servers []*server, results map[string]map[int][]cellResult, caption string) {
	fmt.Fprintf(w, "%s\n\n", caption)
	head := []string{"server"}
	for _, c := range o.concurrency {
		head = append(head, fmt.Sprintf("c=%d req/s", c))
	}
	for _, c := range o.concurrency {
		head = append(head, fmt.Sprintf("c=%d p99", c))
	}
	row(w, head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = "---"
	}
	row(w, sep)
	cells := map[string]map[int]cellStats{}
	for _, s := range servers {
		cells[s.name] = map[int]cellStats{}
		line := []string{s.label()}
		for _, c := range o.concurrency {
			cells[s.name][c] = stats(results[s.name][c])
			line = append(line, fmt.Sprintf("%.0f", cells[s.name][c].rps))
		}
		for _, c := range o.concurrency {
			line = append(line, fmt.Sprintf("%.2f ms", cells[s.name][c].p99ms))
		}
		row(w, line)
	}
	ratios(w, o, cells, func(crm, peer cellStats) (float64, bool) { return crm.rps / peer.rps, peer.rps > 0 }, len(o.concurrency))

	// CPU per call depends far less than req/s on what else the machine
	// runs, so it is the figure to trust on a shared machine.
	fmt.Fprintf(w, "\nServer CPU time (user+system, all threads) per call over the measured windows, median of the rounds; "+
		"the ratios are calls per CPU second, crm-mcp over the peer:\n\n")
	head = []string{"server"}
	for _, c := range o.concurrency {
		head = append(head, fmt.Sprintf("c=%d CPU/call", c))
	}
	row(w, head)
	row(w, sep[:len(head)])
	for _, s := range servers {
		line := []string{s.label()}
		for _, c := range o.concurrency {
			if us := cells[s.name][c].cpuUS; us > 0 {
				line = append(line, fmt.Sprintf("%.0f µs", us))
			} else {
				line = append(line, "n/a")
			}
		}
		row(w, line)
	}
	ratios(w, o, cells, func(crm, peer cellStats) (float64, bool) {
		return peer.cpuUS / crm.cpuUS, crm.cpuUS > 0 && peer.cpuUS > 0
	}, 0)
}

// ratios prints a row per peer of ratio(crm-mcp, peer) at each
// concurrency, then pad empty cells.
func ratios(w io.Writer, o options, cells map[string]map[int]cellStats, ratio func(crm, peer cellStats) (float64, bool), pad int) {
	if _, ok := cells[crmMCP]; !ok {
		return
	}
	for _, peer := range []string{goSDK, typeScript} {
		if _, ok := cells[peer]; !ok {
			continue
		}
		line := []string{"ratio crm-mcp / " + peer}
		for _, c := range o.concurrency {
			text := "n/a"
			if r, ok := ratio(cells[crmMCP][c], cells[peer][c]); ok {
				text = fmt.Sprintf("%.2fx", r)
			}
			line = append(line, text)
		}
		for range pad {
			line = append(line, "")
		}
		row(w, line)
	}
}

func row(w io.Writer, cells []string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
}
