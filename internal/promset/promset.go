// Package promset registers Prometheus collectors that belong together (a
// DB's, a Writer's, a cache's) and unregisters them together when their
// owner closes, so that its name can be used again.
package promset

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Set is collectors registered together on one Registerer. The zero Set
// holds nothing; a nil *Set's Unregister does nothing.
type Set struct {
	mu         sync.Mutex // Shutdown and Close may both unregister
	reg        prometheus.Registerer
	collectors []prometheus.Collector
}

// Register registers every collector, or none: on the first error it
// unregisters those already registered and returns the error.
func (s *Set) Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	s.mu.Lock()
	s.reg, s.collectors = reg, cs
	s.mu.Unlock()
	return nil
}

// Unregister unregisters what Register registered; it can be called again.
func (s *Set) Unregister() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.collectors {
		s.reg.Unregister(c)
	}
	s.collectors = nil
}
