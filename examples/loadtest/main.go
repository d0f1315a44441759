// Command loadtest runs two load tests and prints one JSON line
// per result:
//
//	loadtest pool [-database-url URL] [-queries 1000] [-rounds 5] [-compare raw]
//	loadtest ws -url http://127.0.0.1:8080 (-token T | -admin-token A) -database-url URL [-clients 100] [-messages 10]
//
// pool runs N concurrent `SELECT COUNT(*) FROM users` (10,000 users)
// through pgkit, and with -compare raw through a plain pgxpool of the same
// size in the same process, in alternating rounds, and prints the ratio.
// Without -database-url it starts a throwaway PostgreSQL server.
//
// ws connects C WebSocket clients to a running examples/chat, each sending
// M messages, measures acknowledgements and replies, and then checks in the
// database that every acknowledged message was stored: a mismatch exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// errFailed means the run finished and printed its result, which is a
// failure (the exit status says so).
var errFailed = errors.New("the run failed; see its result line")

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: loadtest pool|ws [flags] (-h for the flags)")
	}
	switch args[0] {
	case "pool":
		cfg, err := parsePoolFlags(args[1:])
		if err != nil {
			return err
		}
		return runPool(ctx, cfg, out)
	case "ws":
		cfg, err := parseWSFlags(args[1:])
		if err != nil {
			return err
		}
		return runWS(ctx, cfg, out)
	default:
		return fmt.Errorf("unknown test %q: pool or ws", args[0])
	}
}

// emit prints one result as a JSON line.
func emit(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// percentiles returns p50, p95 and p99 of ds in milliseconds (ds is sorted).
func percentiles(ds []time.Duration) (p50, p95, p99 float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		i = min(max(i, 0), len(ds)-1)
		return round(float64(ds[i]) / float64(time.Millisecond))
	}
	return at(0.50), at(0.95), at(0.99)
}

func round(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}
