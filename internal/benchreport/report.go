package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// spec says what a comparison benchmark measures and the target it has.
type spec struct {
	name   string  // benchmark name, sub-benchmarks included
	label  string  // what it compares
	target float64 // minimum ratio (throughput b/a); 0: none
	// maxExtraAllocs, when > 0, is the most allocations per operation side b
	// may add over side a.
	maxExtraAllocs float64
	source         string // where the target comes from
	// known is what is known about the cost behind the ratio, printed
	// under the targets when a target is not clearly met.
	known string
}

const issue, seam, readme = "issue 9", "issue 16", "README"

// select1Known is what is known about SELECT 1's ratio, at 16 goroutines and
// at 64.
const select1Known = "What pgkit adds per query is its tracer callbacks: no allocation (see allocs/op). The calibration rows below take the ratio apart: the server's keeping of pgkit's session settings, whichever client sets them (session-settings: 0.98–1.00 in suites so far); the bound `AcquireTimeout` puts on each wait (acquire-timeout: within about 1%); the rest is pgkit on the client, the same settings on both sides (client-side). The ratio moves with the host CPU, which can change under a running virtual machine (the `cpu:` line Go prints is the one at run time, /proc/cpuinfo the one at boot): suites on an Oxide Turin-like CPU measured 0.984–0.987 at 64 goroutines, and a CPU profile of that row (docs/architecture.md) puts 1.8–1.9% of the client's samples under pgkit's callbacks; suites on an AMD EPYC CPU measured 0.95–0.96 (client-side 0.961–0.964), and the profile 3–3.6%. On the EPYC CPU, A/B runs that took the tracer's callbacks out one group at a time (12 alternating runs each, client-side row) put 1.8–2.6% of the client's throughput in the checkout's acquire context, 0.4–2.3% of it in the timer each waiting checkout reset and stopped; about 1% in the statement callbacks; nothing measurable in the release. That timer is gone since 3180b0a (one goroutine per pool ends the waits past due); the suite that first measured it ran on the Turin-like CPU, and it is not yet measured on the EPYC one."

var querySpecs = []spec{
	{name: "BenchmarkSelect1/goroutines=1", label: "`SELECT 1`, 1 goroutine"},
	{name: "BenchmarkSelect1/goroutines=16", label: "`SELECT 1`, 16 goroutines", target: 0.97, maxExtraAllocs: 2, source: seam,
		known: select1Known},
	{name: "BenchmarkSelect1/goroutines=64", label: "`SELECT 1`, 64 goroutines", target: 0.97, maxExtraAllocs: 2, source: issue,
		known: select1Known},
	{name: "BenchmarkSelect1Calibration/raw-vs-raw", label: "calibration: a raw pool vs another raw pool, `SELECT 1`, 64 goroutines (the method's own spread)"},
	{name: "BenchmarkSelect1Calibration/session-settings", label: "calibration: a raw pool vs one with pgkit's session settings (`statement_timeout`, …), `SELECT 1`, 64 goroutines"},
	{name: "BenchmarkSelect1Calibration/client-side", label: "what pgkit costs on the client: a raw pool with pgkit's session settings vs pgkit, `SELECT 1`, 64 goroutines"},
	{name: "BenchmarkSelect1Calibration/acquire-timeout", label: "what `AcquireTimeout` costs when every checkout waits: pgkit with it `Disabled` vs pgkit, `SELECT 1`, 64 goroutines"},
	{name: "BenchmarkCountUsers/goroutines=1", label: "`SELECT COUNT(*) FROM users` (10,000), 1 goroutine"},
	{name: "BenchmarkCountUsers/goroutines=16", label: "`SELECT COUNT(*) FROM users`, 16 goroutines"},
	{name: "BenchmarkCountUsers/goroutines=64", label: "`SELECT COUNT(*) FROM users`, 64 goroutines", target: 0.97, maxExtraAllocs: 2, source: issue,
		known: "The same fixed cost as for SELECT 1 on a query ten times longer."},
	{name: "BenchmarkInTx", label: "BEGIN; SELECT 1; COMMIT, 16 goroutines: `InTx`+`WithRetry` vs `pgx.BeginFunc`", target: 0.97, source: readme,
		known: "Both sides run on the same pool and tracer; what differs is InTx's own work (options, the retry loop, its Tx, the transaction metrics: 4 allocations). Runs of its own on the day of this suite measured 0.938 [0.892, 0.986] (12 runs), 0.943 [0.900, 0.988] without `WithRetry`, 0.964 with the sides swapped, and the same at the code before `AcquireTimeout`'s timer per wait (0.936 against 0.932, alternating); suites on other days measured 0.98–1.06. CPU profiles of each side alone put the same client time in a transaction within their spread, so where the rest goes is not yet found"},
	{name: "BenchmarkLeakDetection", label: "`SELECT 1`, 64 goroutines: leak detection on vs off"},
}

var bulkSpecs = []spec{
	{name: "BenchmarkBulkCopyInsert", label: "`CopyInsert` vs `CopyFrom` + `CopyFromSlice`", target: 0.95, source: issue,
		known: "Both sides send one COPY; pgkit reads the struct fields through its cached mapping instead of a hand-written closure."},
	{name: "BenchmarkBulkInsertReturning", label: "`InsertReturning` vs hand-built `INSERT … unnest … RETURNING`", target: 0.95, source: issue},
	{name: "BenchmarkBulkUpdateMany", label: "`UpdateMany` vs hand-built `UPDATE … FROM unnest`", target: 0.97, source: seam,
		known: "At the default chunk (10,000 rows) both sides send one statement of the same shape and allocate the same (about 19,550 allocations per 10,000 rows), and a CPU profile shows the same client time on both sides. Each operation leaves 10,000 dead tuples, so autovacuum runs during the benchmark and slows whichever side is running at the time: the benchmark runs 30 operations a side to average it out (10 gave intervals about ±5% wide)"},
	{name: "BenchmarkBulkUpsertMany", label: "`UpsertMany` vs hand-built `INSERT … ON CONFLICT DO UPDATE`", target: 0.95, source: issue,
		known: "One statement of the same shape on both sides; like UpdateMany, each operation leaves 10,000 dead tuples for autovacuum."},
	{name: "BenchmarkBulkInsertReturningVsRowAtATime", label: "`InsertReturning` vs one `INSERT … RETURNING` per row", target: 10, source: readme,
		known: "The ratio is the per-row side's round-trip cost against the bulk side's CPU cost, so it moves with the machine more than any other: 12.4× [11.3×, 13.5×] in the suite run of an AMD EPYC machine where one `INSERT … RETURNING` in the transaction took about 165 µs, about 4.4× on an Intel Xeon one where it took 65–90 µs (the bulk side's rows/s are in the table below). On a machine busy with other work the CPU-bound bulk side also slows more than the latency-bound per-row side."},
	{name: "BenchmarkBulkUpdateManyVsRowAtATime", label: "`UpdateMany` vs one `UPDATE` per row", target: 10, source: readme,
		known: "As for InsertReturning: the ratio is the per-row side's round-trip cost, which varies most with the machine and its load (15.7× on the AMD EPYC machine, about 4.5× on the Intel Xeon one)."},
	{name: "BenchmarkWriter", label: "`Writer`, 50 producers × 2,000 rows, vs one `CopyFrom` of 100,000", target: 0.8, source: readme,
		known: "The writer does more work than one CopyFrom of a ready slice: 50 producers hand rows over a channel, and it copies them in batches (5,000 rows) of several COPY statements. It also allocates more per operation (see B/op)."},
}

var cacheSpecs = []spec{
	{name: "BenchmarkCacheMemoryHitVsPostgres", label: "memory hit vs the dashboard query", target: 1000, source: issue},
	{name: "BenchmarkCacheRedisHitVsPostgres", label: "Redis hit vs the dashboard query", target: 10, source: issue},
	{name: "BenchmarkCacheRedisHitVsRawGET/raw-GET", label: "Redis hit vs a raw go-redis `GET`", target: 1 / 1.2, source: readme + " (≤ 1.2× the time)",
		known: "A hit does more than a bare GET: it bounds the call with a `StoreTimeout` context (about 0.7 µs, 5 allocations) and shares the lookup with concurrent callers of the key (3 allocations). It does not decode: the value is copied from the hit before, which fetched the same bytes. Against a GET that also decodes (`raw-GET+json`), the hit does less work."},
	{name: "BenchmarkCacheRedisHitVsRawGET/raw-GET+json", label: "Redis hit vs raw `GET` + `json.Unmarshal`"},
	{name: "BenchmarkCacheMemoryHitParallel", label: "memory hit, 64 goroutines, vs store `Get` + `json.Unmarshal`"},
	// internal/peerbench, a module of its own.
	{name: "BenchmarkCacheRedisHitVsGoRedisCache", label: "Redis hit vs go-redis/cache's `Once` hit (msgpack), a 200-byte struct, one key", target: 1, source: seam,
		known: "A pgkit hit that fetches the bytes an earlier hit decoded copies that value instead of decoding it again (a struct with no slice, map or pointer inside, encoded in up to 4 KiB; 128 such values are kept, by their bytes); go-redis/cache decodes msgpack on every hit. What pgkit adds is the `StoreTimeout` bound (a context with a timer of its own, 5 allocations) and the shared lookup (3 allocations). The row below is the same hit on keys whose bytes were not decoded lately."},
	{name: "BenchmarkCacheRedisHitVsGoRedisCacheManyKeys", label: "the same, 1,000 keys in turn: every hit decodes (`encoding/json` against msgpack)"},
}

// pgBouncerSpecs compare deployments, not pgkit with raw pgx: they have no
// targets.
var pgBouncerSpecs = []spec{
	{name: "BenchmarkPgBouncer/vs-direct", label: "read, 64 goroutines: direct (prepared statements) vs through PgBouncer"},
	{name: "BenchmarkPgBouncer/vs-direct-exec", label: "read, 64 goroutines: direct in `Exec` mode too vs through PgBouncer (PgBouncer's hop alone)"},
	{name: "BenchmarkPgBouncer/tx", label: "`InTx` with the read, 64 goroutines: direct vs through PgBouncer"},
	{name: "BenchmarkPgBouncer/exec-mode", label: "read through PgBouncer: `Exec` (pgkit's choice) vs `CacheDescribe`"},
	{name: "BenchmarkPgBouncer/exec-mode-bulk", label: "`UpdateMany` of 10,000 rows through PgBouncer: `Exec` vs `CacheDescribe`"},
}

var poolSizes = []string{"4", "8", "16", "32", "50", "150"}
var chunkSizes = []string{"500", "1000", "5000", "10000", "50000"}

// comparison is a spec's measurements.
type comparison struct {
	spec
	sideA, sideB         string
	ratio                est
	runs                 []float64 // each run's ratio
	nsA, nsB             est
	allocsA, allocsB     est
	bytesA, bytesB       est
	rowsA, rowsB         est
	measured, hasRatioAB bool
}

func compare(res *results, s spec) comparison {
	c := comparison{spec: s}
	b := res.benches[s.name]
	if b == nil {
		return c
	}
	unit, a, bs, ok := b.ratioUnit()
	if !ok {
		return c
	}
	c.measured, c.sideA, c.sideB = true, a, bs
	c.runs = b.values(unit)
	c.ratio = ratioCI(c.runs)
	c.nsA, c.nsB = meanCI(b.values(a+"-ns/op")), meanCI(b.values(bs+"-ns/op"))
	c.allocsA, c.allocsB = meanCI(b.values(a+"-allocs/op")), meanCI(b.values(bs+"-allocs/op"))
	c.bytesA, c.bytesB = meanCI(b.values(a+"-B/op")), meanCI(b.values(bs+"-B/op"))
	c.rowsA, c.rowsB = meanCI(b.values(a+"-rows/s")), meanCI(b.values(bs+"-rows/s"))
	return c
}

// status says whether the target is met, and how surely.
func status(e est, target float64) string {
	switch {
	case !e.ok():
		return "not measured"
	case e.lo >= target:
		return "**met**"
	case e.mean >= target:
		return "met on the mean; the 95% interval reaches below"
	case e.hi >= target:
		return "**not met** on the mean; the 95% interval reaches the target"
	default:
		return "**not met**"
	}
}

func fmtDur(e est) string {
	if !e.ok() {
		return "–"
	}
	ns := e.mean
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.2f s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.0f ns", ns)
	}
}

func fmtRatio(v float64) string {
	switch {
	case v >= 100:
		return group(math.Round(v)) + "×"
	case v >= 10:
		return fmt.Sprintf("%.1f×", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func fmtInterval(e est) string {
	if e.n < 2 {
		return "(one run)"
	}
	return "[" + fmtRatio(e.lo) + ", " + fmtRatio(e.hi) + "]"
}

// group formats v without decimals and with thousands separators.
func group(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func fmtNum(e est) string {
	if !e.ok() {
		return "–"
	}
	if e.mean < 100 {
		return fmt.Sprintf("%.1f", e.mean)
	}
	return group(e.mean)
}

func fmtRows(e est) string {
	if !e.ok() {
		return "–"
	}
	return fmt.Sprintf("%.1f k", e.mean/1e3)
}

func fmtMeanCI(e est, f func(float64) string) string {
	if !e.ok() {
		return "–"
	}
	if e.n < 2 {
		return f(e.mean)
	}
	return fmt.Sprintf("%s [%s, %s]", f(e.mean), f(e.lo), f(e.hi))
}

// fmtRuns lists each run's ratio, so that an outlier shows.
func fmtRuns(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		if x >= 100 {
			parts[i] = group(x)
		} else if x >= 10 {
			parts[i] = fmt.Sprintf("%.1f", x)
		} else {
			parts[i] = fmt.Sprintf("%.2f", x)
		}
	}
	return strings.Join(parts, " ")
}

// outliers returns the indexes of the runs whose ratio is more than 25% away
// from the median of the runs (in log terms), and the estimate without them;
// ok is false when there are none, or too few runs are left.
func outliers(xs []float64) (idx []int, without est, ok bool) {
	if len(xs) < 4 {
		return nil, est{}, false
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	med := (sorted[(len(xs)-1)/2] + sorted[len(xs)/2]) / 2
	var keep []float64
	for i, x := range xs {
		if math.Abs(math.Log(x/med)) > math.Log(1.25) {
			idx = append(idx, i)
		} else {
			keep = append(keep, x)
		}
	}
	if len(idx) == 0 || len(idx) > len(xs)/3 || len(keep) < 3 { // no outliers, or too many to call them that
		return nil, est{}, false
	}
	return idx, ratioCI(keep), true
}
