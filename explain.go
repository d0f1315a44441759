package pgkit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// QueryPlan is the headline of a slow statement's generic plan, captured when
// Config.ExplainSlowQueries is set. It holds no argument value: the plan is
// made for parameters, not for the values the statement ran with, and
// literals of its SQL are masked as "?".
type QueryPlan struct {
	// TopNode is the plan's top node, e.g. "Aggregate" or "Seq Scan".
	TopNode string `json:"top_node"`
	// Cost and Rows are the planner's estimates for the whole statement.
	Cost float64 `json:"cost"`
	Rows float64 `json:"rows"`
	// SeqScans are the plan's sequential scans of large tables (at least
	// 10,000 rows by the server's statistics).
	SeqScans []SeqScan `json:"seq_scans,omitempty"`
	// Suggestions are indexes for those scans; see IndexSuggestion.
	Suggestions []IndexSuggestion `json:"suggestions,omitempty"`
}

// SeqScan is a sequential scan of a large table in a plan.
type SeqScan struct {
	// Table is the table scanned, schema-qualified unless it is in public.
	Table string `json:"table"`
	// TableRows is the table's row count by the server's statistics.
	TableRows float64 `json:"table_rows"`
	// Columns are the table's columns the scan filters or joins on.
	Columns []string `json:"columns,omitempty"`
	// Filter is the scan's filter, literals masked.
	Filter string `json:"filter,omitempty"`
}

// IndexSuggestion is an index on a scanned table's columns. With the HypoPG
// extension installed in the database, pgkit plans the statement again with
// the index as a hypothetical one and suggests it only when the estimated
// cost falls at least twofold (Verified, CostAfter). Without HypoPG the
// suggestion is the scan's columns, unverified.
type IndexSuggestion struct {
	// SQL creates the index: CREATE INDEX CONCURRENTLY ON table (columns).
	SQL       string  `json:"sql"`
	Verified  bool    `json:"verified"`
	CostAfter float64 `json:"cost_after"` // 0 when unverified
	// Note says why a suggestion is unverified; empty when verified.
	Note string `json:"note"`
}

// The explainer's limits: how often one query name is explained, the bound
// on one capture (connection, plans, hypothetical indexes), what counts as a
// large table, and the gain an index must bring to be suggested.
const (
	explainEvery      = time.Minute
	explainTimeout    = 3 * time.Second
	explainLargeTable = 10_000
	explainMinGain    = 2.0
)

// explainer captures the plans of slow statements, one at a time, on a
// connection of its own, so neither the pool nor the caller waits for it.
type explainer struct {
	conn *pgx.ConnConfig // the primary's, untraced
	cfg  *Config
	ring *slowRing

	reqs chan explainReq
	// ctx ends with close, cutting a capture in flight short.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	last  map[planKey]time.Time  // when each statement was last sent to be explained
	plans map[planKey]*QueryPlan // each statement's latest plan
}

// planKey is a statement as the slow log keeps it: its name and its SQL,
// literals masked and folded (SlowQuery.SQL). A name alone would be coarse:
// statements without WithQueryName are named by their first words.
type planKey struct{ name, shown string }

// maxPlans bounds the statements the explainer remembers; past it, it
// starts afresh.
const maxPlans = 1000

type explainReq struct {
	key planKey
	sql string
}

func startExplainer(conn *pgx.ConnConfig, cfg *Config, ring *slowRing) *explainer {
	conn = conn.Copy()
	conn.Tracer = nil
	// Nothing of pgx's own prepared on it: planOf deallocates them all.
	conn.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	e := &explainer{conn: conn, cfg: cfg, ring: ring, reqs: make(chan explainReq, 8),
		done: make(chan struct{}), last: map[planKey]time.Time{}, plans: map[planKey]*QueryPlan{}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	go e.run()
	return e
}

func (e *explainer) close() {
	if e != nil {
		e.cancel()
		<-e.done
	}
}

// request asks for the plan of a slow statement (sql, shown in the slow
// log as shown), at most once per statement per explainEvery and never
// blocking: a full queue drops the request.
func (e *explainer) request(name, shown, sql string) {
	if !explainable(sql) {
		return
	}
	key, now := planKey{name, shown}, time.Now()
	e.mu.Lock()
	if at, ok := e.last[key]; ok && now.Sub(at) < explainEvery {
		e.mu.Unlock()
		return
	}
	if len(e.last) >= maxPlans {
		clear(e.last)
		clear(e.plans)
	}
	e.last[key] = now
	e.mu.Unlock()
	select {
	case e.reqs <- explainReq{key, sql}:
	default:
	}
}

// plan is the statement's latest plan, nil when none was captured.
func (e *explainer) plan(name, shown string) *QueryPlan {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.plans[planKey{name, shown}]
}

func (e *explainer) run() {
	defer close(e.done)
	for {
		select {
		case <-e.ctx.Done():
			return
		case r := <-e.reqs:
			e.capture(e.ctx, r)
		}
	}
}

func (e *explainer) capture(ctx context.Context, r explainReq) {
	ctx, cancel := context.WithTimeout(ctx, explainTimeout)
	defer cancel()
	p, err := explainGeneric(ctx, e.conn, e.cfg, r.sql)
	if err != nil {
		e.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "pgkit: could not capture a slow query's plan",
			slog.String("name", r.key.name), slog.String("error", scrubError(err, nil, nil)))
		return
	}
	e.mu.Lock()
	e.plans[r.key] = p
	e.mu.Unlock()
	e.ring.attach(r.key, p)
	attrs := []slog.Attr{slog.String("name", r.key.name), slog.String("sql", r.key.shown), slog.String("top_node", p.TopNode), slog.Float64("cost", p.Cost), slog.Float64("rows", p.Rows)}
	for _, s := range p.SeqScans {
		attrs = append(attrs, slog.String("seq_scan", fmt.Sprintf("%s (%.0f rows) on %s", s.Table, s.TableRows, strings.Join(s.Columns, ", "))))
	}
	for _, s := range p.Suggestions {
		if s.Verified {
			attrs = append(attrs, slog.String("suggestion", fmt.Sprintf("%s (estimated cost %.0f -> %.0f)", s.SQL, p.Cost, s.CostAfter)))
		} else {
			attrs = append(attrs, slog.String("suggestion", s.SQL+" ("+s.Note+")"))
		}
	}
	e.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "pgkit: slow query plan", attrs...)
}

// explainable says whether sql is one statement a plan can be made for.
func explainable(sql string) bool {
	s := strings.TrimSpace(sql)
	if strings.Contains(strings.TrimRight(s, "; \t\n"), ";") {
		return false
	}
	word, _, _ := strings.Cut(strings.ToLower(s), " ")
	switch strings.TrimLeft(word, "(") {
	case "select", "with", "update", "delete", "insert", "values", "table":
		return true
	}
	return false
}

// explainStatement is the name of the prepared statement the generic plan
// is made from.
const explainStatement = "pgkit_explain"

// explainGeneric plans sql for parameters, never for values: it prepares
// sql under plan_cache_mode = force_generic_plan and explains an EXECUTE of
// it with NULLs, which a generic plan does not look at. All of it runs in a
// READ ONLY transaction that is rolled back, on a connection of its own that
// speaks the simple protocol (cc says so).
func explainGeneric(ctx context.Context, cc *pgx.ConnConfig, cfg *Config, sql string) (*QueryPlan, error) {
	conn, err := connectConfig(ctx, cc, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `BEGIN READ ONLY; SET LOCAL statement_timeout = 1000; SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
		return nil, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`) //nolint:errcheck // the connection closes next
	root, err := planOf(ctx, conn, sql)
	if err != nil {
		return nil, err
	}
	p := &QueryPlan{TopNode: root.NodeType, Cost: root.TotalCost, Rows: root.PlanRows}
	// HypoPG's schema, "" without it: its functions are called by their
	// qualified name, since services often keep extensions in a schema of
	// their own, off the search_path.
	var hypo string
	_ = conn.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		WHERE e.extname = 'hypopg'`).Scan(&hypo)
	for _, scan := range root.seqScans(nil) {
		var rows float64
		if err := conn.QueryRow(ctx, `SELECT greatest(c.reltuples, 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, scan.node.Schema, scan.node.RelationName).Scan(&rows); err != nil || rows < explainLargeTable {
			continue
		}
		table := quoteIdent(scan.node.RelationName)
		if scan.node.Schema != "public" {
			table = quoteIdent(scan.node.Schema) + "." + table
		}
		shown := table
		p.SeqScans = append(p.SeqScans, SeqScan{Table: shown, TableRows: rows, Columns: scan.columns, Filter: maskLiterals(scan.node.Filter)})
		if len(scan.columns) == 0 {
			continue
		}
		cols := make([]string, len(scan.columns))
		for i, c := range scan.columns {
			cols[i] = quoteIdent(c)
		}
		index := "CREATE INDEX CONCURRENTLY ON " + table + " (" + strings.Join(cols, ", ") + ")"
		if hypo == "" {
			p.Suggestions = append(p.Suggestions, IndexSuggestion{SQL: index, Note: "unverified: install the HypoPG extension to have it checked"})
			continue
		}
		after, err := costWithIndex(ctx, conn, quoteIdent(hypo), sql, "CREATE INDEX ON "+table+" ("+strings.Join(cols, ", ")+")")
		if err != nil {
			return nil, err
		}
		if after > 0 && p.Cost/after >= explainMinGain {
			p.Suggestions = append(p.Suggestions, IndexSuggestion{SQL: index, Verified: true, CostAfter: after})
		}
	}
	return p, nil
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// quoteIdent quotes an identifier when it needs it, so that a suggestion
// reads as a person would write it. A keyword used as a name is quoted by
// the server's quote_ident; the plain ones here are the common case.
func quoteIdent(s string) string {
	if plainIdent.MatchString(s) {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

// costWithIndex plans sql again with index as a hypothetical index (HypoPG,
// installed in schema) and returns the new estimated cost.
func costWithIndex(ctx context.Context, conn *pgx.Conn, schema, sql, index string) (float64, error) {
	if _, err := conn.Exec(ctx, `SELECT indexrelid FROM `+schema+`.hypopg_create_index($1)`, index); err != nil {
		return 0, err
	}
	defer conn.Exec(ctx, `SELECT `+schema+`.hypopg_reset()`) //nolint:errcheck // the transaction is rolled back and the connection closed
	root, err := planOf(ctx, conn, sql)
	if err != nil {
		return 0, err
	}
	return root.TotalCost, nil
}

// planOf prepares sql afresh (a cached generic plan would not see a new
// hypothetical index) and returns its generic plan's root.
func planOf(ctx context.Context, conn *pgx.Conn, sql string) (*planNode, error) {
	if _, err := conn.Exec(ctx, `DEALLOCATE ALL; PREPARE `+explainStatement+` AS `+sql); err != nil {
		return nil, err
	}
	var params int
	if err := conn.QueryRow(ctx, `SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = $1`,
		explainStatement).Scan(&params); err != nil {
		return nil, err
	}
	args := ""
	if params > 0 {
		args = "(" + strings.TrimSuffix(strings.Repeat("NULL, ", params), ", ") + ")"
	}
	var out []byte
	if err := conn.QueryRow(ctx, `EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE `+explainStatement+args).Scan(&out); err != nil {
		return nil, err
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) == 0 {
		return nil, fmt.Errorf("pgkit: unexpected EXPLAIN output: %v", err)
	}
	return &plans[0].Plan, nil
}

// planNode is the part of a node of EXPLAIN (FORMAT JSON) that the
// headline reads.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	TotalCost    float64    `json:"Total Cost"`
	PlanRows     float64    `json:"Plan Rows"`
	RelationName string     `json:"Relation Name"`
	Schema       string     `json:"Schema"`
	Alias        string     `json:"Alias"`
	Filter       string     `json:"Filter"`
	HashCond     string     `json:"Hash Cond"`
	MergeCond    string     `json:"Merge Cond"`
	JoinFilter   string     `json:"Join Filter"`
	Plans        []planNode `json:"Plans"`
}

type seqScanOf struct {
	node    *planNode
	columns []string
}

// seqScans finds the sequential scans under n, with the columns of their
// table that their filter and the join conditions above them use.
func (n *planNode) seqScans(conds []string) []seqScanOf {
	conds = append(slices.Clip(conds), n.HashCond, n.MergeCond, n.JoinFilter)
	var out []seqScanOf
	if n.NodeType == "Seq Scan" && n.RelationName != "" {
		out = append(out, seqScanOf{node: n, columns: columnsOf(n.Alias, append([]string{n.Filter}, conds...))})
	}
	for i := range n.Plans {
		out = append(out, n.Plans[i].seqScans(conds)...)
	}
	return out
}

var (
	qualifiedColumn = regexp.MustCompile(`\b([a-z_][a-z0-9_$]*)\.([a-z_][a-z0-9_$]*)\b`)
	castSuffix      = regexp.MustCompile(`^(\)|::[a-z ]+)*`)
	castPrefix      = regexp.MustCompile(`\(+$`)
)

// columnsOf returns the columns of alias that exprs (EXPLAIN VERBOSE
// qualifies every column) compare in a way an index serves: equality
// first, then ranges; in order of first use, at most three.
func columnsOf(alias string, exprs []string) []string {
	var eq, rng []string
	for _, e := range exprs {
		for _, m := range qualifiedColumn.FindAllStringSubmatchIndex(e, -1) {
			if e[m[2]:m[3]] != alias {
				continue
			}
			col := e[m[4]:m[5]]
			after := strings.TrimLeft(e[m[1]+len(castSuffix.FindString(e[m[1]:])):], " ")
			before := strings.TrimRight(castPrefix.ReplaceAllString(e[:m[0]], ""), " ")
			switch {
			case strings.HasPrefix(after, "= ") || strings.HasSuffix(before, " =") || strings.HasPrefix(after, "= ANY"):
				eq = appendNew(eq, col)
			case hasRange(after) || hasRange(reverse(before)):
				rng = appendNew(rng, col)
			}
		}
	}
	var cols []string
	for _, c := range append(eq, rng...) {
		if len(cols) < 3 {
			cols = appendNew(cols, c)
		}
	}
	return cols
}

func hasRange(s string) bool {
	for _, op := range []string{"< ", "> ", "<= ", ">= "} {
		if strings.HasPrefix(s, op) {
			return true
		}
	}
	return false
}

// reverse turns the text before a column ("x >") into what an operator
// after it would read like ("> "), for hasRange.
func reverse(before string) string {
	i := strings.LastIndex(before, " ")
	return before[i+1:] + " "
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

var sqlLiterals = regexp.MustCompile(`\$\d+|"(?:[^"]|"")*"|'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b`)

// maskLiterals replaces the literals (strings, numbers) of SQL or of a
// plan's expression with "?", keeping parameter references ($1) and quoted
// identifiers: a literal may be user data a caller wrote into the SQL.
func maskLiterals(s string) string {
	return sqlLiterals.ReplaceAllStringFunc(s, func(m string) string {
		if m[0] == '$' || m[0] == '"' {
			return m
		}
		return "?"
	})
}
