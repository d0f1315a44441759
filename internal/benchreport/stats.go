package main

import (
	"math"
)

// est is an estimate from n runs: the mean and its 95% confidence interval.
type est struct {
	mean, lo, hi float64
	n            int
}

func (e est) ok() bool { return e.n > 0 }

// t975 is the 0.975 quantile of Student's t distribution for 1..30 degrees
// of freedom.
var t975 = [...]float64{0, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
	2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
	2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}

func tQuantile(df int) float64 {
	if df < len(t975) {
		return t975[df]
	}
	return 1.96
}

// meanCI is the arithmetic mean of xs and its 95% t interval (a single run
// has no interval: lo = hi = mean).
func meanCI(xs []float64) est {
	n := len(xs)
	if n == 0 {
		return est{}
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	m := sum / float64(n)
	if n == 1 {
		return est{mean: m, lo: m, hi: m, n: 1}
	}
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	half := tQuantile(n-1) * math.Sqrt(ss/float64(n-1)/float64(n))
	return est{mean: m, lo: m - half, hi: m + half, n: n}
}

// ratioCI is the geometric mean of the per-run ratios xs and its 95%
// interval, computed on their logarithms: ratios multiply, and a ratio and
// its inverse then get intervals that are each other's inverse.
func ratioCI(xs []float64) est {
	logs := make([]float64, 0, len(xs))
	for _, x := range xs {
		if x > 0 {
			logs = append(logs, math.Log(x))
		}
	}
	e := meanCI(logs)
	if !e.ok() {
		return e
	}
	return est{mean: math.Exp(e.mean), lo: math.Exp(e.lo), hi: math.Exp(e.hi), n: e.n}
}

// scale multiplies an estimate by k.
func (e est) scale(k float64) est { return est{mean: e.mean * k, lo: e.lo * k, hi: e.hi * k, n: e.n} }
