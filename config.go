package pgkit

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Disabled turns off a timeout in Config whose zero value means "use the
// default": for example Config{StatementTimeout: pgkit.Disabled}. Any other
// negative duration is refused by Open.
const Disabled time.Duration = -1

// Defaults applied by Open to Config fields left at their zero value. A setting
// given in Config.URL (pool_max_conns=..., statement_timeout=..., ...) wins over
// these; a Config field that is set wins over both.
const (
	DefaultAcquireTimeout           = 5 * time.Second
	DefaultMaxConnLifetime          = time.Hour
	DefaultMaxConnIdleTime          = 30 * time.Minute
	DefaultHealthCheckPeriod        = time.Minute
	DefaultPingTimeout              = time.Second
	DefaultConnectTimeout           = 5 * time.Second
	DefaultStatementTimeout         = 60 * time.Second
	DefaultClientTimeoutMargin      = 5 * time.Second
	DefaultIdleInTransactionTimeout = 5 * time.Minute
	DefaultKeepaliveIdle            = 60 * time.Second
	DefaultKeepaliveInterval        = 10 * time.Second
	DefaultKeepaliveCount           = 3
	DefaultHealthTimeout            = time.Second
	DefaultSlowQueryThreshold       = 500 * time.Millisecond
	DefaultMaxLoggedSQL             = 1000
	DefaultSlowQueryBuffer          = 100
	DefaultMaxQueryNames            = 200
	DefaultNPlusOneThreshold        = 10
	DefaultTenantSetting            = "app.tenant_id"
	DefaultMaxReplicaLag            = 10 * time.Second
	DefaultReplicaCheckPeriod       = 5 * time.Second
	DefaultConnectBackoff           = 500 * time.Millisecond
)

// ConnectBackoffStart is the first wait between connection attempts once a
// pool backs off (see Config.ConnectBackoff); each further failure doubles
// it, up to ConnectBackoff. With DefaultConnectBackoff, a 3.4 s outage under
// 64 goroutines of load cost the server 12 to 15 connection attempts instead
// of 10,000 to 12,000, and the first query succeeded within 0.42 s of the server
// being back, against 0.11 s without a backoff (TestConnectBackoffDuringOutage;
// README, "Failure behaviour").
const ConnectBackoffStart = 50 * time.Millisecond

// DefaultMaxConns is the pool size Open uses when neither Config.MaxConns nor
// the URL's pool_max_conns sets one: 4 × GOMAXPROCS, at least 8. README's
// "Pool sizing" sweep is where it comes from: a CPU-bound load of short reads
// saturates the server at 2 connections per core and larger pools only move
// the queue into the server; twice that leaves room for I/O-bound queries.
func DefaultMaxConns() int32 {
	return int32(max(8, 4*runtime.GOMAXPROCS(0)))
}

// Config configures Open. The zero value of every field means its documented
// default; Open refuses values it cannot honour with a *ConfigError naming the
// field.
type Config struct {
	// URL is the connection string, as a postgres:// URL or a key=value DSN,
	// including pgxpool's pool_* parameters. What it leaves out comes from
	// the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD,
	// PGSSLMODE, PGAPPNAME, PGCONNECT_TIMEOUT, ...), as with pgx and psql;
	// empty, the environment alone says where to connect. Its password never
	// appears in an error, log line or HTTP response from pgkit.
	URL string

	// MaxConns is the most connections the pool opens. Default: the URL's
	// pool_max_conns, else DefaultMaxConns().
	MaxConns int32
	// MinConns is the number of connections the pool keeps open even when
	// idle. Default 0. Must not exceed MaxConns.
	MinConns int32
	// MinIdleConns is the number of idle connections the pool tries to keep
	// ready, to spare requests the cost of connecting. Default 0.
	MinIdleConns int32
	// MaxConnIdleTime closes a connection idle for longer. Default 30m.
	MaxConnIdleTime time.Duration
	// AcquireTimeout bounds the wait for a free connection in every DB method
	// (pgxpool has no such bound). A wait that times out returns an error that
	// matches ErrAcquireTimeout and context.DeadlineExceeded (an
	// *UnreachableError when connection attempts were failing meanwhile); a
	// shorter deadline on the caller's context still wins. No checkout sets a
	// timer: one goroutine per pool role ends the waits past AcquireTimeout,
	// looking every twentieth of it (5 to 100 ms), so a wait ends within
	// AcquireTimeout plus that. Default 5s; Disabled waits as long as the
	// context allows.
	AcquireTimeout time.Duration
	// MaxConnLifetime closes a connection older than this (recycling, like
	// SQLAlchemy's pool_recycle). Default 1h.
	MaxConnLifetime time.Duration
	// MaxConnLifetimeJitter adds a random extra lifetime of up to this much to
	// each connection, so connections opened together are not all closed
	// together. Default MaxConnLifetime/10.
	MaxConnLifetimeJitter time.Duration
	// HealthCheckPeriod is how often the pool checks idle connections for
	// lifetime, idle time and MinConns. Default 1m.
	HealthCheckPeriod time.Duration
	// PingTimeout bounds the liveness ping made when a connection that sat idle
	// for a second or more is checked out (SQLAlchemy's pool_pre_ping). A
	// connection that fails it is discarded and another is tried. Default 1s.
	PingTimeout time.Duration
	// ConnectTimeout bounds the opening of one connection, and Open's first
	// contact with the server. Default: the URL's connect_timeout, else 5s.
	ConnectTimeout time.Duration
	// ConnectBackoff bounds how long a pool waits between connection
	// attempts while the server cannot be reached. After two attempts in a
	// row have failed, a pool lets the next through only after a wait that
	// starts at ConnectBackoffStart (50ms) and doubles with each further
	// failure up to ConnectBackoff, each drawn at random between half and
	// all of it; the first success ends the backoff. Meanwhile a call that
	// needs a new connection fails at once with an *UnreachableError that
	// carries the last attempt's error; idle connections keep serving.
	// A longer ConnectBackoff spares a server that is down more attempts; a
	// shorter one finds it back sooner (within about ConnectBackoff).
	// Default 500ms; Disabled makes every call that finds no idle connection
	// try to connect, as pgxpool does.
	ConnectBackoff time.Duration
	// LazyConnect makes Open return without reaching the server; the first
	// query connects. Default false: Open fails fast when the server cannot be
	// reached.
	LazyConnect bool

	// StatementTimeout is the server's statement_timeout for every
	// connection. Default: the URL's statement_timeout, else 60s; Disabled
	// leaves the server's own setting.
	StatementTimeout time.Duration
	// ClientTimeout bounds, on the client, every statement (query, batch,
	// copy, prepare; a query until its rows are closed) whose context has no
	// deadline. StatementTimeout lives on the server and cannot end a
	// statement the server never received or cannot answer (a partition, a
	// frozen server): past ClientTimeout (checked every eighth of it, at
	// least every second) the statement fails with a timeout error
	// (pgconn.Timeout(err) and errors.Is(err, os.ErrDeadlineExceeded) are
	// true) and its connection is closed. A context with a deadline is
	// left to that deadline. Default StatementTimeout plus
	// DefaultClientTimeoutMargin (65s), so the server's own timeout, with its
	// clear error, fires first. Disabled turns it off; it is off by default
	// when StatementTimeout is Disabled.
	ClientTimeout time.Duration
	// IdleInTransactionTimeout is the server's
	// idle_in_transaction_session_timeout: a session left idle inside a
	// transaction longer than this is ended, releasing its locks. Default 5m;
	// Disabled leaves the server's own setting.
	IdleInTransactionTimeout time.Duration
	// ApplicationName names the connections in pg_stat_activity. Default: the
	// URL's application_name, else the program's name.
	ApplicationName string
	// EnableJIT keeps PostgreSQL's JIT compiler on. Default false: jit=off,
	// since JIT costs more than it saves on the short OLTP queries of a web
	// service.
	EnableJIT bool

	// KeepaliveIdle is the idle time before TCP keepalive probes start.
	// Default 60s.
	KeepaliveIdle time.Duration
	// KeepaliveInterval is the time between keepalive probes. Default 10s.
	KeepaliveInterval time.Duration
	// KeepaliveCount is the number of unanswered probes after which the
	// connection is dropped. Default 3; so a dead peer is found in about 90s.
	KeepaliveCount int
	// TCPUserTimeout is the socket's TCP_USER_TIMEOUT (Linux; elsewhere it
	// has no effect): a connection whose sent data stays unacknowledged this
	// long is closed by the kernel, and the call on it fails. Keepalive
	// probes are sent only while nothing is in flight, so without it a
	// request sent into a network that lost the server waits for the
	// kernel's retransmissions, 15 minutes or more. Default KeepaliveIdle +
	// KeepaliveInterval × KeepaliveCount (90s with their defaults): the
	// time keepalives take to find a dead peer of an idle connection, which
	// is also the shortest value that does not cut that search short (the
	// kernel applies TCP_USER_TIMEOUT to keepalive probes too). Disabled
	// leaves the system's default.
	TCPUserTimeout time.Duration

	// HealthTimeout bounds DB.Health. Default 1s.
	HealthTimeout time.Duration

	// Name is the value of the "pool" label on every metric, so that two
	// pools in one process do not collide. Default: ApplicationName, which
	// defaults to the program's name: two DBs of one program on one
	// Registerer need a Name each, or Open refuses the second.
	Name string
	// SlowQueryThreshold: a query, batch, copy or prepare at least this slow
	// is logged at Warn, counted in pgkit_slow_queries_total and kept for
	// DB.SlowQueries. Default 500ms; any negative value disables it.
	SlowQueryThreshold time.Duration
	// MaxLoggedSQL cuts the SQL in log lines (after folding whitespace) at
	// this many bytes. Default 1000.
	MaxLoggedSQL int
	// LogArgs adds the arguments of slow and failed statements to their log
	// lines, each passed through RedactArg. The error text is scrubbed either
	// way (values the server quotes become "?", DETAIL is left out). Default
	// false: no arguments in the log.
	LogArgs bool
	// RedactArg turns an argument into what the log shows when LogArgs is set.
	// Default RedactArgType: the type, and the length of strings and byte
	// slices, never the value.
	RedactArg func(any) string
	// SlowQueryBuffer is how many recent slow statements DB.SlowQueries
	// keeps. Default 100.
	SlowQueryBuffer int
	// MaxQueryNames bounds the distinct query names used as metric labels;
	// later names are counted as "other" and a warning is logged once.
	// Default 200.
	MaxQueryNames int
	// ExplainSlowQueries captures the plan of a query slower than
	// SlowQueryThreshold: a generic plan (made for parameters, so no argument
	// value reaches it), on a connection of its own, at most once a minute
	// per query name, within 3s. Its headline (top node, estimated cost and
	// rows, sequential scans of large tables with the columns they filter
	// on) and index suggestions, verified with hypothetical indexes when the
	// HypoPG extension is installed, are logged and kept in SlowQuery.Plan.
	// Default false.
	ExplainSlowQueries bool
	// NPlusOneThreshold reports a statement that runs more than this many
	// times in one unit of work (a request through Middleware, or any
	// WithStats context): a query in a loop where one for the set would do.
	// Once per unit and statement: a warning with the query name, the runs,
	// their time and the file:line that issued them; pgkit_nplusone_total;
	// RequestStats.NPlusOne and Middleware's Server-Timing. Statements are
	// the same when they have the same WithQueryName name, else the same SQL
	// with literals set aside. Default 10; a negative value turns it off.
	NPlusOneThreshold int
	// TenantSetting is the server setting InTx's WithTenant sets for the
	// transaction, and row-level security policies read with
	// current_setting. It must be a custom setting: a prefix, a dot, a name.
	// Default "app.tenant_id".
	TenantSetting string

	// LeakThreshold: a connection checked out for longer (an Acquire never
	// released, a transaction never ended, Rows never closed) is logged at
	// Warn with the stack that acquired it, and counted. Capturing that stack
	// costs each checkout about a microsecond. Default 0: off.
	LeakThreshold time.Duration

	// PgBouncer says the URLs point at PgBouncer (or another pooler) in
	// transaction pooling mode, where consecutive transactions of one client
	// connection may run on different server connections. pgkit then keeps
	// nothing on a server connection between transactions: statements are
	// sent unnamed, not prepared (pgx.QueryExecModeExec, unless the URL's
	// default_query_exec_mode says otherwise); only application_name goes
	// in the startup packet, and StatementTimeout, IdleInTransactionTimeout
	// and jit are set with SET LOCAL at the start of every transaction that
	// InTx, Begin or BeginTx opens. Statements outside a transaction run
	// with the server's settings for the role: Open warns when they differ
	// from Config. Default false.
	PgBouncer bool

	// ReplicaURLs are streaming replicas (hot standbys) of the primary in
	// URL, for DB.Reader and InTx with OnReplica. Each gets a pool with the
	// primary's settings; a URL gives the host, port, database, user,
	// password and TLS settings, its pool_* parameters are ignored. Open
	// does not fail when a replica is down: it is skipped until a check
	// finds it healthy. Default: none, and Reader is the primary.
	ReplicaURLs []string
	// MaxReplicaLag: a replica whose replay is further behind the primary
	// (now() − pg_last_xact_replay_timestamp(), counted only while WAL it
	// received is waiting to be replayed) is skipped. Default 10s; Disabled
	// never skips a replica for lag.
	MaxReplicaLag time.Duration
	// ReplicaCheckPeriod is how often every replica is checked (a query on
	// one of its connections, within HealthTimeout); a replica that fails
	// is skipped until a later check passes. Default 5s.
	ReplicaCheckPeriod time.Duration

	// Logger receives pgkit's logs. Default: none for the routine ones
	// (slow and failed statements, health checks, replicas), while what
	// warns of refused or lost work goes to slog.Default(): a MaxConns the
	// server cannot give, PgBouncer settings that differ, leaked
	// connections, query names over MaxQueryNames, an outage that starts
	// the connection backoff, and the Writer's default OnError and
	// OnAmbiguous. Nothing that loses or refuses data is silent by default.
	Logger *slog.Logger
	// alerts is Logger, else slog.Default(): where warnings go.
	alerts *slog.Logger
	// Registerer receives pgkit's Prometheus metrics. Default: none.
	Registerer prometheus.Registerer
	// Tracer is a pgx tracer of your own (tracelog, otelpgx, ...). It keeps
	// receiving every event, composed with pgkit's through pgx's multitracer;
	// the pool and batch/copy/connect/prepare interfaces it implements are
	// found by type assertion. A pgxpool.AcquireTracer must not keep the
	// context it is given past its TraceAcquireEnd. Default: none.
	Tracer pgx.QueryTracer

	// The hooks below are pgxpool's, for every pool of the DB (the
	// primary's and each replica's). pgkit's own uses of them still run:
	// a hook of yours never replaces pgkit's tuning.

	// BeforeConnect may change the configuration of each new connection
	// before it is dialled: a password that rotates, such as a cloud IAM
	// token, is set here (cc.Password). It runs after the connection
	// backoff (ConnectBackoff) lets the attempt through; an error fails the
	// attempt. Default: none.
	BeforeConnect func(ctx context.Context, cc *pgx.ConnConfig) error
	// AfterConnect runs once on each new connection before the pool hands
	// it out: register types here (pgvector, enums, composite types, with
	// conn.LoadType and conn.TypeMap().RegisterType). An error closes the
	// connection and fails the call that was waiting for it. Default: none.
	AfterConnect func(ctx context.Context, conn *pgx.Conn) error
	// PrepareConn runs on every checkout, before the liveness ping
	// (PingTimeout); returning false or an error destroys the connection
	// (see pgxpool.Config.PrepareConn). Default: none.
	PrepareConn func(ctx context.Context, conn *pgx.Conn) (bool, error)
	// AfterRelease runs when a connection goes back to the pool; returning
	// false destroys it instead. Default: none.
	AfterRelease func(conn *pgx.Conn) bool
	// DialFunc opens the network connection to the server (through a
	// proxy, a tunnel, a cloud connector). On what it returns, when that is
	// a *net.TCPConn, pgkit sets TCP keepalives (KeepaliveIdle,
	// KeepaliveInterval, KeepaliveCount) and TCPUserTimeout, and Close
	// closes it like its own. Default: a net.Dialer with those settings.
	DialFunc pgconn.DialFunc
	// TLSConfig, when set, is used for every connection in place of the
	// URL's sslmode, sslrootcert, sslcert and sslkey, and a connection
	// without TLS is never tried. Default: nil, the URL decides.
	TLSConfig *tls.Config
}

// validate refuses what Open cannot honour, naming the field.
func (cfg *Config) validate() error {
	if cfg.MaxConns < 0 {
		return &ConfigError{Struct: "Config", Field: "MaxConns", Reason: fmt.Sprintf("must be at least 1 (got %d)", cfg.MaxConns)}
	}
	if err := notNegative("Config", cfgField{"MinConns", int64(cfg.MinConns)}, cfgField{"MinIdleConns", int64(cfg.MinIdleConns)}); err != nil {
		return err
	}
	if cfg.MaxConns > 0 && cfg.MinConns > cfg.MaxConns {
		return &ConfigError{Struct: "Config", Field: "MinConns", Reason: fmt.Sprintf("%d exceeds MaxConns %d", cfg.MinConns, cfg.MaxConns)}
	}
	if cfg.MaxConns > 0 && cfg.MinIdleConns > cfg.MaxConns {
		return &ConfigError{Struct: "Config", Field: "MinIdleConns", Reason: fmt.Sprintf("%d exceeds MaxConns %d", cfg.MinIdleConns, cfg.MaxConns)}
	}
	if err := notNegative("Config", cfgField{"MaxLoggedSQL", int64(cfg.MaxLoggedSQL)}, cfgField{"SlowQueryBuffer", int64(cfg.SlowQueryBuffer)},
		cfgField{"MaxQueryNames", int64(cfg.MaxQueryNames)}); err != nil {
		return err
	}
	if cfg.TenantSetting != "" && !validSettingName(cfg.TenantSetting) {
		return &ConfigError{Struct: "Config", Field: "TenantSetting", Reason: fmt.Sprintf(
			"%q is not a custom setting name (prefix.name, letters, digits and underscores)", cfg.TenantSetting)}
	}
	if err := notNegative("Config", cfgField{"KeepaliveCount", int64(cfg.KeepaliveCount)}); err != nil {
		return err
	}
	if cfg.TCPUserTimeout.Milliseconds() > math.MaxInt32 {
		return &ConfigError{Struct: "Config", Field: "TCPUserTimeout", Reason: fmt.Sprintf("must be at most %s (got %s)",
			time.Duration(math.MaxInt32)*time.Millisecond, cfg.TCPUserTimeout)}
	}
	durations := []struct {
		field      string
		d          time.Duration
		canDisable bool
	}{
		{"MaxConnIdleTime", cfg.MaxConnIdleTime, false},
		{"AcquireTimeout", cfg.AcquireTimeout, true},
		{"MaxConnLifetime", cfg.MaxConnLifetime, false},
		{"MaxConnLifetimeJitter", cfg.MaxConnLifetimeJitter, false},
		{"HealthCheckPeriod", cfg.HealthCheckPeriod, false},
		{"PingTimeout", cfg.PingTimeout, true},
		{"ConnectTimeout", cfg.ConnectTimeout, true},
		{"ConnectBackoff", cfg.ConnectBackoff, true},
		{"TCPUserTimeout", cfg.TCPUserTimeout, true},
		{"StatementTimeout", cfg.StatementTimeout, true},
		{"ClientTimeout", cfg.ClientTimeout, true},
		{"IdleInTransactionTimeout", cfg.IdleInTransactionTimeout, true},
		{"KeepaliveIdle", cfg.KeepaliveIdle, false},
		{"KeepaliveInterval", cfg.KeepaliveInterval, false},
		{"HealthTimeout", cfg.HealthTimeout, false},
		{"LeakThreshold", cfg.LeakThreshold, false},
		{"MaxReplicaLag", cfg.MaxReplicaLag, true},
		{"ReplicaCheckPeriod", cfg.ReplicaCheckPeriod, false},
	}
	for _, d := range durations {
		if d.d == Disabled && d.canDisable {
			continue
		}
		if d.d == Disabled {
			return &ConfigError{Struct: "Config", Field: d.field, Reason: "cannot be turned off (pgkit.Disabled); set a positive duration, or leave it zero for the default"}
		}
		if d.d < 0 {
			reason := fmt.Sprintf("must not be negative (got %s)", d.d)
			if d.canDisable {
				reason += "; use pgkit.Disabled to turn it off"
			}
			return &ConfigError{Struct: "Config", Field: d.field, Reason: reason}
		}
	}
	return nil
}

// applyDefaults fills the zero fields of cfg: from the URL where it sets them
// (pcfg was parsed from it), else from pgkit's defaults.
func (cfg *Config) applyDefaults(params map[string]string, pcfg *pgxpool.Config) {
	fromURL := func(key string) bool { _, ok := params[key]; return ok }
	set := func(d *time.Duration, urlKey string, urlVal, def time.Duration) {
		switch {
		case *d != 0:
		case urlKey != "" && fromURL(urlKey):
			*d = urlVal
		default:
			*d = def
		}
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns()
		if fromURL("pool_max_conns") {
			cfg.MaxConns = pcfg.MaxConns
		}
	}
	if cfg.MinConns == 0 && fromURL("pool_min_conns") {
		cfg.MinConns = pcfg.MinConns
	}
	if cfg.MinIdleConns == 0 && fromURL("pool_min_idle_conns") {
		cfg.MinIdleConns = pcfg.MinIdleConns
	}
	set(&cfg.MaxConnIdleTime, "pool_max_conn_idle_time", pcfg.MaxConnIdleTime, DefaultMaxConnIdleTime)
	set(&cfg.MaxConnLifetime, "pool_max_conn_lifetime", pcfg.MaxConnLifetime, DefaultMaxConnLifetime)
	set(&cfg.MaxConnLifetimeJitter, "pool_max_conn_lifetime_jitter", pcfg.MaxConnLifetimeJitter, cfg.MaxConnLifetime/10)
	set(&cfg.HealthCheckPeriod, "pool_health_check_period", pcfg.HealthCheckPeriod, DefaultHealthCheckPeriod)
	set(&cfg.PingTimeout, "pool_ping_timeout", pcfg.PingTimeout, DefaultPingTimeout)
	set(&cfg.ConnectTimeout, "connect_timeout", pcfg.ConnConfig.ConnectTimeout, DefaultConnectTimeout)
	set(&cfg.AcquireTimeout, "", 0, DefaultAcquireTimeout)
	set(&cfg.StatementTimeout, "statement_timeout", serverDuration(params["statement_timeout"]), DefaultStatementTimeout)
	if cfg.ClientTimeout == 0 {
		cfg.ClientTimeout = Disabled
		if cfg.StatementTimeout > 0 {
			cfg.ClientTimeout = cfg.StatementTimeout + DefaultClientTimeoutMargin
		}
	}
	set(&cfg.IdleInTransactionTimeout, "idle_in_transaction_session_timeout",
		serverDuration(params["idle_in_transaction_session_timeout"]), DefaultIdleInTransactionTimeout)
	set(&cfg.KeepaliveIdle, "", 0, DefaultKeepaliveIdle)
	set(&cfg.KeepaliveInterval, "", 0, DefaultKeepaliveInterval)
	set(&cfg.HealthTimeout, "", 0, DefaultHealthTimeout)
	set(&cfg.MaxReplicaLag, "", 0, DefaultMaxReplicaLag)
	set(&cfg.ReplicaCheckPeriod, "", 0, DefaultReplicaCheckPeriod)
	if cfg.KeepaliveCount == 0 {
		cfg.KeepaliveCount = DefaultKeepaliveCount
	}
	set(&cfg.TCPUserTimeout, "", 0, cfg.KeepaliveIdle+cfg.KeepaliveInterval*time.Duration(cfg.KeepaliveCount))
	set(&cfg.ConnectBackoff, "", 0, DefaultConnectBackoff)
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = params["application_name"]
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = programName()
	}
	if !cfg.EnableJIT && fromURL("jit") {
		cfg.EnableJIT = params["jit"] == "on"
	}
	cfg.alerts = alertLogger(cfg.Logger)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = cfg.ApplicationName
	}
	if cfg.SlowQueryThreshold == 0 {
		cfg.SlowQueryThreshold = DefaultSlowQueryThreshold
	}
	if cfg.MaxLoggedSQL == 0 {
		cfg.MaxLoggedSQL = DefaultMaxLoggedSQL
	}
	if cfg.SlowQueryBuffer == 0 {
		cfg.SlowQueryBuffer = DefaultSlowQueryBuffer
	}
	if cfg.MaxQueryNames == 0 {
		cfg.MaxQueryNames = DefaultMaxQueryNames
	}
	if cfg.NPlusOneThreshold == 0 {
		cfg.NPlusOneThreshold = DefaultNPlusOneThreshold
	}
	if cfg.RedactArg == nil {
		cfg.RedactArg = RedactArgType
	}
	if cfg.TenantSetting == "" {
		cfg.TenantSetting = DefaultTenantSetting
	}
}

// configure writes the effective cfg into the pgxpool config parsed from a
// connection string that sets params.
func (cfg *Config) configure(pcfg *pgxpool.Config, params map[string]string) {
	pcfg.MaxConns = cfg.MaxConns
	pcfg.MinConns = cfg.MinConns
	pcfg.MinIdleConns = cfg.MinIdleConns
	pcfg.MaxConnIdleTime = cfg.MaxConnIdleTime
	pcfg.MaxConnLifetime = cfg.MaxConnLifetime
	pcfg.MaxConnLifetimeJitter = cfg.MaxConnLifetimeJitter
	pcfg.HealthCheckPeriod = cfg.HealthCheckPeriod
	pcfg.PingTimeout = max(cfg.PingTimeout, 0)
	pcfg.ConnConfig.ConnectTimeout = max(cfg.ConnectTimeout, 0)

	cfg.hook(pcfg)

	rp := pcfg.ConnConfig.RuntimeParams
	rp["application_name"] = cfg.ApplicationName
	rp["jit"] = "off"
	if cfg.EnableJIT {
		rp["jit"] = "on"
	}
	setTimeout := func(name string, d time.Duration) {
		if d > 0 {
			rp[name] = serverMillis(d)
		}
	}
	setTimeout("statement_timeout", cfg.StatementTimeout)
	setTimeout("idle_in_transaction_session_timeout", cfg.IdleInTransactionTimeout)
	if cfg.PgBouncer {
		configurePgBouncer(pcfg, params)
	}
}

// trace installs t, composed with Config.Tracer, on the pool's connections,
// with a connection backoff of the pool's own, which ignores the failures
// closing causes.
func (cfg *Config) trace(pcfg *pgxpool.Config, t *tracer, closing func() bool) {
	pt := &poolTracer{tracer: t, conns: newConnectBackoff(cfg, pcfg, closing)}
	pcfg.BeforeConnect = pt.conns.beforeConnect
	if user := cfg.BeforeConnect; user != nil {
		pcfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
			if err := pt.conns.beforeConnect(ctx, cc); err != nil {
				return err
			}
			if err := user(ctx, cc); err != nil {
				pt.conns.ended(err) // an attempt that failed: it counts toward the backoff
				return err
			}
			return nil
		}
	}
	pcfg.ConnConfig.Tracer = pt
	pcfg.BeforeClose = t.connClosed
	if cfg.Tracer != nil {
		// pgkit's last: its acquire context wraps the user's, and is reused
		// once its own TraceAcquireEnd has run, which must then come last.
		pcfg.ConnConfig.Tracer = multitracer.New(cfg.Tracer, pt)
	}
}

// replicaConfigs parses ReplicaURLs into pool configs with the effective
// settings of cfg.
func (cfg *Config) replicaConfigs() ([]*pgxpool.Config, error) {
	out := make([]*pgxpool.Config, len(cfg.ReplicaURLs))
	for i, u := range cfg.ReplicaURLs {
		params := connParams(u)
		field := fmt.Sprintf("ReplicaURLs[%d]", i)
		if u == "" {
			return nil, &ConfigError{Struct: "Config", Field: field, Reason: "empty"}
		}
		pcfg, err := pgxpool.ParseConfig(u)
		if err != nil {
			return nil, redact(&ConfigError{Struct: "Config", Field: field, Reason: "cannot parse", Err: parseError(err, params["password"])}, params["password"])
		}
		cfg.configure(pcfg, params)
		out[i] = pcfg
	}
	return out, nil
}

// serverDuration reads a PostgreSQL time setting as given in a connection
// string: a bare number is milliseconds, a unit suffix (ms, s, min, h, d) is
// honoured. An unreadable value yields 0 and is left for the server to judge.
func serverDuration(s string) time.Duration {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"ms", time.Millisecond}, {"min", time.Minute}, {"s", time.Second}, {"h", time.Hour}, {"d", 24 * time.Hour}}
	unit := time.Millisecond
	for _, u := range units {
		if n := len(s) - len(u.suffix); n > 0 && s[n:] == u.suffix {
			s, unit = s[:n], u.unit
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(n) * unit
}

// redactedURL describes the connection target without its password: the
// user, every host of a multi-host URL, and the database.
func redactedURL(pcfg *pgxpool.Config) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.User(pcfg.ConnConfig.User),
		Host:   hostsOf(pcfg),
		Path:   "/" + pcfg.ConnConfig.Database,
	}
	if pcfg.ConnConfig.Password != "" {
		u.User = url.UserPassword(pcfg.ConnConfig.User, "xxxxx")
	}
	return u.String()
}

// hostsOf is every host:port pgx will try for pcfg, each once (pgx tries a
// host once per sslmode), joined by commas as in a multi-host URL.
func hostsOf(pcfg *pgxpool.Config) string {
	hosts := []string{net.JoinHostPort(pcfg.ConnConfig.Host, strconv.Itoa(int(pcfg.ConnConfig.Port)))}
	for _, fb := range pcfg.ConnConfig.Fallbacks {
		if h := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return strings.Join(hosts, ",")
}

// programName is the default application_name: the executable's base name,
// cut to PostgreSQL's 63-byte limit.
func programName() string {
	name := filepath.Base(os.Args[0])
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// validSettingName accepts a custom (placeholder) setting name such as
// app.tenant_id: two or more dot-separated parts of letters, digits and
// underscores.
func validSettingName(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for _, c := range p {
			if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
				return false
			}
		}
	}
	return true
}

// serverMillis is d as a server timeout setting: milliseconds, rounded up,
// so that a positive d never reads as 0 (which turns the timeout off).
func serverMillis(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}
