package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// results is a file of `go test -bench` output: the configuration lines
// ("key: value", in the order met) and every benchmark's runs.
type results struct {
	configKeys []string
	config     map[string]string
	benches    map[string]*bench
	order      []string
}

// bench is one benchmark (its name without the -GOMAXPROCS suffix) and its
// -count runs, each a map from unit to value ("N" is the iteration count).
type bench struct {
	name string
	runs []map[string]float64
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

func parse(r io.Reader) (*results, error) {
	res := &results{config: map[string]string{}, benches: map[string]*bench{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.HasPrefix(text, "Benchmark") {
			f := strings.Fields(text)
			if len(f) < 4 || len(f)%2 != 0 {
				continue // a benchmark's name printed alone (a parent of sub-benchmarks, or chatty output)
			}
			n, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: iterations %q: %w", line, f[1], err)
			}
			run := map[string]float64{"N": n}
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					return nil, fmt.Errorf("line %d: value %q: %w", line, f[i], err)
				}
				run[f[i+1]] = v
			}
			name := procsSuffix.ReplaceAllString(f[0], "")
			b := res.benches[name]
			if b == nil {
				b = &bench{name: name}
				res.benches[name] = b
				res.order = append(res.order, name)
			}
			b.runs = append(b.runs, run)
			continue
		}
		// Configuration lines, as in the Go benchmark format: "key: value",
		// key lower case without spaces.
		if k, v, ok := strings.Cut(text, ": "); ok && k != "" && !strings.ContainsAny(k, " \t") && strings.ToLower(k) == k {
			if _, seen := res.config[k]; !seen {
				res.configKeys = append(res.configKeys, k)
			}
			res.config[k] = strings.TrimSpace(v)
		}
	}
	return res, sc.Err()
}

// values is every run's value of unit, skipping runs without it.
func (b *bench) values(unit string) []float64 {
	var out []float64
	for _, r := range b.runs {
		if v, ok := r[unit]; ok {
			out = append(out, v)
		}
	}
	return out
}

// ratioUnit is the benchmark's ratio metric, "<b>/<a>", and its two sides;
// ok is false when it has none.
func (b *bench) ratioUnit() (unit, sideA, sideB string, ok bool) {
	if len(b.runs) == 0 {
		return "", "", "", false
	}
	for u := range b.runs[0] {
		if !strings.Contains(u, "/") || strings.HasSuffix(u, "/op") || strings.HasSuffix(u, "/s") {
			continue
		}
		sb, sa, _ := strings.Cut(u, "/")
		return u, sa, sb, true
	}
	return "", "", "", false
}
