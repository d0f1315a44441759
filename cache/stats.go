package cache

// Stats are a Cache's counters since New.
type Stats struct {
	// Hits are GetOrLoad calls answered from the cache, without a load
	// ("not found" markers included).
	Hits uint64
	// LocalHits are the Hits answered by the local tier.
	LocalHits uint64
	// Misses are GetOrLoad calls that found nothing and loaded (or waited
	// for another caller's load of the same key).
	Misses uint64
	// Errors are GetOrLoad calls whose store lookup failed (error, timeout,
	// or an entry the codec could not decode), or was skipped because the
	// store failed less than StoreBackoff ago, and that loaded instead.
	Errors uint64
	// Loads are calls of a load function: one per key however many callers
	// waited for it.
	Loads uint64
	// LoadErrors are loads that returned an error (or panicked).
	LoadErrors uint64
	// StoreErrors are failed store calls: gets, sets and deletes.
	StoreErrors uint64
	// HitRatio is Hits / (Hits + Misses + Errors); 0 before any call.
	HitRatio float64
}

// Stats returns the cache's counters.
func (c *Cache[T]) Stats() Stats {
	s := Stats{
		Hits:        c.hits.Load(),
		LocalHits:   c.localHits.Load(),
		Misses:      c.misses.Load(),
		Errors:      c.errs.Load(),
		Loads:       c.loads.Load(),
		LoadErrors:  c.loadErrs.Load(),
		StoreErrors: c.storeErrs.Load(),
	}
	if total := s.Hits + s.Misses + s.Errors; total > 0 {
		s.HitRatio = float64(s.Hits) / float64(total)
	}
	return s
}

// DashboardStats returns the cache's counters as a source for pgkit's
// dashboard, with the keys hits, misses, errors, hit_ratio, local_hits,
// loads, load_errors and store_errors; the dashboard draws the hit ratio
// between two polls from hits, misses and errors:
//
//	pgkit.DashboardHandler(db, pgkit.BearerToken(token),
//		pgkit.WithDashboardSource("tenant summaries", summaries.DashboardStats))
func (c *Cache[T]) DashboardStats() map[string]float64 {
	s := c.Stats()
	return map[string]float64{"hits": float64(s.Hits), "misses": float64(s.Misses), "errors": float64(s.Errors),
		"hit_ratio": s.HitRatio, "local_hits": float64(s.LocalHits), "loads": float64(s.Loads),
		"load_errors": float64(s.LoadErrors), "store_errors": float64(s.StoreErrors)}
}
