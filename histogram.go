package pgkit

import (
	"sync/atomic"
	"time"
)

// histogram counts observations into fixed buckets with two atomic adds
// (the bucket and the sum), where a Prometheus histogram needs more and a
// compare-and-swap loop; its snapshot has Prometheus' shape.
type histogram struct {
	le     []float64       // upper bounds, inclusive, in the snapshot's unit
	bounds []int64         // the same in units of observe
	unit   float64         // an observed unit in the snapshot's unit (1e-9: ns to seconds)
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Int64
}

// init sets the buckets, given in units of scale (seconds for durations
// observed in nanoseconds: scale time.Second).
func (h *histogram) init(buckets []float64, scale time.Duration) {
	h.le, h.unit = buckets, 1/float64(scale)
	h.bounds = make([]int64, len(buckets))
	for i, b := range buckets {
		h.bounds[i] = int64(b * float64(scale))
	}
	h.counts = make([]atomic.Uint64, len(buckets)+1)
}

func (h *histogram) observe(v int64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// count is the number of observations.
func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
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
	for i := range h.counts {
		s.Count += h.counts[i].Load()
		if i < len(h.bounds) {
			s.Cumulative[i] = s.Count
		}
	}
	s.Sum = float64(h.sum.Load()) * h.unit
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
