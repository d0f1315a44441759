package main

import (
	"fmt"
	"math"
	"strings"
)

// chartList is every chart, in the order the report shows them.
var chartList = []struct{ file, title string }{
	{"pool-throughput.svg", "Pool size: throughput against MaxConns"},
	{"pool-p99-wait.svg", "Pool size: p99 acquire wait against MaxConns"},
	{"bulk-rows.svg", "Bulk writes: rows/s by method"},
	{"chunk-size.svg", "Bulk writes: rows/s by chunk size"},
	{"cache-latency.svg", "Cache: hit latency by tier against the database query"},
	{"ratios.svg", "pgkit against raw: throughput ratios with 95% intervals"},
}

func kFmt(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e3:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v/1e3), ".0") + "k"
	default:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0")
	}
}

func durFmt(ns float64) string {
	return strings.NewReplacer(".00 ", " ", ".0 ", " ").Replace(fmtDur(est{mean: ns, n: 1}))
}

func buildCharts(res *results) map[string]string {
	out := map[string]string{}
	titles := map[string]string{}
	for _, c := range chartList {
		titles[c.file] = c.title
	}

	// Pool size sweep.
	var kitQ, rawQ, kitW, rawW series
	kitQ.name, rawQ.name, kitW.name, rawW.name = "pgkit", "raw pgxpool", "pgkit", "raw pgxpool"
	for _, size := range poolSizes {
		b := res.benches["BenchmarkPoolSize/MaxConns="+size]
		if b == nil {
			b = &bench{}
		}
		kitQ.pts = append(kitQ.pts, meanCI(b.values("pgkit-q/s")))
		rawQ.pts = append(rawQ.pts, meanCI(b.values("raw-q/s")))
		kitW.pts = append(kitW.pts, meanCI(b.values("pgkit-p99-wait-ms")))
		rawW.pts = append(rawW.pts, meanCI(b.values("raw-p99-wait-ms")))
	}
	out["pool-throughput.svg"] = categoryChart(titles["pool-throughput.svg"], "MaxConns (1,000 concurrent COUNT(*) over 10,000 users)", "queries/s", poolSizes, []series{kitQ, rawQ}, false, false, kFmt)
	out["pool-p99-wait.svg"] = categoryChart(titles["pool-p99-wait.svg"], "MaxConns", "p99 acquire wait (ms)", poolSizes, []series{kitW, rawW}, false, false, kFmt)

	// Bulk rows/s by method.
	var labels []string
	base, kit := series{name: "raw form (or row at a time)"}, series{name: "pgkit"}
	for _, s := range bulkSpecs {
		c := compare(res, s)
		labels = append(labels, strings.TrimPrefix(strings.TrimPrefix(s.name, "BenchmarkBulk"), "Benchmark"))
		base.pts = append(base.pts, c.rowsA)
		kit.pts = append(kit.pts, c.rowsB)
	}
	for i, l := range labels {
		labels[i] = strings.Replace(l, "VsRowAtATime", " vs row", 1)
	}
	out["bulk-rows.svg"] = wideCategoryChart(titles["bulk-rows.svg"], "", "rows/s", labels, []series{base, kit}, kFmt)

	// Chunk size.
	ins, upd := series{name: "InsertReturning"}, series{name: "UpdateMany"}
	for _, size := range chunkSizes {
		for _, s := range []*series{&ins, &upd} {
			b := res.benches["BenchmarkChunkSize/"+s.name+"/chunk="+size]
			if b == nil {
				b = &bench{}
			}
			s.pts = append(s.pts, meanCI(b.values("rows/s")))
		}
	}
	out["chunk-size.svg"] = categoryChart(titles["chunk-size.svg"], "ChunkSize (rows per statement; 50,000 rows per call)", "rows/s", chunkSizes, []series{ins, upd}, false, false, kFmt)

	// Cache latency by tier.
	side := func(name, unit string) est {
		if b := res.benches[name]; b != nil {
			return meanCI(b.values(unit))
		}
		return est{}
	}
	pg := side("BenchmarkCacheMemoryHitVsPostgres", "postgres-ns/op")
	if !pg.ok() {
		pg = side("BenchmarkCacheRedisHitVsPostgres", "postgres-ns/op")
	}
	cacheRows := []row{
		{label: "PostgreSQL dashboard query", v: pg, color: 1},
		{label: "Redis hit through pgkit", v: side("BenchmarkCacheRedisHitVsPostgres", "redis-hit-ns/op"), color: 0},
		{label: "raw go-redis GET (no decode)", v: side("BenchmarkCacheRedisHitVsRawGET/raw-GET", "raw-ns/op"), color: 3},
		{label: "memory hit through pgkit", v: side("BenchmarkCacheMemoryHitVsPostgres", "memory-hit-ns/op"), color: 0},
		{label: "memory hit, 64 goroutines (per op)", v: side("BenchmarkCacheMemoryHitParallel", "cache-ns/op"), color: 2},
	}
	out["cache-latency.svg"] = rowChart(titles["cache-latency.svg"], "time per operation (log scale)", cacheRows, true, true, nil, durFmt)

	// Overhead ratios.
	var ratioRows []row
	for _, group := range [][]spec{querySpecs, bulkSpecs, cacheSpecs} {
		for _, s := range group {
			c := compare(res, s)
			if !c.measured || c.ratio.mean > 3 || c.ratio.mean < 0.33 {
				continue // speedups (cache, row at a time) are in their own charts
			}
			t := s.target
			if t > 3 {
				t = 0
			}
			ratioRows = append(ratioRows, row{label: strings.TrimPrefix(s.name, "Benchmark") + " (" + c.sideB + "/" + c.sideA + ")", v: c.ratio, target: t})
		}
	}
	for _, size := range poolSizes {
		if b := res.benches["BenchmarkPoolSize/MaxConns="+size]; b != nil {
			ratioRows = append(ratioRows, row{label: "PoolSize/MaxConns=" + size + " (pgkit/raw)", v: ratioCI(b.values("pgkit/raw"))})
		}
	}
	out["ratios.svg"] = rowChart(titles["ratios.svg"], "throughput ratio (1 = as fast as the raw side; red marks: targets)", ratioRows, false, false, []float64{1}, func(v float64) string { return fmt.Sprintf("%.2f", v) })
	return out
}

// wideCategoryChart is a grouped bar chart whose category labels are long:
// drawn with the labels rotated.
func wideCategoryChart(title, xlabel, ylabel string, xs []string, ss []series, format func(float64) string) string {
	svg := categoryChart(title, xlabel, ylabel, xs, ss, true, false, format)
	// Rotate the category labels (drawn just below the axis) so they do not overlap.
	for _, x := range xs {
		esc := xmlEscape(x)
		i := strings.Index(svg, ">"+esc+"</text>")
		if i < 0 {
			continue
		}
		j := strings.LastIndex(svg[:i], "<text ")
		var px, py float64
		if _, err := fmt.Sscanf(svg[j:i], `<text x="%f" y="%f"`, &px, &py); err != nil {
			continue
		}
		svg = svg[:j] + fmt.Sprintf(`<text transform="translate(%.1f,%.1f) rotate(-20)" text-anchor="end" font-size="11"`, px+20, py) + svg[i:]
	}
	return svg
}
