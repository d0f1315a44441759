package cache

import (
	"bytes"
	"hash/maphash"
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
	memoSlots    = 128     // values remembered per cache, by hash of their bytes
	memoMaxBytes = 4 << 10 // larger encodings are decoded on every hit
)

// decodeMemo maps encodings to their decoded values, one per slot: a new
// encoding replaces the one in its slot. It is safe for concurrent use;
// entries never change once stored.
type decodeMemo[T any] struct {
	seed  maphash.Seed
	slots [memoSlots]atomic.Pointer[memoEntry[T]]
}

type memoEntry[T any] struct {
	enc []byte // a copy: the store may reuse the slice it returned
	v   T
}

// newDecodeMemo returns a memo for T, or nil when a copy of a T could share
// memory with the original that a caller might modify.
func newDecodeMemo[T any]() *decodeMemo[T] {
	if !copyable(reflect.TypeFor[T]()) {
		return nil
	}
	return &decodeMemo[T]{seed: maphash.MakeSeed()}
}

// get returns the value decoded from enc, if it is remembered, and the
// slot to put it in after decoding it (-1: too large to remember).
func (m *decodeMemo[T]) get(enc []byte) (v T, slot int, ok bool) {
	if len(enc) > memoMaxBytes {
		return v, -1, false
	}
	slot = int(maphash.Bytes(m.seed, enc) % memoSlots)
	if e := m.slots[slot].Load(); e != nil && bytes.Equal(e.enc, enc) {
		return e.v, slot, true
	}
	return v, slot, false
}

// put remembers v as the value decoded from enc, in slot (from get).
func (m *decodeMemo[T]) put(slot int, enc []byte, v T) {
	if slot >= 0 {
		m.slots[slot].Store(&memoEntry[T]{enc: bytes.Clone(enc), v: v})
	}
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
