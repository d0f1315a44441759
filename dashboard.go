package pgkit

import (
	"embed"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed dashboard/index.html dashboard/dashboard.js dashboard/dashboard.css
var dashboardFiles embed.FS

// DefaultDashboardRefresh is how often the dashboard page polls its data.
const DefaultDashboardRefresh = 2 * time.Second

// dashboardCSP lets the page load only its own script, style and data: no
// inline script or style, no third party, no framing.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DashboardOption configures DashboardHandler.
type DashboardOption func(*dashboardConfig)

type dashboardConfig struct {
	refresh time.Duration
	sources []dashboardSource
}

type dashboardSource struct {
	name  string
	stats func() map[string]float64
}

// WithDashboardRefresh sets how often the page polls: default
// DefaultDashboardRefresh (2s); values under 100ms are raised to 100ms.
func WithDashboardRefresh(d time.Duration) DashboardOption {
	return func(c *dashboardConfig) {
		if d > 0 {
			c.refresh = max(d, 100*time.Millisecond)
		}
	}
}

// WithDashboardSource adds a panel named name to the dashboard, filled on
// each poll with the numbers stats returns (stats is called from HTTP
// handlers, so it must be safe for concurrent use; NaN and infinite values
// are left out). Every key is listed with its value, and three are drawn as
// charts:
//
//   - "queued", with "capacity" when present: a queue's depth (a Writer's
//     backlog);
//   - "hits" and "misses" (and "errors" when present): the hit ratio between
//     two polls, hits / (hits + misses + errors);
//   - "hit_ratio" (0 to 1), when "hits" and "misses" are absent.
//
// Keys whose name holds "ratio" are shown as percentages. A cache's
// DashboardStats method (package pgkit/cache) and WithDashboardWriter are
// sources of this kind; anything else with counters can be one:
//
//	pgkit.WithDashboardSource("outbox", func() map[string]float64 {
//		return map[string]float64{"queued": float64(outbox.Len()), "capacity": outboxSize}
//	})
func WithDashboardSource(name string, stats func() map[string]float64) DashboardOption {
	return func(c *dashboardConfig) {
		if stats != nil {
			c.sources = append(c.sources, dashboardSource{name, stats})
		}
	}
}

// WithDashboardWriter shows a background Writer (any *Writer[T]) as a source
// named after WriterStats.Name, with the keys queued, capacity, accepted,
// written, failed and ambiguous.
func WithDashboardWriter(w interface{ Stats() WriterStats }) DashboardOption {
	return func(c *dashboardConfig) {
		if w == nil {
			return
		}
		name := w.Stats().Name
		c.sources = append(c.sources, dashboardSource{name, func() map[string]float64 {
			s := w.Stats()
			return map[string]float64{"queued": float64(s.Queued), "capacity": float64(s.Capacity),
				"accepted": float64(s.Accepted), "written": float64(s.Written), "failed": float64(s.Failed),
				"ambiguous": float64(s.Ambiguous)}
		}})
	}
}

// DashboardHandler serves a live page for operators, like net/http/pprof for
// the database layer: pool connections by state against MaxConns,
// utilization, acquire wait, query rate and p50/p99 latency, the recent slow
// queries with their plans, the sources given as options (caches, writers),
// and the server's own view (DB.ServerView: its top statements, sessions
// long-running, idle in transaction or blocked, unused and duplicate
// indexes, sequential scans, connections). The page is self-contained (no
// CDN) and polls its data every 2s (WithDashboardRefresh). Reading the data
// touches the pool's counters only, never the database; the page reads the
// server's view every fifth poll, which DB.ServerView bounds and caches for
// 5s. Caches and writers are shown when given as options:
//
//	h := pgkit.DashboardHandler(db, pgkit.BearerToken(token),
//		pgkit.WithDashboardSource("dashboard_stats", statsCache.DashboardStats), // a *cache.Cache[T]
//		pgkit.WithDashboardWriter(usageWriter))                                  // a *Writer[T]
//
// Callers for whom authorize returns false, and every caller when authorize
// is nil, get 401 with a JSON error, as from StatsHandler; the check applies
// to every path, page and data. The 401 carries a Basic challenge besides
// the Bearer one, so a browser asks for a user name and password: with
// BearerToken, any user name and the token as the password open the page
// (scripts keep sending "Authorization: Bearer <token>"). The page is sent
// with a strict Content-Security-Policy (its own script, style and data
// only), nosniff and no-store.
//
// Mount it on a path that ends in "/", with or without StripPrefix; the page
// uses relative URLs, so any prefix works (a request for the prefix without
// its "/" is redirected to it):
//
//	mux.Handle("/debug/pgkit/", http.StripPrefix("/debug/pgkit", pgkit.DashboardHandler(db, pgkit.BearerToken(token))))
//
// Paths, relative to the mount point: "" (the page), "dashboard.js",
// "dashboard.css", "server" ({"server": DB.ServerView} or {"server": null,
// "error": why}), and "data", a JSON object other tools may read too; its
// fields (version 2) are stable. Durations are in seconds (keys ending in
// _seconds), timestamps in RFC 3339 (UTC); docs/http.md gives the schema:
//
//	version                       2 (1 had duration_ns in slow_queries, seconds in window, le in buckets)
//	time                          when the data was read
//	pool                          Config.Name
//	refresh_seconds               the page's polling interval
//	metrics                       whether the DB exports Prometheus metrics (Config.Registerer); the
//	                              figures below are pgkit's own and are there either way
//	pool_stats                    PoolStats, as in StatsHandler's pool_stats
//	queries                       totals since Open, summed over every query name and op but prepare (the
//	                              same counts as pgkit_query_duration_seconds): count, errors, canceled, sum_seconds, and buckets, a list of
//	                              {le_seconds, count} with cumulative counts for each finite upper bound (the +Inf
//	                              bucket is count)
//	window                        the change since the data was last read, by any client, at least half a
//	                              refresh earlier (null on the first read): duration_seconds, queries_per_second,
//	                              errors_per_second, p50_seconds and p99_seconds (estimated from the
//	                              buckets like PromQL's histogram_quantile; null without queries),
//	                              acquires_per_second, empty_acquires_per_second, acquire_wait_avg_seconds
//	                              (null without acquires)
//	slow_query_threshold_seconds  Config.SlowQueryThreshold
//	slow_queries                  DB.SlowQueries, newest first, as SlowQuery's JSON (time, role, name, op,
//	                              duration_seconds, sql, rows, sqlstate); the SQL is text, never markup
//	sources                       a list of {name, values}: each WithDashboardSource or WithDashboardWriter,
//	                              in the order given; values is an object of numbers
func DashboardHandler(db *DB, authorize func(*http.Request) bool, opts ...DashboardOption) http.Handler {
	cfg := dashboardConfig{refresh: DefaultDashboardRefresh}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return &dashboard{db: db, authorize: authorize, cfg: cfg}
}

type dashboard struct {
	db        *DB
	authorize func(*http.Request) bool
	cfg       dashboardConfig

	mu      sync.Mutex
	samples []dashSample // oldest first, for the window
}

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if d.authorize == nil || !d.authorize(r) {
		unauthorized(w)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return
	}
	// The last path segment picks the resource, so the handler works with
	// or without StripPrefix.
	switch r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:] {
	case "":
		// Asked for the prefix itself without its final "/" (StripPrefix on
		// an exact path): the page's relative URLs need it.
		if uri, _, _ := strings.Cut(r.RequestURI, "?"); r.URL.Path == "" && uri != "" && !strings.HasSuffix(uri, "/") {
			h.Set("Location", uri[strings.LastIndexByte(uri, '/')+1:]+"/")
			w.WriteHeader(http.StatusFound)
			return
		}
		d.file(w, "index.html", "text/html; charset=utf-8")
	case "dashboard.js":
		d.file(w, "dashboard.js", "text/javascript; charset=utf-8")
	case "dashboard.css":
		d.file(w, "dashboard.css", "text/css; charset=utf-8")
	case "data":
		writeJSON(w, http.StatusOK, d.data(time.Now()))
	case "server":
		body := dashServer{}
		v, err := d.db.ServerView(r.Context())
		if err != nil {
			body.Error = scrubError(err, nil, nil)
		} else {
			body.Server = v
		}
		writeJSON(w, http.StatusOK, body)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}
}

func (d *dashboard) file(w http.ResponseWriter, name, contentType string) {
	b, err := dashboardFiles.ReadFile("dashboard/" + name)
	if err != nil { // cannot happen: the files are embedded
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "missing asset"})
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(b)
}

// dashData is the JSON of the data endpoint; see DashboardHandler.
type dashData struct {
	Version        int              `json:"version"`
	Time           string           `json:"time"`
	Pool           string           `json:"pool"`
	RefreshSeconds float64          `json:"refresh_seconds"`
	Metrics        bool             `json:"metrics"`
	PoolStats      PoolStats        `json:"pool_stats"`
	Queries        *dashQueries     `json:"queries"`
	Window         *dashWindow      `json:"window"`
	SlowThreshold  float64          `json:"slow_query_threshold_seconds"`
	SlowQueries    []SlowQuery      `json:"slow_queries"`
	Sources        []dashSourceData `json:"sources"`
}

// dashServer is the JSON of the server endpoint; see DashboardHandler.
type dashServer struct {
	Server *ServerView `json:"server"`
	Error  string      `json:"error,omitempty"`
}

type dashQueries struct {
	Count      uint64       `json:"count"`
	Errors     uint64       `json:"errors"`
	Canceled   uint64       `json:"canceled"`
	SumSeconds float64      `json:"sum_seconds"`
	Buckets    []dashBucket `json:"buckets"`
}

type dashBucket struct {
	LE    float64 `json:"le_seconds"`
	Count uint64  `json:"count"`
}

type dashWindow struct {
	Seconds               float64  `json:"duration_seconds"`
	QueriesPerSecond      *float64 `json:"queries_per_second"`
	ErrorsPerSecond       *float64 `json:"errors_per_second"`
	P50Seconds            *float64 `json:"p50_seconds"`
	P99Seconds            *float64 `json:"p99_seconds"`
	AcquiresPerSecond     float64  `json:"acquires_per_second"`
	EmptyAcquiresPerSec   float64  `json:"empty_acquires_per_second"`
	AcquireWaitAvgSeconds *float64 `json:"acquire_wait_avg_seconds"`
}

type dashSourceData struct {
	Name   string             `json:"name"`
	Values map[string]float64 `json:"values"`
}

// dashSample is what a read of the data saw, kept to compute the next
// reads' window.
type dashSample struct {
	at      time.Time
	pool    PoolStats
	queries *dashQueries
}

// maxDashSamples bounds the samples kept when many clients poll at once.
const maxDashSamples = 64

func (d *dashboard) data(now time.Time) dashData {
	cur := dashSample{at: now, pool: d.db.PoolStats(), queries: dashQueriesOf(d.db.obs.queries())}
	out := dashData{
		Version:        2,
		Time:           jsonTime(now),
		Pool:           d.db.cfg.Name,
		RefreshSeconds: d.cfg.refresh.Seconds(),
		Metrics:        d.db.cfg.Registerer != nil,
		PoolStats:      cur.pool,
		Queries:        cur.queries,
		SlowThreshold:  d.db.cfg.SlowQueryThreshold.Seconds(),
		SlowQueries:    d.db.SlowQueries(),
		Sources:        make([]dashSourceData, 0, len(d.cfg.sources)),
	}
	if base, ok := d.remember(cur); ok {
		out.Window = window(base, cur)
	}
	for _, s := range d.cfg.sources {
		values := map[string]float64{}
		for k, v := range s.stats() {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				values[k] = v
			}
		}
		out.Sources = append(out.Sources, dashSourceData{s.name, values})
	}
	return out
}

// remember keeps cur and returns the newest earlier sample at least half a
// refresh old, if any.
func (d *dashboard) remember(cur dashSample) (dashSample, bool) {
	minAge := d.cfg.refresh / 2
	d.mu.Lock()
	defer d.mu.Unlock()
	var base dashSample
	found := false
	for i := len(d.samples) - 1; i >= 0; i-- {
		if cur.at.Sub(d.samples[i].at) >= minAge {
			base, found = d.samples[i], true
			break
		}
	}
	d.samples = append(d.samples, cur)
	// Drop the samples that an older-enough newer one makes useless.
	for len(d.samples) > 1 && cur.at.Sub(d.samples[1].at) >= minAge {
		d.samples = d.samples[1:]
	}
	if len(d.samples) > maxDashSamples {
		d.samples = d.samples[len(d.samples)-maxDashSamples:]
	}
	return base, found
}

func window(base, cur dashSample) *dashWindow {
	secs := cur.at.Sub(base.at).Seconds()
	if secs <= 0 {
		return nil
	}
	w := &dashWindow{Seconds: secs}
	acquires := float64(sub(uint64(cur.pool.AcquireCount), uint64(base.pool.AcquireCount)))
	w.AcquiresPerSecond = acquires / secs
	w.EmptyAcquiresPerSec = float64(sub(uint64(cur.pool.EmptyAcquireCount), uint64(base.pool.EmptyAcquireCount))) / secs
	if acquires > 0 {
		wait := max(cur.pool.AcquireWait-base.pool.AcquireWait, 0).Seconds()
		w.AcquireWaitAvgSeconds = ptr(wait / acquires)
	}
	if cur.queries == nil || base.queries == nil {
		return w
	}
	c, b := cur.queries, base.queries
	count := sub(c.Count, b.Count)
	w.QueriesPerSecond = ptr(float64(count) / secs)
	w.ErrorsPerSecond = ptr(float64(sub(c.Errors, b.Errors)) / secs)
	if count > 0 && len(c.Buckets) == len(b.Buckets) {
		delta := make([]dashBucket, len(c.Buckets))
		for i := range delta {
			delta[i] = dashBucket{c.Buckets[i].LE, sub(c.Buckets[i].Count, b.Buckets[i].Count)}
		}
		w.P50Seconds = ptr(histogramQuantile(0.5, delta, count))
		w.P99Seconds = ptr(histogramQuantile(0.99, delta, count))
	}
	return w
}

// sub is a counter's increase, zero if it went back (a reset).
func sub(cur, base uint64) uint64 {
	if cur < base {
		return 0
	}
	return cur - base
}

func ptr(v float64) *float64 { return &v }

// dashQueriesOf is the observer's totals in the data's terms.
func dashQueriesOf(s queriesSnapshot) *dashQueries {
	q := &dashQueries{Count: s.Latency.Count, Errors: s.Errors, Canceled: s.Canceled, SumSeconds: s.Latency.Sum,
		Buckets: make([]dashBucket, len(s.Latency.Bounds))}
	for i, le := range s.Latency.Bounds {
		q.Buckets[i] = dashBucket{LE: le, Count: s.Latency.Cumulative[i]}
	}
	return q
}

// histogramQuantile estimates the q-quantile of total observations from
// cumulative buckets (finite upper bounds, ascending; total is the +Inf
// bucket) as Prometheus' histogram_quantile does: it finds the bucket
// holding the rank and interpolates linearly inside it, taking 0 as the
// lower bound of the first bucket and answering the highest finite bound
// when the rank falls in the +Inf bucket.
func histogramQuantile(q float64, buckets []dashBucket, total uint64) float64 {
	if total == 0 || len(buckets) == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var lower float64
	var below uint64
	for _, b := range buckets {
		if float64(b.Count) >= rank && b.Count > below {
			return lower + (b.LE-lower)*(rank-float64(below))/float64(b.Count-below)
		}
		if b.Count >= below {
			below = b.Count
		}
		lower = b.LE
	}
	return buckets[len(buckets)-1].LE
}
