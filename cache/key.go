package cache

import (
	"context"
	"strings"

	"github.com/pgkit-dev/pgkit"
)

// Key builds a cache key from a tenant and parts: the tenant first, then each
// part, separated by ':'. A ':' or '\' inside the tenant or a part is escaped
// with '\', so the encoding is injective: two different (tenant, parts...)
// lists never give the same key. Key("a:b", "c") is `a\:b:c` and
// Key("a", "b:c") is `a:b\:c`; Key("acme", "dashboard_stats") is
// "acme:dashboard_stats", so keys stay readable in redis-cli and every key of
// a tenant starts with that tenant.
//
// An empty tenant is allowed here, for keys that belong to no tenant; a
// Tenant (Cache.Tenant) refuses one.
func Key(tenant string, parts ...string) string { return prefixedKey("", tenant, parts...) }

// prefixedKey is prefix + Key(tenant, parts...), built with one allocation.
func prefixedKey(prefix, tenant string, parts ...string) string {
	n := len(prefix) + len(tenant)
	for _, p := range parts {
		n += 1 + len(p)
	}
	var b strings.Builder
	b.Grow(n + 4)
	b.WriteString(prefix)
	writeKeyPart(&b, tenant)
	for _, p := range parts {
		b.WriteByte(':')
		writeKeyPart(&b, p)
	}
	return b.String()
}

// writeKeyPart writes s with ':' and '\' escaped by '\'.
func writeKeyPart(b *strings.Builder, s string) {
	if !strings.ContainsAny(s, `:\`) {
		b.WriteString(s)
		return
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ':' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
}

// Tenant is a Cache seen by one tenant: every key it is given is turned
// into Key(tenant, key) before it reaches the cache, so one tenant's code
// cannot read or invalidate another tenant's entries, whatever the key.
// Get one with Cache.Tenant; it is a small value, cheap to make per request.
type Tenant[T any] struct {
	c      *Cache[T]
	tenant string
}

// Tenant returns c scoped to tenant (see the type Tenant). An empty tenant
// is refused by GetOrLoad and Delete with an error that matches
// pgkit.ErrEmptyTenant.
func (c *Cache[T]) Tenant(tenant string) Tenant[T] {
	return Tenant[T]{c: c, tenant: tenant}
}

// Key returns the cache key of parts for this tenant: Key(tenant, parts...).
func (tc Tenant[T]) Key(parts ...string) string { return Key(tc.tenant, parts...) }

// GetOrLoad is Cache.GetOrLoad with the key Key(tenant, key).
func (tc Tenant[T]) GetOrLoad(ctx context.Context, key string, load func(ctx context.Context) (T, error)) (T, error) {
	if tc.tenant == "" {
		var zero T
		return zero, emptyTenantError{"cache.Tenant.GetOrLoad"}
	}
	return tc.c.getOrLoad(ctx, prefixedKey(tc.c.prefix, tc.tenant, key), load)
}

// Delete is Cache.Delete of Key(tenant, key) for each key.
func (tc Tenant[T]) Delete(ctx context.Context, keys ...string) error {
	if tc.tenant == "" {
		return emptyTenantError{"cache.Tenant.Delete"}
	}
	return tc.c.Delete(ctx, tc.keys(keys)...)
}

// InvalidateOnCommit is Cache.InvalidateOnCommit of Key(tenant, key) for
// each key. With an empty tenant it does nothing: GetOrLoad stored nothing
// for it.
func (tc Tenant[T]) InvalidateOnCommit(tx OnCommitter, keys ...string) {
	if tc.tenant == "" {
		return
	}
	tc.c.InvalidateOnCommit(tx, tc.keys(keys)...)
}

func (tc Tenant[T]) keys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = Key(tc.tenant, k)
	}
	return out
}

// emptyTenantError is pgkit.ErrEmptyTenant with the name of the call that
// refused the empty id.
type emptyTenantError struct{ where string }

func (e emptyTenantError) Error() string        { return "pgkit: " + e.where + ": empty tenant id" }
func (e emptyTenantError) Is(target error) bool { return target == pgkit.ErrEmptyTenant }
