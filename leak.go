package pgkit

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// leakDetector finds connections held longer than Config.LeakThreshold
// (HikariCP's leakDetectionThreshold): an Acquire never released, a Begin
// never committed or rolled back, Rows never closed. It captures the
// acquiring stack at each checkout (the cost of turning it on) and scans the
// checked-out connections a few times per threshold in one goroutine that
// Close stops.
type leakDetector struct {
	t         *tracer
	threshold time.Duration

	mu   sync.Mutex
	held map[*connState]struct{}

	stop chan struct{}
	done chan struct{}
}

// leakState is a connection's part in leak detection.
type leakState struct {
	mu     sync.Mutex
	stack  [32]uintptr
	depth  int
	leaked bool
}

func newLeakDetector(t *tracer, threshold time.Duration) *leakDetector {
	d := &leakDetector{t: t, threshold: threshold, held: make(map[*connState]struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	go d.run(min(max(threshold/4, 10*time.Millisecond), 5*time.Second))
	return d
}

func (d *leakDetector) acquired(cs *connState) {
	cs.leak.mu.Lock()
	// Skip runtime.Callers, acquired and TraceAcquireEnd; pgxpool's and pgkit's
	// own frames stay, so the stack reads like a panic's.
	cs.leak.depth = runtime.Callers(3, cs.leak.stack[:])
	cs.leak.leaked = false
	cs.leak.mu.Unlock()
	d.mu.Lock()
	d.held[cs] = struct{}{}
	d.mu.Unlock()
}

func (d *leakDetector) released(cs *connState, held time.Duration) {
	d.mu.Lock()
	delete(d.held, cs)
	d.mu.Unlock()
	cs.leak.mu.Lock()
	wasLeaked := cs.leak.leaked
	cs.leak.leaked = false
	cs.leak.mu.Unlock()
	if wasLeaked {
		d.t.leaked.Add(-1)
		d.t.logger.LogAttrs(context.Background(), slog.LevelInfo, "pgkit: leaked connection returned to the pool",
			slog.Duration("held", held))
	}
}

func (d *leakDetector) run(period time.Duration) {
	defer close(d.done)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case now := <-tick.C:
			d.scan(now)
		}
	}
}

// scan reports each connection that has just passed the threshold.
func (d *leakDetector) scan(now time.Time) {
	d.mu.Lock()
	held := make([]*connState, 0, len(d.held))
	for cs := range d.held {
		held = append(held, cs)
	}
	d.mu.Unlock()
	for _, cs := range held {
		since := time.Duration(now.UnixNano() - cs.acquiredAt.Load())
		if since < d.threshold {
			continue
		}
		cs.leak.mu.Lock()
		if cs.leak.leaked {
			cs.leak.mu.Unlock()
			continue
		}
		cs.leak.leaked = true
		stack := formatStack(cs.leak.stack[:cs.leak.depth])
		cs.leak.mu.Unlock()

		d.t.leaked.Add(1)
		if d.t.m != nil {
			d.t.m.leaks.Inc()
		}
		d.t.logger.LogAttrs(context.Background(), slog.LevelWarn, "pgkit: connection held past LeakThreshold, possible leak",
			slog.Duration("held", since), slog.Duration("threshold", d.threshold), slog.String("acquired_at", stack))
	}
}

func (d *leakDetector) close() {
	close(d.stop)
	<-d.done
}

func formatStack(pcs []uintptr) string {
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		b.WriteString(f.Function)
		b.WriteString("\n\t")
		b.WriteString(f.File)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(f.Line))
		b.WriteByte('\n')
		if !more {
			break
		}
	}
	return b.String()
}
