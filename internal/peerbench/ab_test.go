package peerbench

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// benchAB runs b.N operations of each side, one goroutine, in up to ten
// alternating rounds (so that neither side always runs first or on a
// warmer machine), and reports each side's ns/op, B/op and allocs/op and
// the throughput ratio "<nameB>/<nameA>": 1.0 means as fast, 0.97 means 3%
// slower. It is the root package's benchAB (bench_test.go) for one
// goroutine, under the same metric names.
func benchAB(b *testing.B, nameA string, opA func(context.Context) error, nameB string, opB func(context.Context) error) {
	rounds := min(10, b.N)
	first := benchCalls.next(b.Name())
	perRound := max(b.N/rounds, 1)
	sides := [2]func(context.Context) error{opA, opB}
	var elapsed [2]time.Duration
	var allocs, bytes [2]uint64
	var ops [2]int64
	b.ResetTimer()
	for r := range rounds {
		for i := range 2 {
			s := (first + r + i) % 2
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			for range perRound {
				if err := sides[s](context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			elapsed[s] += time.Since(start)
			runtime.ReadMemStats(&after)
			allocs[s] += after.Mallocs - before.Mallocs
			bytes[s] += after.TotalAlloc - before.TotalAlloc
			ops[s] += int64(perRound)
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
}

// benchCalls counts the calls of each benchmark (by name) in this process,
// so that which side goes first alternates from one run to the next.
var benchCalls = callCounter{n: map[string]int{}}

type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// next returns 0 or 1, alternating on each call with the same name.
func (c *callCounter) next(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[name]++
	return c.n[name] % 2
}
