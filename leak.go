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
// pool's connections a few times per threshold in one goroutine that Close
// stops. The set of connections changes only when one is opened or closed, so
// a checkout touches nothing shared.
type leakDetector struct {
	obs       *observer
	conns     func() []*connState // the pools' open connections
	threshold time.Duration
	logger    *slog.Logger // a returned leak, at Info
	alerts    *slog.Logger // a leak, at Warn

	scans *ticking
}

// leakState is a connection's part in leak detection.
type leakState struct {
	mu     sync.Mutex
	out    bool // checked out now
	stack  [32]uintptr
	depth  int
	leaked bool
}

func newLeakDetector(obs *observer, conns func() []*connState, threshold time.Duration, logger, alerts *slog.Logger) *leakDetector {
	d := &leakDetector{obs: obs, conns: conns, threshold: threshold, logger: logger, alerts: alerts}
	d.scans = startTicking(min(max(threshold/4, 10*time.Millisecond), 5*time.Second), d.scan)
	return d
}

func (d *leakDetector) acquired(cs *connState) {
	cs.leak.mu.Lock()
	// Skip runtime.Callers, acquired and TraceAcquireEnd; pgxpool's and pgkit's
	// own frames stay, so the stack reads like a panic's.
	cs.leak.depth = runtime.Callers(3, cs.leak.stack[:])
	cs.leak.out = true
	cs.leak.leaked = false
	cs.leak.mu.Unlock()
}

func (d *leakDetector) released(cs *connState, held time.Duration) {
	cs.leak.mu.Lock()
	wasLeaked := cs.leak.leaked
	cs.leak.out, cs.leak.leaked = false, false
	cs.leak.mu.Unlock()
	if wasLeaked {
		d.obs.leakReturned()
		d.logger.LogAttrs(context.Background(), slog.LevelInfo, "pgkit: leaked connection returned to the pool",
			slog.Duration("held", held))
	}
}

// scan reports each connection that has just passed the threshold.
func (d *leakDetector) scan(now int64) {
	for _, cs := range d.conns() {
		cs.leak.mu.Lock()
		// acquiredAt is read under the lock: acquired stores it before it
		// marks the connection out, so the two agree.
		since := time.Duration(now - cs.acquiredAt.Load())
		if !cs.leak.out || cs.leak.leaked || since < d.threshold {
			cs.leak.mu.Unlock()
			continue
		}
		cs.leak.leaked = true
		stack := formatStack(cs.leak.stack[:cs.leak.depth])
		cs.leak.mu.Unlock()

		d.obs.leakFound()
		d.alerts.LogAttrs(context.Background(), slog.LevelWarn, "pgkit: connection held past LeakThreshold, possible leak",
			slog.Duration("held", since), slog.Duration("threshold", d.threshold), slog.String("acquired_at", stack))
	}
}

func (d *leakDetector) close() { d.scans.close() }

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
