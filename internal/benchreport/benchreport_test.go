package main

import (
	"math"
	"strings"
	"testing"
)

const sample = `date: 2026-11-26T10:00:00Z
go: go1.26.8
goos: linux
cpu: AMD EPYC
BenchmarkSelect1/goroutines=64-2   	   10000	     46353 ns/op	  9.9 pgkit-allocs/op	 21000 pgkit-ns/op	 1.10 pgkit/raw	 23100 raw-ns/op	 9.9 raw-allocs/op
BenchmarkSelect1/goroutines=64-2   	   10000	     46353 ns/op	  9.9 pgkit-allocs/op	 22000 pgkit-ns/op	 0.90 pgkit/raw	 19800 raw-ns/op	 9.9 raw-allocs/op
BenchmarkPoolSize
BenchmarkTracerQuery-2   	  300000	       165.0 ns/op	       0 B/op	       0 allocs/op
--- BENCH: something
PASS
`

func TestParse(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.config["go"]; got != "go1.26.8" {
		t.Errorf("config go = %q", got)
	}
	b := res.benches["BenchmarkSelect1/goroutines=64"]
	if b == nil || len(b.runs) != 2 {
		t.Fatalf("Select1 runs: %+v", b)
	}
	unit, a, bs, ok := b.ratioUnit()
	if !ok || unit != "pgkit/raw" || a != "raw" || bs != "pgkit" {
		t.Errorf("ratioUnit = %q %q %q %v", unit, a, bs, ok)
	}
	if _, _, _, ok := res.benches["BenchmarkTracerQuery"].ratioUnit(); ok {
		t.Error("the tracer benchmark has no ratio")
	}
}

func TestRatioCI(t *testing.T) {
	// The geometric mean of 1.1 and 1/1.1 is 1, and the interval is
	// symmetric in log space.
	e := ratioCI([]float64{1.1, 1 / 1.1})
	if math.Abs(e.mean-1) > 1e-9 || math.Abs(e.lo*e.hi-1) > 1e-9 || e.n != 2 {
		t.Errorf("ratioCI = %+v", e)
	}
	// Constant runs: no spread.
	e = meanCI([]float64{3, 3, 3})
	if e.mean != 3 || e.lo != 3 || e.hi != 3 {
		t.Errorf("meanCI = %+v", e)
	}
	// Known value: mean 2, sd 1, n 4: half width t(3) * 1/2.
	e = meanCI([]float64{1, 2, 2, 3})
	sd := math.Sqrt(2.0 / 3)
	if want := 3.182 * sd / 2; math.Abs((e.hi-e.mean)-want) > 1e-9 {
		t.Errorf("half width %v, want %v", e.hi-e.mean, want)
	}
}

func TestStatus(t *testing.T) {
	for _, c := range []struct {
		e    est
		want string
	}{
		{est{mean: 1, lo: 0.98, hi: 1.02, n: 6}, "**met**"},
		{est{mean: 0.98, lo: 0.95, hi: 1.01, n: 6}, "met on the mean"},
		{est{mean: 0.96, lo: 0.93, hi: 0.99, n: 6}, "**not met** on the mean"},
		{est{mean: 0.9, lo: 0.88, hi: 0.92, n: 6}, "**not met**"},
		{est{}, "not measured"},
	} {
		if got := status(c.e, 0.97); !strings.HasPrefix(got, c.want) {
			t.Errorf("status(%+v) = %q, want %q…", c.e, got, c.want)
		}
	}
}
