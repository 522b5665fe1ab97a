package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/crm-mcp/crm-mcp/bench/load"
)

// cellStats is one server at one concurrency over the rounds.
type cellStats struct {
	rps, p99ms float64
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

func stats(rs []*load.Result) cellStats {
	var rps, p99 []float64
	for _, r := range rs {
		rps = append(rps, r.Throughput())
		p99 = append(p99, ms(r.Percentile(99)))
	}
	return cellStats{rps: median(rps), p99ms: median(p99)}
}

// writeTable prints the markdown table: req/s and p99 per server and
// concurrency, then crm-mcp's throughput over each peer's.
func writeTable(w io.Writer, o options, servers []*server, results map[string]map[int][]*load.Result, caption string) {
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
		line := []string{tableLabels[s.name]}
		for _, c := range o.concurrency {
			cells[s.name][c] = stats(results[s.name][c])
			line = append(line, fmt.Sprintf("%.0f", cells[s.name][c].rps))
		}
		for _, c := range o.concurrency {
			line = append(line, fmt.Sprintf("%.2f ms", cells[s.name][c].p99ms))
		}
		row(w, line)
	}
	if _, ok := cells[crmMCP]; !ok {
		return
	}
	for _, peer := range []string{goSDK, typeScript} {
		if _, ok := cells[peer]; !ok {
			continue
		}
		line := []string{"ratio crm-mcp / " + peer}
		for _, c := range o.concurrency {
			ratio := "n/a"
			if p := cells[peer][c].rps; p > 0 {
				ratio = fmt.Sprintf("%.2fx", cells[crmMCP][c].rps/p)
			}
			line = append(line, ratio)
		}
		for range o.concurrency {
			line = append(line, "")
		}
		row(w, line)
	}
}

func row(w io.Writer, cells []string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
}
