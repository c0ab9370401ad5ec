package relay

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

// Pool is the gateway's connections to one instance, always h2c. Streams share
// one connection; a new one is dialled when the instance sends GOAWAY or the
// connection fails.
type Pool struct {
	addr string
	cfg  *Config

	mu       sync.Mutex
	cur      *conn
	conns    map[*conn]struct{}
	dialing  bool
	queue    []*Stream
	closed   bool
	closeMsg string
	closing  chan struct{} // closed by Close
}

// NewPool returns a pool for the instance at addr. It dials on first use.
func NewPool(addr string, cfg *Config) *Pool {
	return &Pool{addr: addr, cfg: cfg, conns: make(map[*conn]struct{}), closing: make(chan struct{})}
}

// Forward sends s to the instance: at once on a live connection, else once a
// connection is up. A stream that cannot be delivered ends with UNAVAILABLE.
func (p *Pool) Forward(s *Stream) {
	s.mu.Lock()
	s.pool = p
	fl := s.fl
	s.mu.Unlock()
	if fl != nil {
		// On the client's reader goroutine: its batch flushes what was written.
		p.forward(s, fl)
		return
	}
	var own flusher
	p.forward(s, &own)
	own.run()
}

func (p *Pool) forward(s *Stream, fl *flusher) {
	for {
		p.mu.Lock()
		c := p.cur
		p.mu.Unlock()
		if c != nil {
			if s.forwardTo(c, fl) {
				return
			}
			p.retire(c) // it takes no new streams
		}
		if p.enqueue(s) {
			return
		}
	}
}

// forwardTo opens s on c and reports whether c took it. A stream that ended while
// it was held counts as taken.
func (s *Stream) forwardTo(c *conn, fl *flusher) bool {
	s.mu.Lock()
	if s.downClosed || (s.up != nil && !s.upClosed) {
		s.mu.Unlock()
		return true
	}
	ok := s.forwardLocked(c, fl)
	if ok {
		s.settleLocked(fl)
	}
	s.mu.Unlock()
	s.finish()
	return ok
}

// enqueue holds s for the next connection. It returns false, holding nothing, if
// a connection came up since forward looked: dialling another would be a waste.
func (p *Pool) enqueue(s *Stream) bool {
	p.mu.Lock()
	if p.closed {
		msg := p.closeMsg
		p.mu.Unlock()
		s.Fail(codes.Unavailable, msg)
		return true
	}
	if p.cur != nil {
		p.mu.Unlock()
		return false
	}
	p.queue = append(p.queue, s)
	if !p.dialing {
		p.dialing = true
		go p.dial()
	}
	p.mu.Unlock()
	return true
}

// dial connects to the instance and forwards the streams that waited for it.
// Its timeout is DialTimeout; a held stream's own deadline is enforced by whoever
// held it.
func (p *Pool) dial() {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.addr)
	cancel()
	var c *conn
	if err == nil {
		// The preface goes out before c is published: a stream forwarded the
		// moment p.cur is set must not write its HEADERS ahead of it.
		c = newConn(nc, newReader(nc, nil), p.cfg, false)
		c.writePreface()
	}
	p.mu.Lock()
	p.dialing = false
	q := p.queue
	p.queue = nil
	switch {
	case err != nil:
	case p.closed:
		nc.Close()
		err = errors.New(p.closeMsg)
	default:
		p.cur = c
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
	if err != nil {
		for _, s := range q {
			s.Fail(codes.Unavailable, "cannot connect to instance at "+p.addr+": "+err.Error())
		}
		return
	}
	go p.serve(c)
	var fl flusher
	for _, s := range q {
		if !s.forwardTo(c, &fl) {
			s.Fail(codes.Unavailable, "instance at "+p.addr+" refused new streams")
		}
	}
	fl.run()
}

func (p *Pool) serve(c *conn) {
	err := c.serve(&upstream{c: c, p: p})
	c.fl.run()
	p.retire(c)
	msg := "connection to instance lost"
	if err != nil && !errors.Is(err, net.ErrClosed) {
		msg += ": " + err.Error()
	}
	c.wmu.Lock()
	open := len(c.streams) > 0
	c.wmu.Unlock()
	if open {
		// The connection may have died with the instance. The pool's owner, who
		// watches the instance, closes the pool moments later with the reason (a
		// crash, a reap): wait briefly for it, so that open streams are told why
		// the instance went, not only that its connection dropped.
		t := time.NewTimer(p.cfg.LostGrace)
		select {
		case <-p.closing:
		case <-t.C:
		}
		t.Stop()
	}
	p.mu.Lock()
	if p.closed {
		msg = p.closeMsg
	}
	delete(p.conns, c)
	p.mu.Unlock()
	var fl flusher
	for _, s := range c.teardown() {
		s.upLost(c, msg, &fl)
	}
	fl.run()
	close(c.done)
}

// retire stops new streams from going to c.
func (p *Pool) retire(c *conn) {
	p.mu.Lock()
	if p.cur == c {
		p.cur = nil
	}
	p.mu.Unlock()
}

// Close ends every stream on the instance with UNAVAILABLE and msg, and closes
// the connections. Streams that arrive later get the same.
func (p *Pool) Close(msg string) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed, p.closeMsg, p.cur = true, msg, nil
	close(p.closing)
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, s := range q {
		s.Fail(codes.Unavailable, msg)
	}
	for _, c := range conns {
		c.nc.Close()
		<-c.done
	}
}

// upstream is the client role: the gateway's connection to an instance.
type upstream struct {
	c *conn
	p *Pool
}

func (u *upstream) headers(mh *http2.MetaHeadersFrame) error {
	// The frame was decoded even if its stream is gone, which keeps HPACK in step.
	if s := u.c.lookup(mh.StreamID); s != nil {
		s.respHeaders(u.c, mh, &u.c.fl)
	}
	return nil
}

func (u *upstream) rst(f *http2.RSTStreamFrame) {
	if s := u.c.lookup(f.StreamID); s != nil {
		s.peerReset(u.c, f.ErrCode, &u.c.fl)
	}
}

func (u *upstream) ping(f *http2.PingFrame) { u.c.pong(f) }

// goAway moves new streams to a new connection, and sends again the streams the
// instance says it never saw (case B08).
func (u *upstream) goAway(f *http2.GoAwayFrame) {
	c := u.c
	u.p.retire(c)
	c.wmu.Lock()
	c.peerGoAway = true
	var unseen []*Stream
	for id, s := range c.streams {
		if id > f.LastStreamID {
			unseen = append(unseen, s)
		}
	}
	c.retireIfIdleLocked()
	c.wmu.Unlock()
	for _, s := range unseen {
		s.refused(c, &c.fl)
	}
}

// retireIfIdleLocked closes a connection that has said or heard GOAWAY once its
// last stream is gone. The client side is half-closed and left to finish reading
// for CloseLinger, so frames in flight are not lost to a TCP reset.
func (c *conn) retireIfIdleLocked() {
	if len(c.streams) > 0 || c.closed {
		return
	}
	if c.server && c.sentGoAway {
		c.flushLocked()
		c.closed = true
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			if c.wake != nil {
				c.wake.linger(time.Now().Add(c.cfg.CloseLinger))
			} else {
				c.nc.SetReadDeadline(time.Now().Add(c.cfg.CloseLinger))
			}
		} else {
			c.nc.Close()
		}
		return
	}
	if !c.server && c.peerGoAway {
		c.flushLocked()
		c.closed = true
		c.nc.Close()
	}
}
