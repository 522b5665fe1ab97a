package resourceserver_test

import (
	"flag"
	"testing"
)

// TestBenchmarksRun runs each benchmark of the package once, so that the
// test command, which runs no benchmarks, keeps them working. Their
// figures come from go test -bench (docs/performance.md).
func TestBenchmarksRun(t *testing.T) {
	runBenchmarksOnce(t, map[string]func(*testing.B){
		"BenchmarkVerify":        BenchmarkVerify,
		"BenchmarkInactiveToken": BenchmarkInactiveToken,
	})
}

// runBenchmarksOnce runs each benchmark with -test.benchtime=1x and fails
// for each that failed.
func runBenchmarksOnce(t *testing.T, benchmarks map[string]func(*testing.B)) {
	bt := flag.Lookup("test.benchtime")
	old := bt.Value.String()
	if err := bt.Value.Set("1x"); err != nil {
		t.Fatal(err)
	}
	defer bt.Value.Set(old)
	for name, bm := range benchmarks {
		if r := testing.Benchmark(bm); r.N == 0 {
			t.Errorf("%s failed: run go test -run XXX -bench '%s$' -benchtime 1x to see why", name, name)
		}
	}
}
