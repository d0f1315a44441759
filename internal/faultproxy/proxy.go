// Package faultproxy is a TCP proxy for tests that puts faults between pgkit
// and a real server: it forwards bytes both ways until told to cut a
// connection at a chosen moment.
package faultproxy

import (
	"bytes"
	"net"
	"sync"
)

// Proxy forwards every connection made to Addr to the target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	pairs   map[*pair]struct{}
	cutOn   []byte // armed by CutAfterReplyTo; nil when not armed
	closed  bool
	workers sync.WaitGroup
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
	p := &Proxy{ln: ln, target: target, pairs: map[*pair]struct{}{}}
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

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
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
		server, err := net.Dial("tcp", p.target)
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
		if n > 0 {
			p.mu.Lock()
			cut := p.cutOn != nil && bytes.Contains(buf[:n], p.cutOn)
			if cut {
				p.cutOn = nil
			}
			p.mu.Unlock()
			println("c->s", n, cut, string(buf[:n]))
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
		if n > 0 {
			select {
			case <-pr.swallowReply:
				println("swallow", n)
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
