package pgkit

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// errClosing refuses a dial once the DB is closing.
var errClosing = errors.New("pgkit: the DB is closing")

// sockets tracks every socket a DB's pools dial, so that closing does not
// wait on a server that stopped answering. pgx cleans up a broken
// connection by dialing the server again for a cancel request and draining
// the old socket, each bounded by 15 s: against a frozen server, that is
// 15 s of Close. Once the DB is closing, new dials fail at once, and the
// sockets that are not pool connections (cancel requests, connects in
// progress) get an expired deadline; Shutdown expires them all.
type sockets struct {
	mu      sync.Mutex
	open    map[*socket]struct{}
	closing bool
}

// socket is a dialed net.Conn the set knows about until it is closed.
type socket struct {
	net.Conn
	set    *sockets
	pooled atomic.Bool // a connection of the pool, not a cancel request
}

func newSockets() *sockets { return &sockets{open: make(map[*socket]struct{})} }

// wrap returns dial with every socket it opens tracked.
func (s *sockets) wrap(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if s.isClosing() {
			return nil, errClosing
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sk := &socket{Conn: c, set: s}
		s.mu.Lock()
		closing := s.closing
		if !closing {
			s.open[sk] = struct{}{}
		}
		s.mu.Unlock()
		if closing {
			_ = c.Close()
			return nil, errClosing
		}
		return sk, nil
	}
}

func (s *sockets) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// close refuses new dials and ends what is not a pool connection.
func (s *sockets) close() { s.expire(false) }

// expire refuses new dials and puts a deadline of now on the sockets open:
// all of them, or only those that are not pool connections. A blocked read
// or write on them returns at once.
func (s *sockets) expire(all bool) {
	s.mu.Lock()
	s.closing = true
	var list []*socket
	for sk := range s.open {
		if all || !sk.pooled.Load() {
			list = append(list, sk)
		}
	}
	s.mu.Unlock()
	for _, sk := range list {
		_ = sk.Conn.SetDeadline(time.Now())
	}
}

// closeAll closes every socket still open.
func (s *sockets) closeAll() {
	s.mu.Lock()
	list := make([]*socket, 0, len(s.open))
	for sk := range s.open {
		list = append(list, sk)
	}
	s.mu.Unlock()
	for _, sk := range list {
		_ = sk.Close()
	}
}

// Close closes the socket and forgets it.
func (sk *socket) Close() error {
	sk.set.mu.Lock()
	delete(sk.set.open, sk)
	sk.set.mu.Unlock()
	return sk.Conn.Close()
}

// NetConn returns the socket pgkit wraps, as tls.Conn.NetConn does.
func (sk *socket) NetConn() net.Conn { return sk.Conn }

// SyscallConn gives the raw connection of the socket underneath, for
// socket options.
func (sk *socket) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := sk.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// markPooled records that conn is a pool connection (TLS or not).
func markPooled(conn net.Conn) {
	for conn != nil {
		if sk, ok := conn.(*socket); ok {
			sk.pooled.Store(true)
			return
		}
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		conn = u.NetConn()
	}
}
