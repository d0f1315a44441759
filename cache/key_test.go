package cache_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

func TestKeyEncoding(t *testing.T) {
	t.Parallel()
	require.Equal(t, "acme:dashboard_stats", cache.Key("acme", "dashboard_stats"))
	require.Equal(t, "acme", cache.Key("acme"))
	require.Equal(t, `a\:b:c`, cache.Key("a:b", "c"))
	require.Equal(t, `a:b\:c`, cache.Key("a", "b:c"))

	pairs := [][2][]string{
		{{"a:b", "c"}, {"a", "b:c"}},
		{{"a", "b", "c"}, {"a", "b:c"}},
		{{"a"}, {"a", ""}},
		{{""}, {"", ""}},
		{{`a\`, "b"}, {"a", `\b`}},
		{{`a\:b`}, {`a\`, "b"}},
		{{`a\`, ":b"}, {"a", `\:b`}},
		{{"t1", "x"}, {"t", "1:x"}},
	}
	for _, p := range pairs {
		require.NotEqual(t, cache.Key(p[0][0], p[0][1:]...), cache.Key(p[1][0], p[1][1:]...), "%q vs %q", p[0], p[1])
	}
}

// TestKeyInjective decodes random keys made of the characters that matter
// back to their parts: if decoding always gives the parts back, no two part
// lists share a key.
func TestKeyInjective(t *testing.T) {
	t.Parallel()
	alphabet := []string{"a", ":", `\`, "b"}
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		var b strings.Builder
		for range r.IntN(4) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 20000 {
		parts := make([]string, 1+r.IntN(4))
		for i := range parts {
			parts[i] = word()
		}
		key := cache.Key(parts[0], parts[1:]...)
		require.Equal(t, parts, decodeKey(key), "key %q", key)
		require.True(t, strings.HasPrefix(key, strings.NewReplacer(`\`, `\\`, ":", `\:`).Replace(parts[0])),
			"a key starts with its tenant")
	}
}

func decodeKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '\\':
			i++
			cur.WriteByte(key[i])
		case ':':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(key[i])
		}
	}
	return append(parts, cur.String())
}

// TestTenantIsolation: tenant A's cache never returns tenant B's
// value, even for keys built to collide naively.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := newCache[string](t, kind.new(t), cache.Config{Name: "tenants"})
			var loaded []string
			load := func(v string) func(context.Context) (string, error) {
				return func(context.Context) (string, error) { loaded = append(loaded, v); return v, nil }
			}
			// Naive "tenant:key" would make both "a:b:c".
			va, err := c.Tenant("a:b").GetOrLoad(ctx, "c", load("value of tenant a:b"))
			require.NoError(t, err)
			vb, err := c.Tenant("a").GetOrLoad(ctx, "b:c", load("value of tenant a"))
			require.NoError(t, err)
			require.Equal(t, "value of tenant a:b", va)
			require.Equal(t, "value of tenant a", vb)

			for _, tenant := range []string{"acme", "globex"} {
				_, err := c.Tenant(tenant).GetOrLoad(ctx, "dashboard_stats", load(tenant+"'s stats"))
				require.NoError(t, err)
			}
			for _, tenant := range []string{"acme", "globex"} {
				v, err := c.Tenant(tenant).GetOrLoad(ctx, "dashboard_stats", load("not a hit"))
				require.NoError(t, err)
				require.Equal(t, tenant+"'s stats", v)
			}
			require.NoError(t, c.Tenant("acme").Delete(ctx, "dashboard_stats"))
			v, err := c.Tenant("globex").GetOrLoad(ctx, "dashboard_stats", load("not a hit"))
			require.NoError(t, err)
			require.Equal(t, "globex's stats", v, "deleting acme's entry left globex's")
			require.False(t, slices.Contains(loaded, "not a hit"))
			require.Equal(t, cache.Key("acme", "x", "y"), c.Tenant("acme").Key("x", "y"))

			_, err = c.Tenant("").GetOrLoad(ctx, "dashboard_stats", load("never"))
			require.ErrorIs(t, err, pgkit.ErrEmptyTenant)
			require.ErrorContains(t, err, "pgkit: cache.Tenant.GetOrLoad: empty tenant id")
			require.ErrorIs(t, c.Tenant("").Delete(ctx, "x"), pgkit.ErrEmptyTenant)
		})
	}
}
