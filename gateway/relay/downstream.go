package relay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

// Handler decides where each new client stream goes.
type Handler interface {
	// OpenStream is called on the connection's read goroutine for each new stream.
	// It must not block. It either calls s.Fail, or hands s to a Pool, now or later
	// from any goroutine; until then the stream is held.
	OpenStream(s *Stream)
}

// Downstream is a client's HTTP/2 connection to the gateway.
type Downstream struct {
	c *conn
	h Handler

	// Rapid reset (CVE-2023-44487): each stream a client opens costs an upstream
	// stream, so a client that resets streams faster than resetBudget allows is
	// sent GOAWAY(ENHANCE_YOUR_CALM) (case B32).
	resets     int
	resetStart time.Time

	closeOnce sync.Once
	draining  bool

	ended func(error) // from Start
}

// NewDownstream wraps a client connection whose preface has already been read
// from br.
func NewDownstream(nc net.Conn, br *bufio.Reader, cfg *Config, h Handler) *Downstream {
	d := &Downstream{c: newConn(nc, fromBufio(nc, br), cfg, true), h: h}
	d.c.onReset = d.countReset
	return d
}

// Serve runs the connection until it closes. It returns nil when the client
// closed it cleanly.
func (d *Downstream) Serve() error {
	ended := make(chan error, 1)
	d.Start(func(err error) { ended <- err })
	return <-ended
}

// Start serves the connection in the background and calls ended with what
// Serve would return, once, after the connection has closed.
func (d *Downstream) Start(ended func(error)) {
	d.ended = ended
	d.c.park = d.park
	if d.c.br.raw != nil {
		d.c.wake = &waker{nc: d.c.nc, after: d.c.cfg.ParkAfter}
		d.c.br.wake = d.c.wake
	}
	d.c.writePreface()
	go d.run()
}

func (d *Downstream) run() {
	if err := d.c.serve(d); err != errParked {
		d.end(err)
	}
}

// park waits for the client's next bytes on a fresh goroutine, which the
// reader hands the connection to once it has had no stream open for
// Config.ParkAfter (at once over TLS, where no deadline may cut a read).
// A goroutine keeps the stack its deepest call gave it, 8 KiB once it has
// decoded headers and opened a stream, and the garbage collector shrinks a
// stack only while three quarters of it are free. A fresh goroutine that only
// waits keeps the smallest, 2 KiB. Idle pinned connections are most of a
// gateway's connections: this took one from 15 KB to 9 KB. A stream opening
// on an idle connection pays for it with one goroutine start and a stack that
// grows again, a few microseconds.
func (d *Downstream) park() {
	if err := d.c.br.fill(); err != nil {
		d.end(err)
		return
	}
	d.c.lastRead.Store(time.Now().UnixNano())
	d.run()
}

func (d *Downstream) end(err error) {
	d.c.fl.run()
	// The client is gone: its streams are cancelled at their instances.
	var fl flusher
	for _, s := range d.c.teardown() {
		s.peerReset(d.c, http2.ErrCodeCancel, &fl)
	}
	fl.run()
	close(d.c.done)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	d.ended(err)
}

// Done is closed once the connection has ended, before Serve returns or
// Start's callback runs.
func (d *Downstream) Done() <-chan struct{} { return d.c.done }

// RemoteAddr is the client's address.
func (d *Downstream) RemoteAddr() net.Addr { return d.c.nc.RemoteAddr() }

// Streams is how many streams are open.
func (d *Downstream) Streams() int {
	d.c.wmu.Lock()
	defer d.c.wmu.Unlock()
	return len(d.c.streams)
}

// GoAway tells the client to open no new streams here. Streams already open run
// to their end, after which the connection closes.
func (d *Downstream) GoAway() {
	c := d.c
	c.wmu.Lock()
	c.goAwayLocked(http2.ErrCodeNo, "")
	c.retireIfIdleLocked()
	c.flushLocked()
	c.wmu.Unlock()
}

// Shutdown ends the connection for a reason: GOAWAY, then every open stream ends
// with the gRPC status code and msg, then the connection closes.
func (d *Downstream) Shutdown(code codes.Code, msg string) {
	c := d.c
	c.wmu.Lock()
	c.goAwayLocked(http2.ErrCodeNo, msg)
	ss := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		ss = append(ss, s)
	}
	c.wmu.Unlock()
	var fl flusher
	for _, s := range ss {
		s.mu.Lock()
		s.failLocked(code, msg, &fl)
		s.mu.Unlock()
		s.finish()
	}
	fl.run()
	c.wmu.Lock()
	c.retireIfIdleLocked()
	c.flushLocked()
	c.wmu.Unlock()
}

// keepaliveData marks the PINGs the relay sends, so their ACKs are recognised.
var keepaliveData = [8]byte{'t', 'e', 't', 'h', 'e', 'r', 'k', 'a'}

// CheckAlive is the keepalive, run by the caller for every connection now and
// then: a client silent for idle is sent a PING, and one that has still sent
// nothing timeout after that is taken for gone and its connection closed, which
// ends its streams and lets its session go idle. Any frame counts as an answer.
// It reports whether the connection was closed.
func (d *Downstream) CheckAlive(now time.Time, idle, timeout time.Duration) bool {
	c := d.c
	last, sent := c.lastRead.Load(), c.pingSent.Load()
	switch {
	case sent != 0 && last != c.pingMark.Load():
		// Something was read since the PING went out.
		c.pingSent.Store(0)
	case sent != 0 && now.UnixNano()-sent >= int64(timeout):
		c.log.Debug("client did not answer a keepalive PING; closing", "peer", c.nc.RemoteAddr().String(), "timeout", timeout)
		c.nc.Close()
		return true
	case sent == 0 && now.UnixNano()-last >= int64(idle):
		c.pingMark.Store(last)
		c.pingSent.Store(now.UnixNano())
		c.wmu.Lock()
		if !c.closed {
			c.check(c.wf.WritePing(false, keepaliveData))
			c.dirty = true
			c.flushLocked()
		}
		c.wmu.Unlock()
	}
	return false
}

// Close drops the connection at once.
func (d *Downstream) Close() { d.c.nc.Close() }

func (d *Downstream) headers(mh *http2.MetaHeadersFrame) error {
	c := d.c
	id := mh.StreamID
	if id%2 == 0 {
		return c.connError(http2.ErrCodeProtocol, "even stream id from client")
	}
	if s := c.lookup(id); s != nil {
		s.reqTrailers(mh, &c.fl)
		return nil
	}
	c.wmu.Lock()
	if id <= c.lastStreamID {
		c.wmu.Unlock()
		return c.connError(http2.ErrCodeStreamClosed, "HEADERS on closed stream "+strconv.Itoa(int(id)))
	}
	if c.sentGoAway || c.closed {
		// Above our GOAWAY's last-stream-id: never seen, safe for the client to retry.
		c.writeRSTLocked(id, http2.ErrCodeRefusedStream)
		c.wmu.Unlock()
		c.fl.add(c)
		return nil
	}
	c.lastStreamID = id
	if uint32(len(c.streams)) >= c.cfg.MaxConcurrentStreams {
		c.writeRSTLocked(id, http2.ErrCodeRefusedStream)
		c.wmu.Unlock()
		c.fl.add(c)
		return nil
	}
	s := &Stream{down: c, did: id, opened: time.Now(), timeIdx: -1}
	s.resp.attach(c)
	s.req.recvWin = int64(c.cfg.StreamWindow)
	s.req.gotEnd = mh.StreamEnded()
	s.replayOK = c.cfg.ReplayLimit > 0
	c.streams[id] = s
	c.wmu.Unlock()

	if mh.Truncated {
		s.grpc = true
		s.Fail(codes.ResourceExhausted, "request headers exceed "+strconv.Itoa(int(c.cfg.MaxHeaderListSize))+" bytes")
		return nil
	}
	req, err := parseRequest(mh.Fields)
	s.fields, s.hints, s.grpc, s.timeout, s.timeIdx, s.path = req.fields, req.hints, req.grpc, req.timeout, req.timeIdx, req.path
	if err != nil {
		s.Fail(codes.InvalidArgument, err.Error())
		return nil
	}
	// The handler runs on this goroutine, so a stream it forwards at once is
	// written through this reader's flush batch.
	s.fl = &c.fl
	d.h.OpenStream(s)
	s.mu.Lock()
	s.fl = nil
	s.mu.Unlock()
	return nil
}

func (d *Downstream) rst(f *http2.RSTStreamFrame) {
	s := d.c.lookup(f.StreamID)
	if s == nil {
		return
	}
	s.peerReset(d.c, f.ErrCode, &d.c.fl)
	d.countReset()
}

const (
	resetBudget = 1000 // resets per resetWindow before the client is cut off
	resetWindow = time.Second
)

func (d *Downstream) countReset() {
	now := time.Now()
	if now.Sub(d.resetStart) > resetWindow {
		d.resetStart, d.resets = now, 0
	}
	d.resets++
	if d.resets > resetBudget {
		c := d.c
		c.wmu.Lock()
		c.goAwayLocked(http2.ErrCodeEnhanceYourCalm, "too many stream resets")
		c.flushLocked()
		c.wmu.Unlock()
		c.nc.Close()
	}
}

func (d *Downstream) goAway(f *http2.GoAwayFrame) {
	d.c.wmu.Lock()
	d.c.peerGoAway = true
	d.c.wmu.Unlock()
}

func (d *Downstream) ping(f *http2.PingFrame) { d.c.pong(f) }
