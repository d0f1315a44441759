// Package faultproxy is a TCP proxy for tests that puts faults between pgkit
// and a real server: it forwards bytes both ways, and on command adds
// latency, stops forwarding while keeping connections open (a silent
// partition), resets every connection, or cuts one at a chosen moment.
package faultproxy

import (
	"bytes"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards every connection made to Addr to the target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	pairs   map[*pair]struct{}
	cutOn   []byte        // armed by CutAfterReplyTo; nil when not armed
	cutAt   int64         // armed by CutAfterBytes: client bytes still to forward; 0 when not armed
	latency time.Duration // added before each server reply is forwarded
	jitter  time.Duration // latency varies by up to ± jitter
	paused  chan struct{} // non-nil while paused; closed by Resume
	closed  bool
	done    chan struct{} // closed by Close
	workers sync.WaitGroup

	accepted atomic.Int64 // connections made to the proxy
	refusing atomic.Bool  // set by Refuse: new connections are reset at once
}

type pair struct {
	client, server net.Conn
	swallowReply   chan struct{} // closed when the next server reply must be swallowed
	once           sync.Once
}

func (p *pair) close() {
	_ = p.client.Close()
	_ = p.server.Close()
}

// Start listens on a free port of 127.0.0.1 and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, pairs: map[*pair]struct{}{}, done: make(chan struct{})}
	p.workers.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutAfterReplyTo arms the proxy: the next client message that contains
// pattern is forwarded to the server, the server's reply to it is swallowed,
// and that client's connection is cut. The server has acted on the message;
// the client cannot know it. For a COMMIT this is the ambiguous commit.
func (p *Proxy) CutAfterReplyTo(pattern []byte) {
	p.mu.Lock()
	p.cutOn = pattern
	p.mu.Unlock()
}

// CutAfterBytes arms the proxy: after n more bytes from clients (counted
// across connections, from now) have been forwarded, the connection that
// sent the n-th byte is cut, in the middle of whatever it was sending.
func (p *Proxy) CutAfterBytes(n int64) {
	p.mu.Lock()
	p.cutAt = n
	p.mu.Unlock()
}

// SetLatency delays every reply from the server by d ± jitter (uniformly).
// Zero removes the delay.
func (p *Proxy) SetLatency(d, jitter time.Duration) {
	p.mu.Lock()
	p.latency, p.jitter = d, jitter
	p.mu.Unlock()
}

// Pause stops forwarding in both directions while keeping every connection
// open, and new connections are accepted but get no answer: a silent
// partition, the fault that turns missing timeouts into hangs.
func (p *Proxy) Pause() {
	p.mu.Lock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
	p.mu.Unlock()
}

// Resume forwards again what Pause held back.
func (p *Proxy) Resume() {
	p.mu.Lock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
	p.mu.Unlock()
}

// SetTarget sends new connections to target from now on, as a DNS name or
// a virtual address that moves to another server; connections open now
// stay where they are.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// ResetAll cuts every connection open now, as a restarting server or a
// failing middlebox would.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	for pr := range p.pairs {
		pr.close()
	}
	p.mu.Unlock()
}

// Refuse, while on, resets every new connection as soon as it is made,
// before a byte is read or forwarded: the server looks down (stopped, or
// restarting), and each connection attempt is still counted by Accepted.
// Connections already open are left alone; ResetAll cuts them.
func (p *Proxy) Refuse(on bool) { p.refusing.Store(on) }

// Accepted is the number of connections made to the proxy since Start,
// refused ones included: what a server behind it would count as connection
// attempts.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// gate waits while the proxy is paused; false when the proxy closed.
func (p *Proxy) gate() bool {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused == nil {
		return true
	}
	select {
	case <-paused:
		return true
	case <-p.done:
		return false
	}
}

// delay waits the configured latency; false when the proxy closed.
func (p *Proxy) delay() bool {
	p.mu.Lock()
	d, j := p.latency, p.jitter
	p.mu.Unlock()
	if j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j))) - j
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	for pr := range p.pairs {
		pr.close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.workers.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.workers.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if p.refusing.Load() {
			if tc, ok := client.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close with a reset, as a port nobody listens on answers
			}
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		server, err := net.Dial("tcp", target)
		if err != nil {
			_ = client.Close()
			continue
		}
		pr := &pair{client: client, server: server, swallowReply: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pr.close()
			return
		}
		p.pairs[pr] = struct{}{}
		p.mu.Unlock()
		p.workers.Add(2)
		go p.clientToServer(pr)
		go p.serverToClient(pr)
	}
}

func (p *Proxy) clientToServer(pr *pair) {
	defer p.workers.Done()
	defer p.drop(pr)
	buf := make([]byte, 32<<10)
	for {
		n, err := pr.client.Read(buf)
		if n > 0 && !p.gate() {
			return
		}
		if n > 0 {
			p.mu.Lock()
			cut := p.cutOn != nil && bytes.Contains(buf[:n], p.cutOn)
			if cut {
				p.cutOn = nil
			}
			cutHere := -1
			if p.cutAt > 0 {
				if int64(n) >= p.cutAt {
					cutHere, p.cutAt = int(p.cutAt), 0
				} else {
					p.cutAt -= int64(n)
				}
			}
			p.mu.Unlock()
			if cutHere >= 0 {
				_, _ = pr.server.Write(buf[:cutHere])
				return // drop closes both sides mid-message
			}
			if cut {
				pr.once.Do(func() { close(pr.swallowReply) })
			}
			if _, werr := pr.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) serverToClient(pr *pair) {
	defer p.workers.Done()
	defer p.drop(pr)
	buf := make([]byte, 32<<10)
	for {
		n, err := pr.server.Read(buf)
		if n > 0 && (!p.gate() || !p.delay()) {
			return
		}
		if n > 0 {
			select {
			case <-pr.swallowReply:
				return // the reply is lost with the connection
			default:
			}
			if _, werr := pr.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(pr *pair) {
	pr.close()
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}
