package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
)

// usageMeter adds up the tokens and cost of replies in memory and writes
// them to usage_records in bulk, every interval: per tenant, one
// transaction that locks the records it changes (SELECT ... FOR UPDATE),
// adds the deltas and writes them back with one pgkit.UpdateMany. Locking
// first makes it correct with several instances of the service. A failed
// flush keeps its deltas for the next one; a crash loses at most one
// interval of usage (Shutdown flushes).
type usageMeter struct {
	db       *pgkit.DB
	writer   interface{ Flush(context.Context) error }
	cache    *cache.Cache[dashboardStats]
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]map[int64]usageDelta // tenant -> usage record id -> delta

	stop chan struct{}
	done chan struct{}
}

type usageDelta struct {
	tokens int64
	cost   float64
}

// usageRow is what UpdateMany writes.
type usageRow struct {
	ID         int64     `db:"id"`
	TokensUsed int32     `db:"tokens_used"`
	CostCents  float64   `db:"cost_cents"`
	UpdatedAt  time.Time `db:"updated_at"`
}

func newUsageMeter(db *pgkit.DB, writer interface{ Flush(context.Context) error }, c *cache.Cache[dashboardStats],
	interval time.Duration, log *slog.Logger) *usageMeter {
	m := &usageMeter{db: db, writer: writer, cache: c, interval: interval, log: log,
		pending: map[string]map[int64]usageDelta{}, stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

// add records a reply's usage against a conversation's usage record.
func (m *usageMeter) add(tenant string, recordID int64, tokens int32, cost float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.pending[tenant]
	if t == nil {
		t = map[int64]usageDelta{}
		m.pending[tenant] = t
	}
	d := t[recordID]
	d.tokens += int64(tokens)
	d.cost += cost
	t[recordID] = d
}

func (m *usageMeter) run() {
	defer close(m.done)
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), m.interval*10)
			if err := m.flush(ctx); err != nil {
				m.log.Warn("chat: usage flush failed; kept for the next one", slog.String("error", err.Error()))
			}
			cancel()
		}
	}
}

// close stops the meter and flushes what is left.
func (m *usageMeter) close(ctx context.Context) error {
	close(m.stop)
	<-m.done
	return m.flush(ctx)
}

// flush writes the pending deltas. It first waits for the message writer,
// so that when the dashboard entry is invalidated (on commit) the messages
// these replies answer are in the database too.
func (m *usageMeter) flush(ctx context.Context) error {
	m.mu.Lock()
	pending := m.pending
	m.pending = map[string]map[int64]usageDelta{}
	m.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	if err := m.writer.Flush(ctx); err != nil {
		m.restore(pending)
		return err
	}
	for tenant, deltas := range pending {
		if err := m.flushTenant(ctx, tenant, deltas); err != nil {
			m.restore(pending)
			return err
		}
		delete(pending, tenant)
	}
	return nil
}

func (m *usageMeter) flushTenant(ctx context.Context, tenant string, deltas map[int64]usageDelta) error {
	ids := make([]int64, 0, len(deltas))
	for id := range deltas {
		ids = append(ids, id)
	}
	var xid string // the attempt's transaction id, to settle an unknown COMMIT outcome
	err := pgkit.InTx(ctx, m.db, func(tx pgkit.Tx) error {
		rows, err := tx.Query(ctx, `-- name: LockUsage :many
			SELECT id, tokens_used, cost_cents::float8, pg_current_xact_id()::text
			FROM usage_records WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
		if err != nil {
			return err
		}
		now := time.Now()
		var out []usageRow
		for rows.Next() {
			var r usageRow
			if err := rows.Scan(&r.ID, &r.TokensUsed, &r.CostCents, &xid); err != nil {
				rows.Close()
				return err
			}
			d := deltas[r.ID]
			r.TokensUsed += int32(d.tokens)
			r.CostCents += d.cost
			r.UpdatedAt = now
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := pgkit.UpdateMany(pgkit.WithQueryName(ctx, "usage_update"), tx, "usage_records", out, []string{"id"}); err != nil {
			return err
		}
		m.cache.Tenant(tenant).InvalidateOnCommit(tx, dashboardKey)
		return nil
	}, pgkit.WithTenant(tenant), pgkit.WithRetry(pgkit.RetryPolicy{}))
	// A COMMIT whose answer was lost (the flush's deadline, a dropped
	// connection) may have committed: keeping the deltas for the next flush
	// would then count them twice. The server knows.
	var ambiguous *pgkit.AmbiguousCommitError
	if errors.As(err, &ambiguous) && xid != "" {
		if committed, cerr := m.committed(ctx, xid); cerr == nil && committed {
			_ = m.cache.Tenant(tenant).Delete(context.WithoutCancel(ctx), dashboardKey) // the hook did not run
			return nil
		}
	}
	return err
}

// committed asks the server whether transaction xid committed, waiting
// while it is still in progress (its COMMIT on the way).
func (m *usageMeter) committed(ctx context.Context, xid string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for {
		var status *string
		if err := m.db.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status); err != nil {
			return false, err
		}
		if status == nil || *status != "in progress" {
			return status != nil && *status == "committed", nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// restore puts deltas that were not written back in front of new ones.
func (m *usageMeter) restore(pending map[string]map[int64]usageDelta) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for tenant, deltas := range pending {
		t := m.pending[tenant]
		if t == nil {
			t = map[int64]usageDelta{}
			m.pending[tenant] = t
		}
		for id, d := range deltas {
			cur := t[id]
			cur.tokens += d.tokens
			cur.cost += d.cost
			t[id] = cur
		}
	}
}
