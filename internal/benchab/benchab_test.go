package benchab

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestScaledReports: Scaled reports every metric internal/benchreport reads,
// under the sides' names, runs side b scale times as often as side a, and
// its ratio says which side is faster.
func TestScaledReports(t *testing.T) {
	var slowOps, fastOps atomic.Int64
	slow := func(context.Context) error { slowOps.Add(1); time.Sleep(50 * time.Microsecond); return nil }
	fast := func(context.Context) error { fastOps.Add(1); return nil }
	r := testing.Benchmark(func(b *testing.B) { Scaled(b, 2, "slow", slow, "fast", 10, fast) })
	for _, unit := range []string{"slow-ns/op", "slow-B/op", "slow-allocs/op", "fast-ns/op", "fast-B/op", "fast-allocs/op", "fast/slow"} {
		require.Contains(t, r.Extra, unit)
	}
	require.Positive(t, slowOps.Load())
	require.Equal(t, 10*slowOps.Load(), fastOps.Load(), "side b runs scale times as many operations")
	require.Greater(t, r.Extra["fast/slow"], 1.0, "a's time per op over b's: b is faster")
	require.Greater(t, r.Extra["slow-ns/op"], float64(50*time.Microsecond)/2, "two goroutines sleeping 50µs each: at least 25µs per op")
}

// TestCallsAlternate: which side goes first alternates from one call of a
// benchmark to the next.
func TestCallsAlternate(t *testing.T) {
	c := callCounter{n: map[string]int{}}
	require.Equal(t, []int{1, 0, 1, 0}, []int{c.next("x"), c.next("x"), c.next("x"), c.next("x")})
	require.Equal(t, 1, c.next("y"), "each name counts apart")

	// The testing package calls a benchmark with b.N = 1 before each run of
	// -benchtime Nx: the runs themselves must still alternate.
	var runs []int
	for range 4 {
		c.next(callKey("z", 1))
		runs = append(runs, c.next(callKey("z", 50000)))
	}
	require.Equal(t, []int{1, 0, 1, 0}, runs)
}
