package redistest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// LossyProxy is a TCP proxy in front of a Redis server that can lose the
// reply to one command after Redis has run it, as a network that stalls
// past the client's read timeout does. go-redis then sends the command
// again on a fresh connection, so a script runs twice for one call: the
// tests show that every such script recognises its own first run.
type LossyProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	marker []byte // client writes holding it are counted
	lose   atomic.Bool
	seen   atomic.Int64
	lost   atomic.Int64
	conns  sync.WaitGroup
	closed atomic.Bool
}

// NewLossyProxy starts a proxy to the Redis at target on a free loopback
// port; it stops with the test.
func NewLossyProxy(tb testing.TB, target string) *LossyProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("lossy proxy: %v", err)
	}
	p := &LossyProxy{ln: ln, target: target}
	go p.accept()
	tb.Cleanup(func() {
		p.closed.Store(true)
		_ = ln.Close()
		p.conns.Wait()
	})
	return p
}

// Addr is the proxy's address, for the client under test.
func (p *LossyProxy) Addr() string { return p.ln.Addr().String() }

// LoseReplyTo arms the proxy: the next command whose request holds marker
// (a script's SHA, say) reaches Redis, and its reply is dropped.
func (p *LossyProxy) LoseReplyTo(marker string) {
	p.mu.Lock()
	p.marker = []byte(marker)
	p.seen.Store(0)
	p.lose.Store(true)
	p.mu.Unlock()
}

// Seen counts the client writes that held the last marker since
// LoseReplyTo: the first send and every resend.
func (p *LossyProxy) Seen() int64 { return p.seen.Load() }

// Lost counts the replies the proxy dropped.
func (p *LossyProxy) Lost() int64 { return p.lost.Load() }

func (p *LossyProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		var armed atomic.Bool
		p.conns.Add(2)
		go func() {
			defer p.conns.Done()
			defer s.Close()
			p.pump(c, s, func(b []byte) bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				if len(p.marker) > 0 && bytes.Contains(b, p.marker) {
					p.seen.Add(1)
					if p.lose.CompareAndSwap(true, false) {
						armed.Store(true)
					}
				}
				return true
			})
		}()
		go func() {
			defer p.conns.Done()
			defer c.Close()
			p.pump(s, c, func([]byte) bool {
				if armed.CompareAndSwap(true, false) {
					p.lost.Add(1)
					return false
				}
				return true
			})
		}()
	}
}

// pump copies from src to dst, chunk by chunk, dropping a chunk pass
// refuses.
func (p *LossyProxy) pump(src, dst net.Conn, pass func([]byte) bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && pass(buf[:n]) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !p.closed.Load() {
				_ = dst.Close()
			}
			return
		}
	}
}
