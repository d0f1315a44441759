package pgkit

import (
	"sync/atomic"
	"unsafe"

	"github.com/jackc/pgx/v5"
)

// connCache finds a connection's connState without reading CustomData, a
// map whose string key is hashed on every lookup, four or five times per
// checkout and statement: a table indexed by the *pgx.Conn's address. A
// slot holds a connState, which holds its *pgx.Conn, so no other connection
// can be given that address while the slot keeps it; connClosed empties the
// slot. A miss (a new connection, or two sharing a slot) reads CustomData
// and takes the slot.
type connCache [connCacheSlots]atomic.Pointer[connState]

const connCacheBits = 9
const connCacheSlots = 1 << connCacheBits

func (c *connCache) slot(conn *pgx.Conn) *atomic.Pointer[connState] {
	// Fibonacci hashing: the top bits of the address times 2^64/φ.
	h := uint64(uintptr(unsafe.Pointer(conn))) * 0x9E3779B97F4A7C15
	return &c[h>>(64-connCacheBits)]
}

// get is conn's connState if its slot holds it.
func (c *connCache) get(conn *pgx.Conn) *connState {
	if cs := c.slot(conn).Load(); cs != nil && cs.conn == conn {
		return cs
	}
	return nil
}

func (c *connCache) put(cs *connState) { c.slot(cs.conn).Store(cs) }

// drop empties cs's slot if it holds cs.
func (c *connCache) drop(cs *connState) { c.slot(cs.conn).CompareAndSwap(cs, nil) }
