package pgkit_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// docField is a row of a schema table of docs/http.md.
type docField struct {
	path     string // e.g. "replicas[].lag_seconds"
	typ      string // e.g. "number or null", "array of ReplicaStatus"
	always   bool   // Present is "always"
	meaning  string
	observed bool
}

// docSchemas reads the schema tables of docs/http.md: the first table
// with the columns Field, Type, Present and Meaning after each "###"
// heading, by heading.
func docSchemas(t *testing.T) map[string][]*docField {
	t.Helper()
	f, err := os.Open(filepath.Join("docs", "http.md"))
	require.NoError(t, err)
	defer f.Close()
	link := regexp.MustCompile(`\[([^\]]+)\]\([^)]*\)`)
	schemas := map[string][]*docField{}
	var heading string
	inTable := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			heading, inTable = strings.TrimSpace(strings.TrimLeft(line, "#")), false
		case line == "| Field | Type | Present | Meaning |":
			require.NotContains(t, schemas, heading, "two tables under %q", heading)
			inTable = true
			schemas[heading] = nil
		case inTable && strings.HasPrefix(line, "| ---"):
		case inTable && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			require.Len(t, cells, 4, line)
			for i := range cells {
				cells[i] = strings.TrimSpace(link.ReplaceAllString(cells[i], "$1"))
			}
			schemas[heading] = append(schemas[heading], &docField{path: strings.Trim(cells[0], "`"), typ: cells[1],
				always: cells[2] == "always", meaning: cells[3]})
		default:
			inTable = false
		}
	}
	require.NoError(t, sc.Err())
	return schemas
}

// schemaCheck walks JSON bodies against the schemas of docs/http.md and
// against the rules every body follows (durations in seconds, in fields
// named *_seconds; timestamps in RFC 3339, UTC).
type schemaCheck struct {
	t       *testing.T
	schemas map[string][]*docField
	used    map[string]bool
}

var (
	// timeUnitSuffix are the names of durations in other units than seconds.
	timeUnitSuffix = regexp.MustCompile(`_(ns|us|µs|ms|nanos|micros|millis|nanoseconds|microseconds|milliseconds|minutes|hours|days)$`)
	// durationWords are words of a field's name that make it a duration,
	// which must then end in _seconds.
	durationWords = []string{"latency", "duration", "lag", "wait", "threshold", "refresh", "le", "age", "timeout", "elapsed", "interval", "seconds"}
	isTimestamp   = func(key string) bool { return key == "time" || key == "timestamp" || strings.HasSuffix(key, "_at") }
)

// body checks a body against the schema named schema.
func (c *schemaCheck) body(name, schema string, body []byte) {
	c.t.Helper()
	var v any
	require.NoError(c.t, json.Unmarshal(body, &v), "%s: %s", name, body)
	obj, ok := v.(map[string]any)
	require.True(c.t, ok, "%s: not an object: %s", name, body)
	c.object(name, schema, "", obj)
}

func (c *schemaCheck) fields(schema string) []*docField {
	c.t.Helper()
	fields, ok := c.schemas[schema]
	require.True(c.t, ok, "docs/http.md has no table under ### %s", schema)
	c.used[schema] = true
	return fields
}

// object checks obj, found at prefix ("" for the top, "a.b", "a[]") of
// schema.
func (c *schemaCheck) object(where, schema, prefix string, obj map[string]any) {
	c.t.Helper()
	fields := c.fields(schema)
	join := func(key string) string {
		if prefix == "" {
			return key
		}
		return prefix + "." + key
	}
	for _, f := range fields {
		if parent := f.path[:max(strings.LastIndexByte(f.path, '.'), 0)]; parent == prefix && f.always {
			require.Contains(c.t, obj, f.path[strings.LastIndexByte(f.path, '.')+1:], "%s: %s: a field present always (%s)", where, schema, f.path)
		}
	}
	for key, v := range obj {
		path := join(key)
		at := where + ": " + schema + " " + path
		i := slices.IndexFunc(fields, func(f *docField) bool { return f.path == path })
		require.GreaterOrEqual(c.t, i, 0, "%s: a field docs/http.md does not list", at)
		f := fields[i]
		f.observed = true
		c.units(at, key, f, v)
		c.value(at, schema, path, f.typ, v)
	}
}

// units checks the rules of every body's field names and values.
func (c *schemaCheck) units(at, key string, f *docField, v any) {
	c.t.Helper()
	require.NotRegexp(c.t, timeUnitSuffix, key, "%s: durations are in seconds", at)
	for _, w := range strings.Split(key, "_") {
		if slices.Contains(durationWords, w) {
			require.True(c.t, strings.HasSuffix(key, "_seconds"), "%s: a duration's name ends in _seconds", at)
		}
	}
	if strings.HasSuffix(key, "_seconds") {
		require.True(c.t, strings.HasPrefix(f.typ, "number"), "%s: documented as %s", at, f.typ)
		require.Contains(c.t, f.meaning, "seconds", "%s: the doc says the unit", at)
		_, isNumber := v.(float64)
		require.True(c.t, v == nil || isNumber, "%s: %v", at, v)
	}
	if isTimestamp(key) {
		require.True(c.t, strings.HasPrefix(f.typ, "timestamp"), "%s: documented as %s", at, f.typ)
	}
	if s, ok := v.(string); ok && !isTimestamp(key) {
		_, err := time.Parse(time.RFC3339Nano, s)
		require.Error(c.t, err, "%s: a timestamp in a field not named time, timestamp or *_at", at)
	}
}

// value checks v against the documented type typ.
func (c *schemaCheck) value(at, schema, path, typ string, v any) {
	c.t.Helper()
	if base, ok := strings.CutSuffix(typ, " or null"); ok {
		if v == nil {
			return
		}
		typ = base
	}
	switch typ {
	case "string":
		require.IsType(c.t, "", v, at)
	case "boolean":
		require.IsType(c.t, true, v, at)
	case "number":
		require.IsType(c.t, 0.0, v, at)
	case "integer":
		require.IsType(c.t, 0.0, v, at)
		require.Equal(c.t, math.Trunc(v.(float64)), v.(float64), "%s: an integer", at)
	case "timestamp":
		require.IsType(c.t, "", v, at)
		ts, err := time.Parse(time.RFC3339Nano, v.(string))
		require.NoError(c.t, err, at)
		require.True(c.t, strings.HasSuffix(v.(string), "Z"), "%s: in UTC: %s", at, v)
		require.Equal(c.t, v.(string), ts.Format(time.RFC3339Nano), "%s: written with time.RFC3339Nano", at)
	case "object":
		require.IsType(c.t, map[string]any{}, v, at)
		c.object(at, schema, path, v.(map[string]any))
	case "array of strings":
		require.IsType(c.t, []any{}, v, at)
		for _, e := range v.([]any) {
			require.IsType(c.t, "", e, at)
		}
	case "object of numbers":
		require.IsType(c.t, map[string]any{}, v, at)
		for k, n := range v.(map[string]any) {
			require.IsType(c.t, 0.0, n, "%s.%s", at, k)
		}
	case "array":
		require.IsType(c.t, []any{}, v, at)
		for _, e := range v.([]any) {
			require.IsType(c.t, map[string]any{}, e, at)
			c.object(at, schema, path+"[]", e.(map[string]any))
		}
	default:
		if ref, ok := strings.CutPrefix(typ, "array of "); ok {
			require.IsType(c.t, []any{}, v, at)
			for _, e := range v.([]any) {
				require.IsType(c.t, map[string]any{}, e, at)
				c.object(at, ref, "", e.(map[string]any))
			}
			return
		}
		require.IsType(c.t, map[string]any{}, v, "%s: a %s", at, typ)
		c.object(at, typ, "", v.(map[string]any))
	}
}

// allObservedOf fails for each documented field of schemas that no body
// had.
func (c *schemaCheck) allObservedOf(schemas ...string) {
	c.t.Helper()
	for _, schema := range schemas {
		require.NotEmpty(c.t, c.schemas[schema], schema)
		for _, f := range c.schemas[schema] {
			require.True(c.t, f.observed, "docs/http.md lists %s in %s, but no body had it", f.path, schema)
		}
	}
}

// allObserved fails for each documented field of the schemas used that no
// body had.
func (c *schemaCheck) allObserved() {
	c.t.Helper()
	for schema := range c.used {
		for _, f := range c.schemas[schema] {
			require.True(c.t, f.observed, "docs/http.md lists %s in %s, but no body had it", f.path, schema)
		}
	}
}

// jsonGet fetches url with the Authorization header auth (none when
// empty), checks the headers every JSON body has, and returns the status
// code and the body.
func jsonGet(t *testing.T, url, auth string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Close = true
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), url)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"), url)
	return resp.StatusCode, body
}

// TestHTTPBodiesMatchDocs serves every JSON body of pgkit's handlers, with
// each optional field present somewhere (a database down, replicas usable
// and not, slow statements that succeed and fail, a dashboard source) and
// checks them against docs/http.md: no field it does not list, each field
// of the listed type, every field it says is always there present, and
// every field it lists seen. On the way it checks the rules of every body:
// no duration in another unit than seconds, durations named *_seconds,
// timestamps in RFC 3339 (UTC) in fields named time, timestamp or *_at.
func TestHTTPBodiesMatchDocs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &schemaCheck{t: t, schemas: docSchemas(t), used: map[string]bool{}}
	const token = "docs-token"
	bearer := "Bearer " + token
	admin := pgkit.BearerToken(token)

	rs := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: rs.url, MaxConns: 2, HealthTimeout: time.Second, SlowQueryThreshold: 50 * time.Millisecond, ExplainSlowQueries: true,
		ReplicaURLs: []string{rs.replicaURLs[0], "postgres://postgres@127.0.0.1:" + closedPort(t) + "/db?sslmode=disable"}})
	down, err := pgkit.Open(ctx, pgkit.Config{URL: "postgres://postgres@127.0.0.1:" + closedPort(t) + "/db",
		LazyConnect: true, HealthTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(down.Close)
	require.True(t, db.Replicas()[0].Usable)
	require.False(t, db.Replicas()[1].Usable)

	_, err = db.Exec(ctx, `SELECT pg_sleep(0.06)`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `SELECT 1/(count(*) - 1) FROM (SELECT pg_sleep(0.06)) s`)
	require.ErrorContains(t, err, "division by zero")
	// A slow statement that scans a large table, for a plan with a scan and
	// a suggestion.
	_, err = db.Exec(ctx, `CREATE TABLE big AS SELECT i AS k FROM generate_series(1, 20000) i; ANALYZE big`)
	require.NoError(t, err)
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM big, pg_sleep(0.06) WHERE k = $1`, 7).Scan(&n))
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(db.SlowQueries(), func(q pgkit.SlowQuery) bool { return q.Plan != nil && len(q.Plan.Suggestions) > 0 })
	}, 10*time.Second, 20*time.Millisecond, "a slow statement's plan")

	serve := func(h http.Handler) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	for _, d := range []*pgkit.DB{db, down} {
		health := serve(pgkit.HealthHandler(d, pgkit.HealthDetails(admin)))
		_, body := jsonGet(t, health, "")
		c.body("HealthHandler", "Health status body", body)
		_, body = jsonGet(t, health, bearer)
		c.body("HealthHandler with details", "Health details body", body)
		stats := serve(pgkit.StatsHandler(d, admin))
		_, body = jsonGet(t, stats, bearer)
		c.body("StatsHandler", "Stats body", body)
		_, body = jsonGet(t, stats+"?server", bearer) // server_error from down
		c.body("StatsHandler?server", "Stats body", body)
	}

	dash := serve(http.StripPrefix("/debug/pgkit", pgkit.DashboardHandler(db, admin,
		pgkit.WithDashboardRefresh(100*time.Millisecond),
		pgkit.WithDashboardSource("counters", func() map[string]float64 { return map[string]float64{"hits": 1, "misses": 2} }))))
	_, first := jsonGet(t, dash+"/debug/pgkit/data", bearer)
	c.body("DashboardHandler, first read", "Dashboard data body", first)
	_, err = db.Exec(ctx, `SELECT pg_sleep(0.06)`) // longer than half the refresh: a window
	require.NoError(t, err)
	_, second := jsonGet(t, dash+"/debug/pgkit/data", bearer)
	c.body("DashboardHandler", "Dashboard data body", second)
	for _, d := range []*pgkit.DB{db, down} { // error from down
		h := serve(http.StripPrefix("/debug/pgkit", pgkit.DashboardHandler(d, admin)))
		code, body := jsonGet(t, h+"/debug/pgkit/server", bearer)
		require.Equal(t, http.StatusOK, code)
		c.body("DashboardHandler server", "Dashboard server body", body)
	}
	var data struct {
		Window      map[string]any   `json:"window"`
		SlowQueries []map[string]any `json:"slow_queries"`
	}
	require.NoError(t, json.Unmarshal(second, &data))
	require.NotNil(t, data.Window)
	require.NotNil(t, data.Window["p50_seconds"])
	require.True(t, slices.ContainsFunc(data.SlowQueries, func(q map[string]any) bool { return q["sqlstate"] == "22012" }))
	c.allObserved()
	for _, schema := range []string{"Health status body", "Health details body", "Stats body", "Dashboard data body", "Dashboard server body",
		"PoolStats", "ReplicaStatus", "SlowQuery"} {
		require.True(t, c.used[schema], "no body checked against %s", schema)
	}
	// TestServerView checks the server view's rows, which need sessions
	// blocked, long statements and pg_stat_statements.
	for _, schema := range []string{"ServerStatement", "ServerSession", "BlockingSession", "DuplicateIndex", "SeqScannedTable"} {
		c.used[schema] = true
	}
	require.Len(t, c.schemas, len(c.used), "a table of docs/http.md that no body was checked against")

	// The error bodies.
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/debug/pgkit/nothing": {http.StatusNotFound, `{"error":"not found"}`},
	} {
		code, body := jsonGet(t, dash+path, bearer)
		require.Equal(t, want.code, code, path)
		require.JSONEq(t, want.body, string(body), path)
	}
	req, err := http.NewRequest(http.MethodPost, dash+"/debug/pgkit/data", nil)
	require.NoError(t, err)
	req.Close = true
	req.Header.Set("Authorization", bearer)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.JSONEq(t, `{"error":"method not allowed"}`, string(body))
}

// TestDashboardDataTouchesNoDatabase: reading the dashboard's data neither
// runs a statement nor acquires a connection.
func TestDashboardDataTouchesNoDatabase(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	base := serveDashboard(t, pgkit.DashboardHandler(db, pgkit.BearerToken("tok")))
	first, _ := getDashData(t, base+"data", "tok")
	for range 3 {
		getDashData(t, base+"data", "tok")
	}
	last, _ := getDashData(t, base+"data", "tok")
	require.Equal(t, first.Queries.Count, last.Queries.Count)
	require.Equal(t, first.PoolStats.AcquireCount, last.PoolStats.AcquireCount)
}

// TestDocsHTTPFirstSentence: docs/http.md starts by saying what its reader
// can do after reading it.
func TestDocsHTTPFirstSentence(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("docs", "http.md"))
	require.NoError(t, err)
	var first string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			first = line
			break
		}
	}
	require.Equal(t, "After reading this page you can mount pgkit's HTTP endpoints, protect them, and parse every JSON body they serve.", first)
}

// TestJSONRoundTrip: HealthReport, PoolStats, ReplicaStatus and SlowQuery
// read back what they write, durations and timestamps included, and write
// timestamps in UTC whatever the time's zone.
func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("UTC+5", 5*3600)
	at := time.Date(2026, 11, 26, 14, 8, 44, 123456789, zone)
	pool := pgkit.PoolStats{Size: 3, Acquired: 1, Idle: 2, Max: 4, Utilization: 0.25, Waiting: 1, AcquireCount: 9,
		EmptyAcquireCount: 2, CanceledAcquireCount: 1, AcquireTimeouts: 1, AcquireWait: 1234567891 * time.Nanosecond,
		EmptyAcquireWait: 3 * time.Millisecond, NewConns: 3, ClosedForLifetime: 1, ClosedForIdle: 2}
	replica := pgkit.ReplicaStatus{Addr: "10.0.0.2:5432", Healthy: true, InRecovery: true, Usable: false,
		Reason: "lag 3s exceeds MaxReplicaLag 1s", Detail: "d", Lag: 3*time.Second + 250*time.Millisecond, CheckedAt: at}
	slow := pgkit.SlowQuery{Time: at, Role: "primary", Name: "messages.list", Op: "query", Duration: 612345678 * time.Nanosecond,
		SQL: "SELECT 1", Rows: 7, SQLState: "57014"}

	b, err := json.Marshal(pool)
	require.NoError(t, err)
	var gotPool pgkit.PoolStats
	require.NoError(t, json.Unmarshal(b, &gotPool))
	require.Equal(t, pool, gotPool)

	b, err = json.Marshal(replica)
	require.NoError(t, err)
	require.Contains(t, string(b), `"checked_at":"2026-11-26T09:08:44.123456789Z"`)
	require.Contains(t, string(b), `"lag_seconds":3.25`)
	var gotReplica pgkit.ReplicaStatus
	require.NoError(t, json.Unmarshal(b, &gotReplica))
	require.True(t, at.Equal(gotReplica.CheckedAt))
	gotReplica.CheckedAt = replica.CheckedAt
	require.Equal(t, replica, gotReplica)
	b, err = json.Marshal(pgkit.ReplicaStatus{Addr: "a"})
	require.NoError(t, err)
	require.Contains(t, string(b), `"checked_at":null`, "not checked yet")

	b, err = json.Marshal(slow)
	require.NoError(t, err)
	require.Contains(t, string(b), `"time":"2026-11-26T09:08:44.123456789Z"`)
	require.Contains(t, string(b), `"duration_seconds":0.612345678`)
	var gotSlow pgkit.SlowQuery
	require.NoError(t, json.Unmarshal(b, &gotSlow))
	require.True(t, at.Equal(gotSlow.Time))
	gotSlow.Time = slow.Time
	require.Equal(t, slow, gotSlow)

	report := pgkit.HealthReport{Status: pgkit.StatusDegraded, Reason: "pool exhausted", Detail: "for operators",
		Latency: 1500 * time.Microsecond, ServerVersion: "15.19", Pool: pool, Replicas: []pgkit.ReplicaStatus{replica}, CheckedAt: at}
	b, err = json.Marshal(report)
	require.NoError(t, err)
	require.Contains(t, string(b), `"latency_seconds":0.0015`)
	require.Contains(t, string(b), `"checked_at":"2026-11-26T09:08:44.123456789Z"`)
	for _, hidden := range []string{"for operators", "10.0.0.2", `"detail"`, `"addr"`} {
		require.NotContains(t, string(b), hidden)
	}
	var gotReport pgkit.HealthReport
	require.NoError(t, json.Unmarshal(b, &gotReport))
	require.True(t, at.Equal(gotReport.CheckedAt))
	require.Equal(t, report.Latency, gotReport.Latency)
	require.Equal(t, report.Pool, gotReport.Pool)
	require.Len(t, gotReport.Replicas, 1)
	require.Equal(t, replica.Lag, gotReport.Replicas[0].Lag)
	require.Empty(t, gotReport.Replicas[0].Addr, "the report's JSON has no address")
	require.Empty(t, gotReport.Detail)
}

// TestBearerToken: the token as a Bearer credential, or as the password of
// Basic credentials with any user name; nothing else, and nothing at all
// for an empty token.
func TestBearerToken(t *testing.T) {
	t.Parallel()
	basic := func(user, password string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}
	authorize := pgkit.BearerToken("s3cret")
	for auth, want := range map[string]bool{
		"Bearer s3cret":                     true,
		"bearer s3cret":                     true, // the scheme is case-insensitive (RFC 9110)
		basic("admin", "s3cret"):            true,
		basic("anyone else", "s3cret"):      true,
		basic("", "s3cret"):                 true,
		"basic " + basic("a", "s3cret")[6:]: true,
		"":                                  false,
		"s3cret":                            false,
		"Bearer":                            false,
		"Bearer ":                           false,
		"Bearer s3cret2":                    false,
		"Bearer s3cre":                      false,
		"Bearer  s3cret":                    false,
		"Token s3cret":                      false,
		"Basic s3cret":                      false, // not base64 of user:password
		basic("s3cret", ""):                 false, // the token is the password, not the user name
		basic("s3cret", "wrong"):            false,
		basic("admin", "s3cret "):           false,
		"Basic " + base64.StdEncoding.EncodeToString([]byte("s3cret")): false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		require.Equal(t, want, authorize(r), "%q", auth)
	}

	empty := pgkit.BearerToken("")
	for _, auth := range []string{"", "Bearer ", "Bearer", basic("", ""), basic("admin", ""), "Basic "} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", auth)
		require.False(t, empty(r), "an empty token accepts no one: %q", auth)
	}
}

// TestGuardedHandlersBasicAuth: StatsHandler and every path of
// DashboardHandler take the token as Basic credentials' password, as a
// browser sends it; a wrong one gets 401 with the Basic challenge that
// makes a browser prompt, besides the Bearer one; Bearer still works.
func TestGuardedHandlersBasicAuth(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 2})
	const token = "basic-token"
	admin := pgkit.BearerToken(token)
	stats := httptest.NewServer(pgkit.StatsHandler(db, admin))
	t.Cleanup(stats.Close)
	dash := serveDashboard(t, pgkit.DashboardHandler(db, admin))
	do := func(url string, auth func(*http.Request)) *http.Response {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Close = true
		auth(req)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp
	}
	for _, url := range []string{stats.URL, dash, dash + "data", dash + "dashboard.js", dash + "dashboard.css"} {
		for user, password := range map[string]string{"admin": token, "": token, "ops": "wrong", token: ""} {
			resp := do(url, func(r *http.Request) { r.SetBasicAuth(user, password) })
			if password == token {
				require.Equal(t, http.StatusOK, resp.StatusCode, "%s as %s:%s", url, user, password)
				continue
			}
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s as %s:%s", url, user, password)
			require.Equal(t, []string{`Bearer realm="pgkit"`, `Basic realm="pgkit", charset="UTF-8"`}, resp.Header.Values("WWW-Authenticate"))
		}
		require.Equal(t, http.StatusOK, do(url, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }).StatusCode, url)
		resp := do(url, func(*http.Request) {})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, url)
		require.Contains(t, resp.Header.Values("WWW-Authenticate"), `Basic realm="pgkit", charset="UTF-8"`)
	}

	// An empty token opens nothing, whatever the credentials.
	closed := httptest.NewServer(pgkit.DashboardHandler(db, pgkit.BearerToken("")))
	t.Cleanup(closed.Close)
	for _, auth := range []func(*http.Request){
		func(r *http.Request) { r.SetBasicAuth("admin", "") },
		func(r *http.Request) { r.SetBasicAuth("", "") },
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") },
	} {
		require.Equal(t, http.StatusUnauthorized, do(closed.URL+"/data", auth).StatusCode)
	}
}
