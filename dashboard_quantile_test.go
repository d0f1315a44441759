package pgkit

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDashboardHistogramQuantile(t *testing.T) {
	t.Parallel()
	// 10 observations in (0,1], 10 in (1,2], none in (2,4], 20 above 4.
	buckets := []dashBucket{{1, 10}, {2, 20}, {4, 20}}
	for _, c := range []struct{ q, want float64 }{
		{0, 0},       // the lower bound of the first bucket with observations
		{0.1, 0.4},   // rank 4 of 10 in (0,1]
		{0.25, 1},    // rank 10: the top of the first bucket
		{0.375, 1.5}, // rank 15: half way through (1,2]
		{0.5, 2},     // rank 20: the top of (1,2], not the empty (2,4]
		{0.99, 4},    // in the +Inf bucket: the highest finite bound
		{1, 4},
	} {
		require.InDelta(t, c.want, histogramQuantile(c.q, buckets, 40), 1e-9, "q=%v", c.q)
	}
	// An empty first bucket: interpolation starts at its bound.
	require.InDelta(t, 1.5, histogramQuantile(0.5, []dashBucket{{1, 0}, {2, 10}}, 10), 1e-9)
	require.True(t, math.IsNaN(histogramQuantile(0.5, buckets, 0)), "no observations")
	require.True(t, math.IsNaN(histogramQuantile(0.5, nil, 3)))
}

func TestDashboardWindowBase(t *testing.T) {
	t.Parallel()
	d := &dashboard{cfg: dashboardConfig{refresh: 2 * time.Second}}
	t0 := time.Now()
	at := func(s float64) dashSample { return dashSample{at: t0.Add(time.Duration(s * float64(time.Second)))} }
	base := func(s float64) (float64, bool) {
		b, ok := d.remember(at(s))
		return b.at.Sub(t0).Seconds(), ok
	}

	_, ok := base(0)
	require.False(t, ok, "the first read has nothing to compare with")
	_, ok = base(0.5)
	require.False(t, ok, "a sample under half a refresh old is too recent")
	got, ok := base(1.2)
	require.True(t, ok)
	require.InDelta(t, 0, got, 1e-9)
	got, _ = base(2.0) // two clients: 0.5 and 1.2 are old enough; the newest wins
	require.InDelta(t, 0.5, got, 1e-9)
	got, _ = base(2.1) // 1.2 is under a second old
	require.InDelta(t, 0.5, got, 1e-9)
	got, _ = base(2.3)
	require.InDelta(t, 1.2, got, 1e-9)
	require.InDelta(t, 1.2, d.samples[0].at.Sub(t0).Seconds(), 1e-9, "samples older than the base are dropped")

	// Many clients at once keep a bounded list.
	for i := range 1000 {
		d.remember(at(3 + float64(i)*1e-6))
	}
	require.LessOrEqual(t, len(d.samples), maxDashSamples)
}
