// Command benchreport reads the output of `make bench` (bench/results.txt:
// `go test -bench` runs, -count of each, headed by the machine and versions)
// and prints every pgkit/raw ratio with its 95% interval (-summary), or
// writes BENCHMARKS.md (-md) and SVG charts (-svg dir).
//
// A ratio is measured within each run (the two sides run in alternating
// rounds in one process), so the runs give independent ratios; the report
// gives their geometric mean and a 95% Student t interval over the runs.
//
//	go run ./internal/benchreport -in bench/results.txt -summary
//	go run ./internal/benchreport -in bench/results.txt -md BENCHMARKS.md -svg docs/bench
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

func main() {
	in := flag.String("in", "bench/results.txt", "benchmark output to read")
	summary := flag.Bool("summary", false, "print each ratio with its 95% interval")
	md := flag.String("md", "", "write the Markdown report to this file")
	svgDir := flag.String("svg", "", "write the SVG charts to this directory")
	flag.Parse()
	if err := run(*in, *summary, *md, *svgDir); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(in string, summary bool, md, svgDir string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(res.benches) == 0 {
		return fmt.Errorf("%s: no benchmark results", in)
	}
	if summary {
		printSummary(res)
	}
	if svgDir != "" {
		if err := os.MkdirAll(svgDir, 0o755); err != nil {
			return err
		}
		charts := buildCharts(res)
		names := make([]string, 0, len(charts))
		for name := range charts {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(svgDir, name), []byte(charts[name]), 0o644); err != nil {
				return err
			}
		}
	}
	if md != "" {
		rel := svgDir
		if rel != "" {
			if r, err := filepath.Rel(filepath.Dir(md), svgDir); err == nil {
				rel = filepath.ToSlash(r)
			}
		}
		if err := os.WriteFile(md, []byte(markdown(res, in, rel)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// printSummary prints, for every benchmark with a ratio, both sides' time
// per operation and the ratio's geometric mean with its 95% interval.
func printSummary(res *results) {
	fmt.Printf("%-58s %-32s %12s %12s %9s  %-20s %s\n", "benchmark", "ratio (throughput b/a)", "a time/op", "b time/op", "ratio", "95% interval", "runs")
	for _, name := range res.order {
		b := res.benches[name]
		unit, a, bs, ok := b.ratioUnit()
		if !ok {
			continue
		}
		r := ratioCI(b.values(unit))
		ta, tb := meanCI(b.values(a+"-ns/op")), meanCI(b.values(bs+"-ns/op"))
		fmt.Printf("%-58s %-32s %12s %12s %9s  %-20s %d\n", name, unit, fmtDur(ta), fmtDur(tb), fmtRatio(r.mean), fmtInterval(r), r.n)
	}
}
