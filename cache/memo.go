package cache

import (
	"bytes"
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"time"
)

// A hot key is read far more often than it changes, so most hits fetch the
// same bytes as the hit before them. For a T that a plain copy makes
// independent (see copyable), the cache keeps the values it decoded last,
// by their bytes, and a hit whose bytes are one of those copies the value
// instead of decoding it again: the round trip stays, the decode (most of a
// hit's own CPU with JSON) goes. The answer is the one decoding would give,
// since a Codec decodes the same bytes to the same value.

const (
	memoSets     = 32      // sets of memoWays values, chosen by a hash of their bytes
	memoWays     = 4       // values per set: up to 4 whose hashes share a set stay together
	memoMaxBytes = 4 << 10 // larger encodings (the codec's output) are decoded on every hit
)

// decodeMemo maps encodings to their decoded values, memoSets*memoWays of
// them: a new encoding takes a free place in its set, else a random one.
// It is safe for concurrent use; entries never change once stored.
type decodeMemo[T any] struct {
	seed maphash.Seed
	sets [memoSets][memoWays]atomic.Pointer[memoEntry[T]]
}

type memoEntry[T any] struct {
	hash uint64
	enc  []byte // a copy: the store may reuse the slice it returned
	v    T
}

// newDecodeMemo returns a memo for T, or nil when a copy of a T could share
// memory with the original that a caller might modify.
func newDecodeMemo[T any]() *decodeMemo[T] {
	if !copyable(reflect.TypeFor[T]()) {
		return nil
	}
	return &decodeMemo[T]{seed: maphash.MakeSeed()}
}

// remembers reports whether enc (the kind byte, then the codec's output) is
// small enough to be remembered.
func remembers(enc []byte) bool { return len(enc)-1 <= memoMaxBytes }

// get returns the value decoded from enc, if it is remembered, and enc's
// hash for put.
func (m *decodeMemo[T]) get(enc []byte) (v T, hash uint64, ok bool) {
	if !remembers(enc) {
		return v, 0, false
	}
	hash = maphash.Bytes(m.seed, enc)
	set := &m.sets[hash%memoSets]
	for i := range set {
		if e := set[i].Load(); e != nil && e.hash == hash && bytes.Equal(e.enc, enc) {
			return e.v, hash, true
		}
	}
	return v, hash, false
}

// put remembers v as the value decoded from enc, whose hash get returned.
func (m *decodeMemo[T]) put(hash uint64, enc []byte, v T) {
	if !remembers(enc) {
		return
	}
	e := &memoEntry[T]{hash: hash, enc: bytes.Clone(enc), v: v}
	set := &m.sets[hash%memoSets]
	for i := range set {
		if set[i].Load() == nil && set[i].CompareAndSwap(nil, e) {
			return
		}
	}
	set[rand.IntN(memoWays)].Store(e)
}

var timeType = reflect.TypeFor[time.Time]()

// copyable reports whether assigning a value of type t gives a copy that
// shares nothing mutable with the original: no pointer, slice, map,
// interface, channel or function anywhere inside it. Strings are immutable,
// and so is the *time.Location inside a time.Time.
func copyable(t reflect.Type) bool {
	if t == timeType {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return copyable(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !copyable(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
