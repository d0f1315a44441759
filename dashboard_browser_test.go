package pgkit_test

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

// chromiumPath finds Debian's chromium for the browser test, or fails with
// the command that installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("the dashboard's browser test needs chromium (looked on PATH and at /usr/bin/chromium); " +
		"install it with: apt-get install chromium")
	return ""
}

// runChromium runs headless chromium on url with extra flags (--dump-dom
// prints the DOM, --screenshot=PATH saves a PNG) after budget of virtual
// time: timers run without waiting, but the clock stands still while a
// request is pending. It returns what chromium printed on stdout and the
// page's console messages (console calls, uncaught exceptions, CSP
// violations), from chromium's log on stderr.
func runChromium(t *testing.T, chromium, url string, budget time.Duration, flags ...string) (stdout []byte, console []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", // chromium refuses to run as root with its sandbox
		"--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir=" + t.TempDir(),
		// The network is closed: no background traffic of the browser's own.
		"--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--disable-breakpad", "--disable-dev-shm-usage",
		"--force-color-profile=srgb", "--hide-scrollbars",
		"--enable-logging=stderr", "--v=0", // the page's console, as INFO:CONSOLE lines
		"--virtual-time-budget=" + strconv.FormatInt(budget.Milliseconds(), 10),
	}, flags...)
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, chromium, append(args, url)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	for line := range strings.Lines(errOut.String()) {
		if strings.Contains(line, ":CONSOLE") || strings.Contains(line, "Uncaught") {
			console = append(console, strings.TrimSpace(line))
		}
	}
	// A dialog (an alert from injected script) blocks the page until the
	// timeout.
	require.NoError(t, err, "chromium %v (a dialog open?); console: %v; stderr:\n%s", flags, console, tailString(errOut.String(), 3000))
	return out.Bytes(), console
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// domElement is an element of a page's serialized DOM: its tag, the text of
// its start tag's attributes and its inner HTML.
type domElement struct {
	tag, attrs, inner string
}

var (
	domTag     = regexp.MustCompile(`<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:[^>"']|"[^"]*"|'[^']*')*)>`)
	domAnyTag  = regexp.MustCompile(`<[^>]*>`)
	domVoidTag = map[string]bool{"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true,
		"img": true, "input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true}
)

// domFind scans serialized HTML, as chromium's --dump-dom prints it (every
// non-void element closed, text and attributes escaped), for the elements
// whose tag is tag ("" for any) and whose start tag satisfies match.
func domFind(doc, tag string, match func(e domElement) bool) []domElement {
	tags := domTag.FindAllStringSubmatchIndex(doc, -1)
	var found []domElement
	for i, m := range tags {
		if m[3] > m[2] { // an end tag
			continue
		}
		e := domElement{tag: strings.ToLower(doc[m[4]:m[5]]), attrs: doc[m[6]:m[7]]}
		if (tag != "" && e.tag != tag) || (match != nil && !match(e)) {
			continue
		}
		if !domVoidTag[e.tag] {
			depth := 1
			for _, n := range tags[i+1:] {
				if !strings.EqualFold(doc[n[4]:n[5]], e.tag) {
					continue
				}
				if n[3] > n[2] {
					depth--
				} else {
					depth++
				}
				if depth == 0 {
					e.inner = doc[m[1]:n[0]]
					break
				}
			}
		}
		found = append(found, e)
	}
	return found
}

// attr returns the element's attribute name, unescaped, and whether it has it.
func (e domElement) attr(name string) (string, bool) {
	m := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(name) + `="([^"]*)"`).FindStringSubmatch(e.attrs)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[1]), true
}

// text is the element's text content.
func (e domElement) text() string {
	return html.UnescapeString(domAnyTag.ReplaceAllString(e.inner, ""))
}

func (e domElement) hasClass(class string) bool {
	c, _ := e.attr("class")
	return strings.Contains(" "+c+" ", " "+class+" ")
}

// domByID returns the element with the id, or fails.
func domByID(t *testing.T, doc, id string) domElement {
	t.Helper()
	found := domFind(doc, "", func(e domElement) bool { v, _ := e.attr("id"); return v == id })
	require.Len(t, found, 1, "elements with id %q", id)
	return found[0]
}

// withClass matches elements that have the class.
func withClass(class string) func(domElement) bool {
	return func(e domElement) bool { return e.hasClass(class) }
}

// chartPoints returns how many polylines a chart holds and their points.
func chartPoints(chart domElement) (polylines, points int) {
	for _, p := range domFind(chart.inner, "polyline", nil) {
		v, _ := p.attr("points")
		polylines++
		points += len(strings.Fields(v))
	}
	return polylines, points
}

// dataPoints is the data-points attribute of the element's first svg.
func dataPoints(t *testing.T, e domElement) int {
	t.Helper()
	svgs := domFind(e.inner, "svg", nil)
	require.NotEmpty(t, svgs)
	v, _ := svgs[0].attr("data-points")
	n, err := strconv.Atoi(v)
	require.NoError(t, err)
	return n
}

// requestLog records every request a handler answered: its status, its
// path, and whether it carried an Authorization header.
type requestLog struct {
	mu   sync.Mutex
	list []loggedRequest
}

type loggedRequest struct {
	status int
	path   string
	auth   bool
}

func (r loggedRequest) String() string {
	return fmt.Sprintf("%d %s (credentials: %t)", r.status, r.path, r.auth)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		auth := r.Header.Get("Authorization") != ""
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		l.list = append(l.list, loggedRequest{sw.status, r.URL.Path, auth})
		l.mu.Unlock()
	})
}

// take returns the requests logged so far and forgets them.
func (l *requestLog) take() []loggedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.list
	l.list = nil
	return list
}

// dashLoad runs a small service's traffic on db until stop: short queries of
// a few names, a failure now and then, a writer fed with messages, a cache
// in front of a query, and the slow query with markup in its SQL.
type dashLoad struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func startDashLoad(t *testing.T, db *pgkit.DB, w *pgkit.Writer[chatMessage], cache *cache.Cache[int], convID int64) *dashLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &dashLoad{stop: cancel}
	for worker := range 3 {
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				switch {
				case worker == 0:
					var n int
					_ = db.QueryRow(pgkit.WithQueryName(ctx, "messages.count"),
						`SELECT count(*) FROM messages WHERE conversation_id = $1`, convID).Scan(&n)
					_ = w.Write(ctx, chatMsg(convID, 1_000_000+i))
				case worker == 1 && i%40 == 39:
					_, _ = db.Exec(pgkit.WithQueryName(ctx, "broken"), `SELECT 1/0`)
				case worker == 1:
					key := rand.IntN(60)
					_, _ = cache.GetOrLoad(ctx, fmt.Sprint(key), func(ctx context.Context) (int, error) {
						var v int
						err := db.QueryRow(pgkit.WithQueryName(ctx, "conversation.load"), `SELECT $1::int * 2`, key).Scan(&v)
						return v, err
					})
					_, _ = db.Exec(pgkit.WithQueryName(ctx, "touch"), `SELECT pg_sleep($1)`, rand.Float64()*0.004)
				case i%20 == 19:
					// The slow query with markup in its SQL stays among
					// the newest, however many others are slow on a busy
					// machine.
					_, _ = db.Exec(ctx, xssSQL)
				default:
					_, _ = db.Exec(pgkit.WithQueryName(ctx, "report"), `SELECT pg_sleep($1)`, 0.002+rand.Float64()*0.02)
				}
			}
		})
	}
	t.Cleanup(l.close)
	return l
}

func (l *dashLoad) close() {
	l.stop()
	l.wg.Wait()
}

// TestDashboardInBrowser opens the page in a real browser (Debian's
// chromium, headless, run as a command) under a prefix, with traffic
// running, and checks what an operator sees: charts with points, the slow
// query listed as text, no script injected, no console error, no failed
// request. The page is guarded by BearerToken, and the browser gets in as
// a person does, with HTTP Basic credentials: the URL holds them
// (http://admin:TOKEN@host/...), chromium first asks without them, gets
// the 401 with the Basic challenge, and asks again with them; the page's
// polls of its data then carry them too. Without credentials, or with a
// wrong token, the page does not load. It saves a screenshot to
// testdata/artifacts/dashboard.png, and to docs/dashboard.png when
// PGKIT_UPDATE_SCREENSHOT=1.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	update := os.Getenv("PGKIT_UPDATE_SCREENSHOT") == "1"
	refresh, points := 150*time.Millisecond, 12
	if update {
		points = 80 // a fuller picture for the README
	}

	// No Registerer: every chart fills from the pool's own observer.
	db := openTest(t, pgkit.Config{Name: "chat-api", SlowQueryThreshold: 50 * time.Millisecond, ExplainSlowQueries: true})
	convID := newConversation(t, db)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "chat messages", BatchSize: 200})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	cache := newDashCache(t, 300*time.Millisecond)
	startDashLoad(t, db, w, cache, convID)

	const token = "dashboard-test-token"
	dash := pgkit.DashboardHandler(db, pgkit.BearerToken(token),
		pgkit.WithDashboardRefresh(refresh),
		pgkit.WithDashboardWriter(w),
		pgkit.WithDashboardSource("conversations cache", cache.DashboardStats))
	// Virtual time runs the page's timers without waiting, so the server
	// paces the polls instead: each read of the data takes a refresh of
	// real time (the page's clock stands still meanwhile), and the
	// dashboard's windows (changes since a read at least half a refresh
	// earlier) have data to show.
	var requests requestLog
	url := serveDashboard(t, requests.wrap(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/data" {
			time.Sleep(refresh)
		}
		dash.ServeHTTP(rw, r)
	})))
	withCredentials := func(user, password string) string {
		rest, ok := strings.CutPrefix(url, "http://")
		require.True(t, ok, url)
		return "http://" + user + ":" + password + "@" + rest
	}

	// Without credentials, and with a wrong token, the browser gets the
	// 401 and no page (headless chromium has no prompt to show: it gives up
	// with net::ERR_INVALID_AUTH_CREDENTIALS and prints no DOM), so the
	// script never asks for the data.
	for _, u := range []string{url, withCredentials("admin", "wrong-token")} {
		dom, _ := runChromium(t, chromium, u, time.Second, "--dump-dom")
		require.NotContains(t, string(dom), `id="chart-conns"`, u)
		refused := requests.take()
		require.NotEmpty(t, refused)
		for _, r := range refused {
			require.Equal(t, http.StatusUnauthorized, r.status, "%s: %v", u, r)
			require.Equal(t, "/", r.path, "%s: %v", u, r)
		}
	}
	url = withCredentials("admin", token)

	_, err = db.Exec(context.Background(), xssSQL)
	require.NoError(t, err)
	locker, waiter := holdLock(t, db)

	// Enough virtual time for points polls and a few more: the first polls
	// have no window yet, each chart must hold points of its own, and a
	// read of the server's view now and then takes a turn of its own.
	budget := time.Duration(points+points/10+4) * refresh
	dom, console := runChromium(t, chromium, url, budget, "--dump-dom", "--window-size=1280,1000")
	doc := string(dom)
	require.Contains(t, doc, `id="chart-conns"`, "chromium printed no dashboard: %s", tailString(doc, 2000))

	// Every series has points: connections (acquired, idle, constructing,
	// waiting, max), utilization, acquire wait, query and error rate, p50
	// and p99.
	for id, series := range map[string]int{"chart-conns": 5, "chart-util": 1, "chart-wait": 1, "chart-rate": 2, "chart-latency": 2} {
		chart := domByID(t, doc, id)
		require.GreaterOrEqual(t, dataPoints(t, chart), points, id)
		polylines, n := chartPoints(chart)
		require.GreaterOrEqual(t, polylines, series, id)
		require.GreaterOrEqual(t, n, series*(points-2), id)
	}
	cards := domByID(t, doc, "cards")
	var sourceNames []string
	for _, src := range domFind(cards.inner, "section", withClass("source")) {
		h2 := domFind(src.inner, "h2", nil)
		require.NotEmpty(t, h2)
		sourceNames = append(sourceNames, h2[0].text())
		require.GreaterOrEqual(t, dataPoints(t, src), points-2, h2[0].text())
	}
	require.Equal(t, []string{"chat messages", "conversations cache"}, sourceNames)
	require.Equal(t, "chat-api", domByID(t, doc, "pool-name").text())
	titles := domFind(doc, "title", nil)
	require.Len(t, titles, 1)
	require.Equal(t, "pgkit · chat-api", titles[0].text())
	status, _ := domByID(t, doc, "status").attr("class")
	require.Equal(t, "status live", status)

	// The slow query's SQL is shown as text, and no script came of it.
	tbody := domFind(domByID(t, doc, "slow").inner, "tbody", nil)
	require.Len(t, tbody, 1)
	require.NotEmpty(t, domFind(tbody[0].inner, "tr", nil), "no slow query listed")
	var slowSQL []string
	for _, td := range domFind(tbody[0].inner, "td", withClass("sql")) {
		slowSQL = append(slowSQL, td.text())
	}
	require.Contains(t, slowSQL, xssShown)
	var plans []string
	for _, td := range domFind(tbody[0].inner, "td", withClass("plan")) {
		plans = append(plans, td.text())
	}
	require.True(t, slices.ContainsFunc(plans, func(p string) bool { return strings.HasPrefix(p, "Result, cost 0.0") }),
		"the slow statement's plan, shown when it came: %q", plans)
	require.Contains(t, tbody[0].inner, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.NotContains(t, tbody[0].inner, "<script")
	// The server's own view: the session holding a lock idle in its
	// transaction, the one it blocks with its blocker, the index never
	// scanned, the connections; no literal of the blocked statement.
	sessions := tableCells(t, doc, "server-sessions")
	require.True(t, slices.ContainsFunc(sessions, func(r []string) bool {
		return r[0] == "blocked" && r[1] == strconv.Itoa(waiter) && r[2] == "dash-waiter" && r[3] == "active" &&
			r[5] == "SELECT count(*) FROM dash_locked WHERE note <> ?" && r[6] == fmt.Sprintf("%d (dash-locker)", locker)
	}), "%q", sessions)
	require.True(t, slices.ContainsFunc(sessions, func(r []string) bool {
		return r[0] == "idle in transaction" && r[1] == strconv.Itoa(locker) && r[2] == "dash-locker"
	}), "%q", sessions)
	require.Contains(t, tableCells(t, doc, "server-indexes"), []string{"dash_locked", "dash_locked_note", "8 kB", "never scanned"})
	require.True(t, slices.ContainsFunc(tableCells(t, doc, "server-connections"), func(r []string) bool { return r[0] == "dash-waiter" }))
	require.Regexp(t, `^\(\d+ of \d+ connections · read \d\d:\d\d:\d\d\)$`, domByID(t, doc, "server-sub").text())
	require.Contains(t, domByID(t, doc, "server-statements-empty").text(), "pg_stat_statements is not installed")
	require.NotContains(t, doc, "sekret-dash-literal")
	var scripts []string
	for _, s := range domFind(doc, "script", nil) {
		src, ok := s.attr("src")
		if !ok {
			src = "inline"
		}
		scripts = append(scripts, src)
	}
	require.Equal(t, []string{"dashboard.js"}, scripts)

	// The picture for the docs: a second run, of the same length, that
	// saves the window (the page's full height at its width). Only on
	// request: under virtual time, chromium sometimes never takes it.
	var shotConsole []string
	if update {
		png := filepath.Join("docs", "dashboard.png")
		_, shotConsole = runChromium(t, chromium, url, budget, "--screenshot="+png, "--window-size=1280,2150")
		b, err := os.ReadFile(png)
		require.NoError(t, err)
		require.True(t, bytes.HasPrefix(b, []byte("\x89PNG")))
	}

	require.Empty(t, append(console, shotConsole...), "the page wrote to the console (an error, a CSP violation)")
	// Each request without credentials was the browser's first try, which
	// the 401 and its Basic challenge answered; each with them was served.
	// The page's polls of its data carried them from the start.
	logged := requests.take()
	var dataPolls int
	for _, r := range logged {
		require.Contains(t, []string{"/", "/dashboard.js", "/dashboard.css", "/data", "/server"}, r.path)
		if r.auth {
			require.Equal(t, http.StatusOK, r.status, "%v", r)
		} else {
			require.Equal(t, http.StatusUnauthorized, r.status, "%v", r)
			require.NotContains(t, []string{"/data", "/server"}, r.path, "a poll without the credentials: %v", r)
		}
		if r.path == "/data" && r.status == http.StatusOK {
			dataPolls++
		}
	}
	require.GreaterOrEqual(t, dataPolls, points, "%v", logged)
}

// holdLock opens two sessions on db's database: dash-locker, idle in a
// transaction that holds a lock on the table dash_locked (which has an
// index never scanned), and dash-waiter, blocked on that lock. It returns
// their server pids and undoes it all at cleanup.
func holdLock(t *testing.T, db *pgkit.DB) (locker, waiter int) {
	t.Helper()
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE dash_locked (note text); CREATE INDEX dash_locked_note ON dash_locked (note)`)
	require.NoError(t, err)
	connect := func(app string) *pgx.Conn {
		cfg, err := pgx.ParseConfig(db.Config().URL)
		require.NoError(t, err)
		cfg.RuntimeParams["application_name"] = app
		c, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	l, w := connect("dash-locker"), connect("dash-waiter")
	_, err = l.Exec(ctx, `BEGIN; LOCK TABLE dash_locked IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		_, err := w.Exec(ctx, `SELECT count(*) FROM dash_locked WHERE note <> 'sekret-dash-literal'`)
		waited <- err
	}()
	t.Cleanup(func() {
		_, err := l.Exec(ctx, `ROLLBACK`)
		require.NoError(t, err)
		require.NoError(t, <-waited)
	})
	require.Eventually(t, func() bool {
		var blocked bool
		err := db.QueryRow(ctx, `SELECT cardinality(pg_blocking_pids($1)) > 0`, w.PgConn().PID()).Scan(&blocked)
		return err == nil && blocked
	}, 10*time.Second, 10*time.Millisecond, "dash-waiter never waited for the lock")
	return int(l.PgConn().PID()), int(w.PgConn().PID())
}

// tableCells is the text of each cell of the table id's body, by row.
func tableCells(t *testing.T, doc, id string) [][]string {
	t.Helper()
	tbody := domFind(domByID(t, doc, id).inner, "tbody", nil)
	require.Len(t, tbody, 1, id)
	var rows [][]string
	for _, tr := range domFind(tbody[0].inner, "tr", nil) {
		var cells []string
		for _, td := range domFind(tr.inner, "td", nil) {
			cells = append(cells, td.text())
		}
		rows = append(rows, cells)
	}
	return rows
}
