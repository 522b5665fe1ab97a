// Command testreport reads `go test -json` on standard input and prints
// what a person needs from a run of ./test: one line per package (as go
// test prints it), the output of every failing test and of every build
// failure, the tests that skipped with their reason, and a closing count.
//
//	go test -json ./... | go run ./internal/testreport
//
// It exits 1 when a test, a package or a build failed, or when the input
// held no test result at all, so that a pipeline with pipefail fails as
// go test itself would.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of test2json's output (go doc test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string
}

// maxSkips bounds the skipped tests listed by name; the rest are counted.
const maxSkips = 30

func main() {
	summary := flag.String("summary", "", "a file whose text is printed before the skipped tests and the closing count")
	flag.Parse()
	r := report(os.Stdin, os.Stdout, *summary)
	if !r.ok() {
		os.Exit(1)
	}
}

type result struct {
	passed, failed, skipped int
	failedPackages          []string
	skips                   []string
}

func (r result) ok() bool {
	return r.failed == 0 && len(r.failedPackages) == 0 && r.passed+r.skipped > 0
}

func report(in io.Reader, out io.Writer, summaryFile string) result {
	var r result
	// Output is kept per test until the test ends: printed if it failed,
	// its last "--- SKIP" reason kept if it skipped, dropped otherwise.
	outputs := map[string][]string{}
	build := map[string][]string{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// go test writes some errors (a package that does not compile
			// with -json before Go 1.24, a setup failure) as plain text.
			fmt.Fprintln(out, sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			build[e.ImportPath] = append(build[e.ImportPath], e.Output)
		case "build-fail":
			fmt.Fprint(out, strings.Join(build[e.ImportPath], ""))
			delete(build, e.ImportPath)
		case "output":
			if e.Test != "" {
				outputs[key] = append(outputs[key], e.Output)
				continue
			}
			// Package-level lines: go test's own "ok"/"FAIL" summary line
			// and whatever a package printed outside any test.
			if e.Output == "PASS\n" || e.Output == "FAIL\n" || strings.HasPrefix(e.Output, "coverage:") {
				continue
			}
			fmt.Fprint(out, e.Output)
		case "pass", "fail", "skip":
			if e.Test == "" {
				if e.Action == "fail" {
					r.failedPackages = append(r.failedPackages, e.Package)
				}
				continue
			}
			switch e.Action {
			case "pass":
				r.passed++
			case "fail":
				r.failed++
				fmt.Fprint(out, strings.Join(outputs[key], ""))
			case "skip":
				r.skipped++
				r.skips = append(r.skips, e.Package+" "+e.Test+": "+skipReason(outputs[key]))
			}
			delete(outputs, key)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testreport: reading go test's output: %v\n", err)
		r.failedPackages = append(r.failedPackages, "(input)")
	}

	fmt.Fprintln(out)
	if summaryFile != "" {
		b, err := os.ReadFile(summaryFile)
		if err != nil {
			fmt.Fprintf(out, "testreport: %v\n", err)
		}
		out.Write(b)
	}
	if len(r.skips) > 0 {
		sort.Strings(r.skips)
		fmt.Fprintf(out, "skipped tests (%d):\n", len(r.skips))
		for i, s := range r.skips {
			if i == maxSkips {
				fmt.Fprintf(out, "  ... and %d more\n", len(r.skips)-maxSkips)
				break
			}
			fmt.Fprintf(out, "  %s\n", s)
		}
	}
	if len(r.failedPackages) > 0 {
		fmt.Fprintf(out, "failed packages: %s\n", strings.Join(r.failedPackages, " "))
	}
	if r.passed+r.failed+r.skipped == 0 {
		fmt.Fprintln(out, "no test ran")
	}
	// The closing line, in the plain form CI reads: tests and subtests.
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	return r
}

// logLine is a line a test logged (t.Log, t.Skip): "    file_test.go:12: message".
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)

// skipReason is the message of a skipped test: the last line it logged,
// which is t.Skip's.
func skipReason(lines []string) string {
	reason := "(no reason given)"
	for _, l := range lines {
		if m := logLine.FindStringSubmatch(strings.TrimRight(l, "\n")); m != nil {
			reason = m[1]
		}
	}
	return reason
}
