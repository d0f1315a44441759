// Package benchab runs the two sides of a benchmark comparison, a and b, in
// alternating rounds and reports the metrics internal/benchreport reads.
// Every benchmark of the module that compares two sides goes through AB (or
// Scaled), whatever its package, so that all of them report the same
// metrics under the same names: "<side>-ns/op", "<side>-B/op",
// "<side>-allocs/op" and the ratio "<b>/<a>".
package benchab

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Rounds is how many alternating rounds AB and Scaled split a run into.
// The speed of a machine shared with the database moves by several percent
// within a second; many short rounds let both sides see the same moments.
// For a raw pool against itself (SELECT 1, 64 goroutines, 50,000
// operations a side, on 2 cores) the runs' ratios spread over 0.87–1.05
// with ten rounds (12 runs), and 0.97–1.06 with fifty (18 runs).
const Rounds = 50

// AB runs b.N operations of each side, a and b, from goroutines goroutines,
// in alternating rounds (so that neither side always runs first or on a
// warmer machine), and reports each side's ns/op, B/op and allocs/op and
// the throughput ratio b/a: 1.0 means as fast, 0.97 means 3% slower. It
// returns each side's mean time per operation.
func AB(b *testing.B, goroutines int, nameA string, opA func(context.Context) error, nameB string, opB func(context.Context) error) (perOpA, perOpB time.Duration) {
	return Scaled(b, goroutines, nameA, opA, nameB, 1, opB)
}

// Scaled is AB for sides whose speeds differ by orders of magnitude: side b
// runs scale times as many operations per round as side a, to be measured
// for about as long. The ratio it reports is still per operation: a's time
// per op over b's (how many times faster b is).
func Scaled(b *testing.B, goroutines int, nameA string, opA func(context.Context) error, nameB string, scale int, opB func(context.Context) error) (perOpA, perOpB time.Duration) {
	// Rounds, or one per operation when b.N is smaller (-benchtime 1x for
	// the slowest operations). Which side goes first alternates from one
	// call to the next too, so that with one round per run (-count runs of
	// -benchtime 1x) neither side always goes first; calls are counted per
	// b.N, since the testing package calls a benchmark once with b.N = 1
	// before each run of -benchtime Nx.
	rounds := min(Rounds, b.N)
	first := calls.next(callKey(b.Name(), b.N))
	var elapsed [2]time.Duration
	var allocs, bytes [2]uint64
	var ops [2]int64
	perRound := [2]int{max(b.N/rounds, 1), max(b.N/rounds, 1) * scale}
	sides := [2]func(context.Context) error{opA, opB}
	b.ResetTimer()
	for r := range rounds {
		for i := range 2 {
			s := (first + r + i) % 2
			m := runParallel(b, goroutines, perRound[s], sides[s])
			elapsed[s] += m.elapsed
			allocs[s] += m.allocs
			bytes[s] += m.bytes
			ops[s] += int64(perRound[s])
		}
	}
	b.StopTimer()
	var perOp [2]float64
	for s, name := range []string{nameA, nameB} {
		perOp[s] = float64(elapsed[s].Nanoseconds()) / float64(ops[s])
		b.ReportMetric(perOp[s], name+"-ns/op")
		b.ReportMetric(float64(bytes[s])/float64(ops[s]), name+"-B/op")
		b.ReportMetric(float64(allocs[s])/float64(ops[s]), name+"-allocs/op")
	}
	b.ReportMetric(perOp[0]/perOp[1], nameB+"/"+nameA)
	return time.Duration(perOp[0]), time.Duration(perOp[1])
}

// calls counts the calls of each benchmark (by name) in this process.
var calls = callCounter{n: map[string]int{}}

type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// callKey is what calls counts a call of benchmark name with b.N = n under.
func callKey(name string, n int) string { return fmt.Sprintf("%s/%d", name, n) }

// next returns 0 or 1, alternating on each call with the same name.
func (c *callCounter) next(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[name]++
	return c.n[name] % 2
}

// measured is one runParallel: wall time, and the heap allocations (count
// and bytes) the process made meanwhile.
type measured struct {
	elapsed       time.Duration
	allocs, bytes uint64
}

// runParallel runs op n times from goroutines goroutines and returns the wall
// time and the heap allocations made meanwhile.
func runParallel(b *testing.B, goroutines, n int, op func(context.Context) error) measured {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(ctx); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	return measured{elapsed: d, allocs: after.Mallocs - before.Mallocs, bytes: after.TotalAlloc - before.TotalAlloc}
}
