package cache

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCopyable: the types whose plain copy shares nothing a caller could
// modify, and those that do not qualify.
func TestCopyable(t *testing.T) {
	type flat struct {
		ID   int64
		Name string
		At   time.Time
		Pair [2]float64
		In   struct{ OK bool }
	}
	type withSlice struct {
		ID   int64
		Tags []string
	}
	type deep struct {
		Inner struct{ P *int }
	}
	type private struct {
		n   int
		ptr *int
	}
	for _, c := range []struct {
		t    reflect.Type
		want bool
	}{
		{reflect.TypeFor[int](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[time.Time](), true},
		{reflect.TypeFor[flat](), true},
		{reflect.TypeFor[[3]flat](), true},
		{reflect.TypeFor[withSlice](), false},
		{reflect.TypeFor[deep](), false},
		{reflect.TypeFor[private](), false},
		{reflect.TypeFor[*flat](), false},
		{reflect.TypeFor[[]byte](), false},
		{reflect.TypeFor[map[string]int](), false},
		{reflect.TypeFor[any](), false},
		{reflect.TypeFor[[1]any](), false},
		{reflect.TypeFor[chan int](), false},
		{reflect.TypeFor[func()](), false},
	} {
		require.Equal(t, c.want, copyable(c.t), "%v", c.t)
	}
	require.Nil(t, newDecodeMemo[withSlice]())
	require.NotNil(t, newDecodeMemo[flat]())
}

// TestDecodeMemoNeverAnswersForOtherBytes: with many more encodings than
// places, every answer the memo gives is the value put for exactly those
// bytes; encodings sharing a set replace each other.
func TestDecodeMemoNeverAnswersForOtherBytes(t *testing.T) {
	type value struct{ N int }
	m := newDecodeMemo[value]()
	enc := func(n int) []byte { b, _ := json.Marshal(value{n}); return append([]byte{kindValue}, b...) }
	const places, n = memoSets * memoWays, 10 * memoSets * memoWays
	for i := range n {
		_, hash, ok := m.get(enc(i))
		require.False(t, ok, "%d before it was put", i)
		b := enc(i)
		m.put(hash, b, value{i})
		b[1] = 'x' // the caller's slice may be reused: the memo kept a copy
	}
	found := 0
	for i := range n {
		if v, _, ok := m.get(enc(i)); ok {
			require.Equal(t, value{i}, v, "the value remembered for %s", enc(i))
			found++
		}
	}
	require.Equal(t, places, found, "every place holds one of the encodings")
}

// TestDecodeMemoSize: the codec's output is remembered up to memoMaxBytes
// (the kind byte not counted), not beyond.
func TestDecodeMemoSize(t *testing.T) {
	m := newDecodeMemo[int]()
	for size, want := range map[int]bool{1: true, memoMaxBytes: true, memoMaxBytes + 1: false} {
		enc := append([]byte{kindValue}, bytes.Repeat([]byte{'1'}, size)...)
		_, hash, ok := m.get(enc)
		require.False(t, ok)
		m.put(hash, enc, size)
		v, _, ok := m.get(enc)
		require.Equal(t, want, ok, "codec output of %d bytes", size)
		if ok {
			require.Equal(t, size, v)
		}
	}
}
