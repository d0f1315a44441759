package pgkit

import "time"

// epoch is the origin of nanotime.
var epoch = time.Now()

// nanotime is the monotonic time since epoch, in nanoseconds: one read of
// the clock where time.Now takes two (the wall clock and the monotonic one).
// The tracer reads the time on every checkout and statement, so it keeps
// its times this way; it is never 0 once the package is loaded.
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// timeAt is the time.Time of a nanotime reading.
func timeAt(n int64) time.Time { return epoch.Add(time.Duration(n - 1)) }
