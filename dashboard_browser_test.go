package pgkit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
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

// browserMessages collects what the page must not produce: console
// messages, uncaught exceptions, browser log warnings and errors (a CSP
// violation, a failed load), and dialogs (an alert from injected script).
type browserMessages struct {
	mu   sync.Mutex
	list []string
}

func (b *browserMessages) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
			msg = fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	case *page.EventJavascriptDialogOpening:
		msg = fmt.Sprintf("dialog %s: %s", ev.Type, ev.Message)
	}
	if msg != "" {
		b.mu.Lock()
		b.list = append(b.list, msg)
		b.mu.Unlock()
	}
}

func (b *browserMessages) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.list...)
}

// dashLoad runs a small service's traffic on db until stop: short queries of
// a few names, a failure now and then, a writer fed with messages and a
// cache in front of a query.
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
// chromium, headless) under a prefix, with traffic running, and checks what
// an operator sees: charts with points, the slow query listed as text, no
// script injected, no console error. It saves a screenshot to
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
	db := openTest(t, pgkit.Config{Name: "chat-api", SlowQueryThreshold: 50 * time.Millisecond})
	convID := seedConversation(t, db)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "chat messages", BatchSize: 200})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	cache := newDashCache(t, 300*time.Millisecond)
	startDashLoad(t, db, w, cache, convID)

	const token = "dashboard-test-token"
	url := serveDashboard(t, pgkit.DashboardHandler(db, pgkit.BearerToken(token),
		pgkit.WithDashboardRefresh(refresh),
		pgkit.WithDashboardWriter(w),
		pgkit.WithDashboardSource("conversations cache", cache.DashboardStats)))

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // chromium refuses to run as root with its sandbox
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// The network is closed: no background traffic of the browser's own.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelCtx) // runs first: closes the browser and waits for it

	var msgs browserMessages
	require.NoError(t, chromedp.Listen(ctx, msgs.listen)) // starts the browser
	_, err = chromedp.Call(ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Bearer " + token}})
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 1000), chromedp.Navigate(url)))

	_, err = db.Exec(context.Background(), xssSQL)
	require.NoError(t, err)

	// Wait until every chart has points and the slow query is listed.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = chromedp.Run(wctx, chromedp.Poll[bool](fmt.Sprintf(`(() => {
		const enough = (id) => Number(document.querySelector('#' + id + ' svg')?.getAttribute('data-points')) >= %d;
		const sources = document.querySelectorAll('#cards .source svg');
		return ['chart-conns', 'chart-util', 'chart-wait', 'chart-rate', 'chart-latency'].every(enough) &&
			sources.length === 2 && Array.from(sources).every((s) => Number(s.getAttribute('data-points')) >= %d - 2) &&
			document.querySelectorAll('#slow tbody tr').length > 0;
	})()`, points, points), chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(0)))
	require.NoError(t, err, "the page did not fill in; browser messages: %v", msgs.all())

	type pageState struct {
		Points      map[string]int `json:"points"`
		Polylines   map[string]int `json:"polylines"`
		SourceNames []string       `json:"sourceNames"`
		SlowSQL     []string       `json:"slowSQL"`
		SlowHTML    string         `json:"slowHTML"`
		Scripts     []string       `json:"scripts"`
		Pool        string         `json:"pool"`
		Status      string         `json:"status"`
		Title       string         `json:"title"`
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`(() => {
		const count = (sel) => Array.from(document.querySelectorAll(sel + ' polyline'))
			.reduce((n, p) => n + p.points.numberOfItems, 0);
		const ids = ['chart-conns', 'chart-util', 'chart-wait', 'chart-rate', 'chart-latency'];
		const points = {}, polylines = {};
		for (const id of ids) {
			points[id] = count('#' + id);
			polylines[id] = document.querySelectorAll('#' + id + ' polyline').length;
		}
		return {
			points, polylines,
			sourceNames: Array.from(document.querySelectorAll('#cards .source h2')).map((h) => h.textContent),
			slowSQL: Array.from(document.querySelectorAll('#slow tbody td.sql')).map((td) => td.textContent),
			slowHTML: document.querySelector('#slow tbody').innerHTML,
			scripts: Array.from(document.scripts).map((s) => s.getAttribute('src') || 'inline'),
			pool: document.getElementById('pool-name').textContent,
			status: document.getElementById('status').className,
			title: document.title,
		};
	})()`))
	require.NoError(t, err)

	// Every series has points: connections (acquired, idle, constructing,
	// waiting, max), utilization, acquire wait, query and error rate, p50
	// and p99.
	for id, series := range map[string]int{"chart-conns": 5, "chart-util": 1, "chart-wait": 1, "chart-rate": 2, "chart-latency": 2} {
		require.GreaterOrEqual(t, st.Polylines[id], series, id)
		require.GreaterOrEqual(t, st.Points[id], series*(points-2), id)
	}
	require.Equal(t, []string{"chat messages", "conversations cache"}, st.SourceNames)
	require.Equal(t, "chat-api", st.Pool)
	require.Equal(t, "pgkit · chat-api", st.Title)
	require.Equal(t, "status live", st.Status)

	// The slow query's SQL is shown as text, and no script came of it.
	require.Contains(t, st.SlowSQL, xssSQL)
	require.Contains(t, st.SlowHTML, "&lt;script&gt;alert(1)&lt;/script&gt;")
	require.NotContains(t, st.SlowHTML, "<script")
	require.Equal(t, []string{"dashboard.js"}, st.Scripts)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(png), "\x89PNG"))
	require.NoError(t, os.MkdirAll(filepath.Join("testdata", "artifacts"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join("testdata", "artifacts", "dashboard.png"), png, 0o644))
	if update {
		require.NoError(t, os.MkdirAll("docs", 0o755))
		require.NoError(t, os.WriteFile(filepath.Join("docs", "dashboard.png"), png, 0o644))
	}

	require.Empty(t, msgs.all(), "the page wrote to the console or the browser log")
}
