package pgkit

import (
	"sync/atomic"
	"time"
)

// histogram counts observations into fixed buckets with two atomic adds
// (the bucket and the sum), where a Prometheus histogram needs more and a
// compare-and-swap loop; its snapshot has Prometheus' shape.
//
// Its counters are one array: the sum, a count kept beside the observations
// (extra: a statement's rows, the Acquires begun), then the buckets. Every
// core's observations write to the same few histograms, so each cache line
// they write is handed from core to core; in one array, the sum, the extra
// and the first buckets (where a short statement falls) share a line.
type histogram struct {
	le     []float64       // upper bounds, inclusive, in the snapshot's unit
	bounds []int64         // the same in units of observe
	unit   float64         // an observed unit in the snapshot's unit (1e-9: ns to seconds)
	cells  []atomic.Uint64 // [cellSum], [cellExtra], then per bucket, not cumulative; the last is +Inf
}

const (
	cellSum   = 0
	cellExtra = 1
	cellFirst = 2 // the first bucket's
)

// init sets the buckets, given in units of scale (seconds for durations
// observed in nanoseconds: scale time.Second).
func (h *histogram) init(buckets []float64, scale time.Duration) {
	h.le, h.unit = buckets, 1/float64(scale)
	h.bounds = make([]int64, len(buckets))
	for i, b := range buckets {
		h.bounds[i] = int64(b * float64(scale))
	}
	h.cells = make([]atomic.Uint64, cellFirst+len(buckets)+1)
}

// observe counts v (not negative), and adds extra beside it.
func (h *histogram) observe(v int64, extra uint64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.cells[cellFirst+i].Add(1)
	h.cells[cellSum].Add(uint64(v))
	if extra != 0 {
		h.cells[cellExtra].Add(extra)
	}
}

// addExtra adds n to the count kept beside the observations.
func (h *histogram) addExtra(n uint64) { h.cells[cellExtra].Add(n) }

// extra is the count kept beside the observations.
func (h *histogram) extra() uint64 { return h.cells[cellExtra].Load() }

// count is the number of observations.
func (h *histogram) count() uint64 {
	var n uint64
	for i := cellFirst; i < len(h.cells); i++ {
		n += h.cells[i].Load()
	}
	return n
}

// histSnapshot is a histogram read at one moment: cumulative counts per
// finite upper bound (the +Inf bucket is Count), and the sum.
type histSnapshot struct {
	Bounds     []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
}

func (h *histogram) snapshot() histSnapshot {
	s := histSnapshot{Bounds: h.le, Cumulative: make([]uint64, len(h.bounds))}
	for i := range len(h.bounds) + 1 {
		s.Count += h.cells[cellFirst+i].Load()
		if i < len(h.bounds) {
			s.Cumulative[i] = s.Count
		}
	}
	s.Sum = float64(h.cells[cellSum].Load()) * h.unit
	return s
}

// add sums other into s (same buckets).
func (s *histSnapshot) add(other histSnapshot) {
	if s.Bounds == nil {
		s.Bounds = other.Bounds
		s.Cumulative = make([]uint64, len(other.Cumulative))
	}
	for i := range s.Cumulative {
		s.Cumulative[i] += other.Cumulative[i]
	}
	s.Count += other.Count
	s.Sum += other.Sum
}
