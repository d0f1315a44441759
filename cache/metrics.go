package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgkit-dev/pgkit/internal/promset"
	"github.com/prometheus/client_golang/prometheus"
)

// The cache's metrics are registered with a const label
// cache=<Config.Name>, as the pool's are with pool=<pgkit.Config.Name>, so
// caches of different names share a registry.

// cacheResult is the "result" label of pgkit_cache_requests_total.
type cacheResult uint8

const (
	cacheHit cacheResult = iota
	cacheMiss
	cacheError
	numCacheResults
)

var cacheResultNames = [numCacheResults]string{"hit", "miss", "error"}

// Buckets of pgkit_cache_load_duration_seconds: a load is usually one
// query, from a millisecond to past any sane request deadline.
var cacheLoadBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// cacheMetrics are one cache's metrics, children bound once, so that a hit
// costs one atomic add and no allocation. A nil *cacheMetrics (no
// Registerer) does nothing.
type cacheMetrics struct {
	requests     [numCacheResults]prometheus.Counter
	loadDuration prometheus.Histogram
	storeErrors  prometheus.Counter

	set promset.Set // what unregister takes back (Close runs it once)
}

func newCacheMetrics(reg prometheus.Registerer, name string) (*cacheMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"cache": name}, reg)
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgkit_cache_requests_total",
		Help: "Cache.GetOrLoad calls by result: hit (answered by the cache), miss (loaded), error (the store failed or did not answer in time, loaded).",
	}, []string{"result"})
	m := &cacheMetrics{
		loadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgkit_cache_load_duration_seconds",
			Help:    "Time of each load function run on a miss (one per key, however many callers waited for it), errors included.",
			Buckets: cacheLoadBuckets,
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgkit_cache_store_errors_total",
			Help: "Store calls (get, set, delete) that failed or did not answer within cache.Config.StoreTimeout.",
		}),
	}
	for r := range numCacheResults {
		m.requests[r] = requests.WithLabelValues(cacheResultNames[r])
	}
	err := m.set.Register(reg, requests, m.loadDuration, m.storeErrors)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil, configError("Name", fmt.Sprintf(
			"metrics of a cache named %q are already registered on this Registerer; give each cache its own Name (or Close the other first)", name))
	}
	if err != nil {
		return nil, fmt.Errorf("pgkit: registering cache metrics: %w", err)
	}
	return m, nil
}

func (m *cacheMetrics) request(r cacheResult) {
	if m != nil {
		m.requests[r].Inc()
	}
}

func (m *cacheMetrics) observeLoad(d time.Duration) {
	if m != nil {
		m.loadDuration.Observe(d.Seconds())
	}
}

func (m *cacheMetrics) storeError() {
	if m != nil {
		m.storeErrors.Inc()
	}
}

func (m *cacheMetrics) unregister() {
	if m != nil {
		m.set.Unregister()
	}
}
