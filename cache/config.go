package cache

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults New applies to Config fields left at zero.
const (
	// DefaultTTL is Config.TTL's default: how long a loaded value stays in
	// the store.
	DefaultTTL = 5 * time.Minute
	// DefaultTTLJitterDivisor gives Config.TTLJitter's default: TTL divided
	// by it (TTL/10).
	DefaultTTLJitterDivisor = 10
	// DefaultStoreTimeout is Config.StoreTimeout's default: the bound of
	// each store call.
	DefaultStoreTimeout = 50 * time.Millisecond
	// DefaultStoreBackoff is Config.StoreBackoff's default: how long the
	// store is left alone after a failure.
	DefaultStoreBackoff = time.Second
	// DefaultLoadTimeout is Config.LoadTimeout's default: the bound of a
	// load.
	DefaultLoadTimeout = 30 * time.Second
	// DefaultLocalMaxEntries is Config.LocalMaxEntries's default: the bound
	// of the local tier.
	DefaultLocalMaxEntries = 10_000
	// DefaultErrorLogInterval is Config.ErrorLogInterval's default: the
	// least time between two log lines about store failures.
	DefaultErrorLogInterval = time.Minute
)

// Config configures New. Every field's zero value means its default;
// durations that can be switched off take pgkit.Disabled.
type Config struct {
	// Name names the cache: the "cache" label of its metrics, the key
	// space it uses in its Store (every store key is Name, ':', then the
	// cache key, with ':' and '\' in Name escaped), and its log lines.
	// Required. Two caches with different Names can share one Store and one
	// Registerer; two with the same Name on one Registerer are refused.
	Name string
	// TTL is how long a loaded value stays in the store. Default 5m.
	TTL time.Duration
	// TTLJitter adds a random extra lifetime in [0, TTLJitter] to each
	// entry, so that entries loaded together do not all expire (and reload)
	// together. Default TTL/10 (TTL/DefaultTTLJitterDivisor);
	// pgkit.Disabled: none.
	TTLJitter time.Duration
	// Codec encodes values for the store. Default JSONCodec.
	Codec Codec
	// StoreTimeout bounds each call to the store (a Get, a Set, a Delete).
	// A store that errors or does not answer in time is treated as a miss:
	// GetOrLoad loads from the database and returns the value, and the
	// failure is counted and logged (at most once per ErrorLogInterval),
	// never returned. Default 50ms; pgkit.Disabled leaves only the caller's
	// deadline (and LoadTimeout, for a lookup that the caller who started
	// it gave up and that others still wait for). A *MemoryStore never
	// blocks and gets no timeout.
	StoreTimeout time.Duration
	// StoreBackoff: after a store call fails, GetOrLoad leaves the store
	// alone for this long and loads directly (each such call counts as an
	// error), so that an outage costs a request nothing rather than up to
	// StoreTimeout; then the next call tries the store again. Deletes always
	// try the store. Default 1s; pgkit.Disabled tries the store on every
	// call.
	StoreBackoff time.Duration
	// LoadTimeout bounds a load. A load runs detached from the cancellation
	// of the caller that started it, so that the callers waiting for the
	// same key are not failed when that one gives up; each caller still
	// stops waiting when its own context ends. Default 30s; pgkit.Disabled:
	// no bound but the load's own.
	LoadTimeout time.Duration
	// LocalTTL, when positive, puts a small in-memory tier in front of the
	// store: values found in (or written to) the store are kept in this
	// process for LocalTTL, and read from there without a round trip.
	// Delete and InvalidateOnCommit clear this process's tier; other
	// processes' tiers keep a deleted value for up to LocalTTL, so keep it
	// short (a second or a few). Default 0: no local tier.
	LocalTTL time.Duration
	// LocalMaxEntries bounds the local tier. Default 10,000.
	LocalMaxEntries int
	// NotFound, with NegativeTTL, caches "not found": when load returns an
	// error that matches NotFound (errors.Is), a marker is stored for
	// NegativeTTL, and until it expires GetOrLoad returns NotFound without
	// loading. Any other load error is returned and never cached. Default:
	// nil (nothing is cached for an error).
	NotFound error
	// NegativeTTL is how long a "not found" marker stays. Required with
	// NotFound, and only with it.
	NegativeTTL time.Duration
	// Registerer receives the cache's metrics (pgkit_cache_*), with a const
	// label cache=<Name>. Default nil: no metrics.
	Registerer prometheus.Registerer
	// Logger receives store failures at Warn, at most once per
	// ErrorLogInterval, with the number of failures since the last line.
	// Keys and values are never logged. Default nil: no logs.
	Logger *slog.Logger
	// ErrorLogInterval is the least time between two log lines about store
	// failures. Default 1m.
	ErrorLogInterval time.Duration
}

// setDefaults checks cfg and fills in the defaults of the fields left at
// zero.
func (cfg *Config) setDefaults() error {
	if cfg.Name == "" {
		return configError("Name", "required: it labels the metrics and separates this cache's keys from other caches' in a shared store")
	}
	// In order: TTLJitter's default is read from TTL once TTL has its own.
	durations := []struct {
		field  string
		v      *time.Duration
		def    time.Duration // 0 for TTLJitter, whose default depends on TTL
		canOff bool
	}{
		{"TTL", &cfg.TTL, DefaultTTL, false},
		{"TTLJitter", &cfg.TTLJitter, 0, true},
		{"StoreTimeout", &cfg.StoreTimeout, DefaultStoreTimeout, true},
		{"StoreBackoff", &cfg.StoreBackoff, DefaultStoreBackoff, true},
		{"LoadTimeout", &cfg.LoadTimeout, DefaultLoadTimeout, true},
		{"LocalTTL", &cfg.LocalTTL, 0, false},
		{"NegativeTTL", &cfg.NegativeTTL, 0, false},
		{"ErrorLogInterval", &cfg.ErrorLogInterval, DefaultErrorLogInterval, false},
	}
	for _, d := range durations {
		switch {
		case *d.v == pgkit.Disabled && d.canOff:
			*d.v = 0
		case *d.v == pgkit.Disabled:
			return configError(d.field, "cannot be turned off (pgkit.Disabled); set a positive duration, or leave it zero for the default")
		case *d.v < 0:
			reason := fmt.Sprintf("must not be negative (got %s)", *d.v)
			if d.canOff {
				reason += "; use pgkit.Disabled to turn it off"
			}
			return configError(d.field, reason)
		case *d.v == 0 && d.v == &cfg.TTLJitter:
			*d.v = cfg.TTL / DefaultTTLJitterDivisor
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.LocalMaxEntries < 0 {
		return configError("LocalMaxEntries", fmt.Sprintf("must not be negative (got %d)", cfg.LocalMaxEntries))
	}
	if cfg.LocalMaxEntries == 0 {
		cfg.LocalMaxEntries = DefaultLocalMaxEntries
	}
	if (cfg.NotFound == nil) != (cfg.NegativeTTL == 0) {
		if cfg.NotFound == nil {
			return configError("NegativeTTL", "set without NotFound: name the error that means \"not found\"")
		}
		return configError("NotFound", "set without NegativeTTL: say how long \"not found\" is cached")
	}
	if cfg.Codec == nil {
		cfg.Codec = JSONCodec{}
	}
	return nil
}

// configError is the *pgkit.ConfigError for a Config field.
func configError(field, reason string) error {
	return &pgkit.ConfigError{Struct: "cache.Config", Field: field, Reason: reason}
}
