package pgkit

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Overflow is what Writer.Write does when the queue is full.
type Overflow int

const (
	// OverflowBlock waits for room, as long as Write's context allows (the
	// default).
	OverflowBlock Overflow = iota
	// OverflowFail returns ErrQueueFull at once.
	OverflowFail
)

// Defaults NewWriter applies to WriterConfig fields left at zero.
const (
	// DefaultWriterBatchSize: BenchmarkWriter (50 producers) reached 0.79 of
	// a raw COPY's rate with batches of 1000 and 0.90 with 5000; each COPY
	// costs pgx a round trip to describe the table.
	DefaultWriterBatchSize     = 5000
	DefaultWriterFlushInterval = 200 * time.Millisecond
	// DefaultWriterQueueBatches is QueueSize's default in batches:
	// QueueSize = DefaultWriterQueueBatches × BatchSize.
	DefaultWriterQueueBatches = 10
	DefaultWriterRetryFor     = time.Minute
)

// WriterConfig configures NewWriter. Zero fields take their defaults.
type WriterConfig[T any] struct {
	// Table is where items go. Required.
	Table string
	// Name labels the writer's metrics ("writer" label) and logs. Default:
	// Table.
	Name string
	// BatchSize is the most items written in one statement. Default 5000
	// (DefaultWriterBatchSize).
	BatchSize int
	// FlushInterval is the longest an item waits in the queue before its
	// batch is written, however small. Default 200ms.
	FlushInterval time.Duration
	// QueueSize bounds the items accepted and not yet written (or handed to
	// OnError): those waiting in the queue and those of the batch being
	// written, so memory is bounded. Default 10 × BatchSize.
	QueueSize int
	// Overflow says what Write does when QueueSize items are accepted and
	// not yet written. Default OverflowBlock.
	Overflow Overflow
	// OnError receives items the database refused for good (a constraint
	// violation: the batch is split to isolate them, the good items are
	// written) and items left unwritten when Close gives up, with the error.
	// Default: log them at Error with their count, through the DB's Logger,
	// else slog.Default(); never a silent drop.
	OnError func(items []T, err error)
	// OnAmbiguous receives items whose batch's COMMIT was sent and whose
	// answer was lost (the connection broke, the server stopped answering),
	// when the server could not tell within RetryFor whether it committed:
	// they may be in the table or not, so they are neither counted written
	// nor given to OnError. The writer reads each batch's transaction id
	// before COMMIT and asks pg_xact_status afterwards, so this happens only
	// when the server stays out of reach. Default: log them at Error, as
	// OnError's default does.
	OnAmbiguous func(items []T, err error)
	// DedupeKey names a unique column: batches are then written with
	// INSERT ... ON CONFLICT (DedupeKey) DO NOTHING, so a batch retried after
	// an ambiguous failure cannot write a row twice. Default: none, batches
	// are written with COPY (fastest; a retry after a connection lost in the
	// middle of a COPY could write it twice).
	DedupeKey string
	// RetryFor is how long a batch is retried after transient failures
	// (connection lost, server restarting, serialization failure, deadlock)
	// before its items go to OnError. Close's context can end it sooner.
	// Default 1m.
	RetryFor time.Duration
}

// setDefaults refuses what NewWriter cannot honour, naming the field, and
// fills the zero fields with their defaults. The table and DedupeKey are
// checked against the database and T by NewWriter.
func (cfg *WriterConfig[T]) setDefaults(db *DB) error {
	if cfg.Table == "" {
		return writerConfigError("Table", "required")
	}
	if err := notNegative("WriterConfig", cfgField{"BatchSize", int64(cfg.BatchSize)}, cfgField{"QueueSize", int64(cfg.QueueSize)},
		cfgField{"FlushInterval", int64(cfg.FlushInterval)}, cfgField{"RetryFor", int64(cfg.RetryFor)}); err != nil {
		return err
	}
	if cfg.Overflow != OverflowBlock && cfg.Overflow != OverflowFail {
		return writerConfigError("Overflow", fmt.Sprintf("unknown value %d: use OverflowBlock or OverflowFail", cfg.Overflow))
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Table
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultWriterBatchSize
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultWriterFlushInterval
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultWriterQueueBatches * cfg.BatchSize
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = DefaultWriterRetryFor
	}
	name := cfg.Name
	if cfg.OnError == nil {
		cfg.OnError = func(items []T, err error) {
			db.cfg.alerts.LogAttrs(context.Background(), slog.LevelError, "pgkit: writer could not write items",
				slog.String("writer", name), slog.Int("items", len(items)), slog.String("error", logError(err)))
		}
	}
	if cfg.OnAmbiguous == nil {
		cfg.OnAmbiguous = func(items []T, err error) {
			db.cfg.alerts.LogAttrs(context.Background(), slog.LevelError, "pgkit: writer lost the answer to a COMMIT; these items may or may not be written",
				slog.String("writer", name), slog.Int("items", len(items)), slog.String("error", logError(err)))
		}
	}
	return nil
}

func writerConfigError(field, reason string) error {
	return &ConfigError{Struct: "WriterConfig", Field: field, Reason: reason}
}
