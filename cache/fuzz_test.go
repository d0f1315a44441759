package cache_test

import (
	"strings"
	"testing"

	"github.com/pgkit-dev/pgkit/cache"
)

// The fuzz target of the cache's key encoding. It runs its corpus
// (testdata/fuzz) in every go test; explore with, for example:
//
//	go test -run '^$' -fuzz FuzzKey -fuzztime 30s ./cache
//
// make fuzz runs it for FUZZTIME.

// FuzzKey: Key is injective: splitting the fuzzer's input into a tenant and
// parts two different ways never yields one key for two different lists.
func FuzzKey(f *testing.F) {
	f.Add("a:b", "c", "a", "b:c")
	f.Add(`a\`, ":b", "a", `\:b`)
	f.Fuzz(func(t *testing.T, t1, p1, t2, p2 string) {
		if t1 == t2 && p1 == p2 {
			return
		}
		if k1, k2 := cache.Key(t1, p1), cache.Key(t2, p2); k1 == k2 {
			t.Fatalf("cache.Key(%q, %q) == cache.Key(%q, %q) == %q", t1, p1, t2, p2, k1)
		}
		if !strings.HasPrefix(cache.Key(t1, p1), strings.NewReplacer(`\`, `\\`, ":", `\:`).Replace(t1)) {
			t.Fatalf("cache.Key(%q, ...) does not start with its tenant", t1)
		}
	})
}
