package pgkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

var metricName = regexp.MustCompile(`\bpgkit_[a-z0-9_]+`)

// monitoringMetricNames returns the pgkit metric names used by the alert
// rules and by the dashboard's queries.
func monitoringMetricNames(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	rules, err := os.ReadFile("examples/monitoring/alerts.yml")
	require.NoError(t, err)
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, n := range metricName.FindAllString(line, -1) {
			used[n] = append(used[n], "alerts.yml")
		}
	}
	raw, err := os.ReadFile("examples/monitoring/grafana-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				used[n] = append(used[n], "dashboard: "+p.Title)
			}
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok {
			for _, n := range metricName.FindAllString(q, -1) {
				used[n] = append(used[n], "dashboard variable")
			}
		}
	}
	return used
}

// TestMonitoringNamesExist runs real work through pgkit (queries, a slow one,
// a failing one, transactions with retries, a writer, a cache, leak detection)
// and fails if alerts.yml or grafana-dashboard.json use a metric that pgkit
// does not export: a renamed metric breaks this test, not a pager at 3 am.
func TestMonitoringNamesExist(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	// A replica that is down still has its metrics.
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "mon", SlowQueryThreshold: 20 * time.Millisecond, LeakThreshold: time.Minute,
		ReplicaURLs: []string{"postgres://postgres@127.0.0.1:1/x?sslmode=disable"}, ReplicaCheckPeriod: time.Hour})
	ctx := context.Background()
	convID := newConversation(t, db)

	_, err := db.Exec(ctx, `SELECT pg_sleep(0.03)`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `SELECT 1/0`)
	require.Error(t, err)
	unit := pgkit.WithStats(ctx)
	for i := range pgkit.DefaultNPlusOneThreshold + 1 { // a query in a loop
		_, err = db.Exec(unit, `SELECT $1::int`, i)
		require.NoError(t, err)
	}
	attempts := 0
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		if attempts++; attempts == 1 {
			_, err := tx.Exec(ctx, serializationFailure)
			return err
		}
		return nil
	}, pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond})))

	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "mon"})
	require.NoError(t, err)
	require.NoError(t, w.Write(ctx, chatMsg(convID, 1)))
	require.NoError(t, w.Flush(ctx))
	defer func() { require.NoError(t, w.Close(ctx)) }()

	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{})
	require.NoError(t, err)
	defer store.Close()
	c, err := cache.New[int](store, cache.Config{Name: "mon", Registerer: reg})
	require.NoError(t, err)
	defer c.Close()
	for range 2 {
		_, err := c.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 1, nil })
		require.NoError(t, err)
	}

	mfs, err := reg.Gather()
	require.NoError(t, err)
	exported := map[string]dto.MetricType{}
	for _, mf := range mfs {
		exported[mf.GetName()] = mf.GetType()
	}
	used := monitoringMetricNames(t)
	require.Greater(t, len(used), 15, "the rules and the dashboard use pgkit's metrics")
	var missing []string
	for name, where := range used {
		if _, ok := exported[name]; ok {
			continue
		}
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if typ, ok := exported[base]; ok && base != name && typ == dto.MetricType_HISTOGRAM {
			continue
		}
		missing = append(missing, name+" (used in "+strings.Join(slices.Compact(where), ", ")+")")
	}
	slices.Sort(missing)
	require.Empty(t, missing, "metrics used by examples/monitoring that pgkit does not export")
}

// TestAlertRules runs promtool on the rules and their unit tests, as make
// test does, so that a plain go test catches a broken rule too.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if errors.Is(err, exec.ErrNotFound) {
		t.Fatal("promtool is missing: run `make deps` (Debian: apt-get install prometheus)")
	}
	require.NoError(t, err)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "examples/monitoring"
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}
