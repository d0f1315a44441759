package pgkit

import "time"

// ticking is a goroutine that calls f with the time (nanotime) every period
// until stopped: the watchers of ClientTimeout, AcquireTimeout and
// LeakThreshold. close returns once f has returned for the last time.
type ticking struct {
	stop, done chan struct{}
}

func startTicking(period time.Duration, f func(now int64)) *ticking {
	t := &ticking{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				f(nanotime())
			}
		}
	}()
	return t
}

// close stops t; a nil t (a watcher not started) is fine.
func (t *ticking) close() {
	if t != nil {
		close(t.stop)
		<-t.done
	}
}
