package relay

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	frameHeaderLen   = 9
	defaultMaxFrame  = 16384
	defaultWindow    = 65535
	maxWindow        = 1<<31 - 1
	defaultTableSize = 4096
)

// conn is one HTTP/2 connection, client-facing (server role) or to an instance
// (client role). One goroutine reads it; any goroutine writes it under wmu.
//
// Locking: a Stream's mu is taken before a conn's wmu, never after, and no
// goroutine holds two wmu at once. Everything the relay will write to a
// connection, and the windows that gate it, is guarded by that connection's wmu.
type conn struct {
	cfg    *Config
	nc     net.Conn
	br     *reader
	rf     *http2.Framer
	server bool
	log    *slog.Logger

	// fl batches flushes for the reader goroutine: connections it wrote to are
	// flushed once it has nothing more buffered to read, so a burst of frames
	// becomes one write(2) per connection instead of one per frame.
	fl flusher

	// lastRead is when the reader last woke with bytes (unix ns). pingSent is when
	// a keepalive PING went out (0: none pending), and pingMark the lastRead of
	// that moment: any later read answers the PING.
	lastRead atomic.Int64
	pingSent atomic.Int64
	pingMark atomic.Int64

	// onReset, on a client connection, counts a stream reset the client caused,
	// by RST_STREAM or by breaking the protocol on it. Reader goroutine only.
	onReset func()
	// park, on a client connection, is started in a new goroutine when the
	// reader would block with no stream open; serve then returns errParked. See
	// Downstream.park for why.
	park func()
	// wake, on a client connection over a socket, wakes its reader so it can
	// park. nil on TLS connections: they stay on the reader's goroutine.
	wake *waker

	wmu          sync.Mutex
	bw           *writer
	wf           *http2.Framer
	henc         *hpack.Encoder
	hbuf         bytes.Buffer
	werr         error
	sendWin      int64  // connection send window the peer granted
	peerInit     int32  // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32 // peer's SETTINGS_MAX_FRAME_SIZE
	recvWin      int64  // what the peer may still send on the connection
	credit       int64  // bytes passed on, not yet granted back
	streams      map[uint32]*Stream
	waiting      []*Stream // streams with data queued towards this conn
	dirty        bool
	closed       bool // no more writes; the reader tears down
	sentGoAway   bool
	peerGoAway   bool
	goAwayID     uint32 // client role: the peer's last-stream-id; server: ours
	lastStreamID uint32 // server role: highest client stream accepted
	nextID       uint32 // client role: next stream id to use
	done         chan struct{}
}

func newConn(nc net.Conn, br *reader, cfg *Config, server bool) *conn {
	c := &conn{
		cfg:          cfg,
		nc:           nc,
		br:           br,
		server:       server,
		log:          cfg.Log,
		bw:           newWriter(nc),
		sendWin:      defaultWindow,
		peerInit:     defaultWindow,
		peerMaxFrame: defaultMaxFrame,
		recvWin:      int64(cfg.ConnWindow),
		streams:      make(map[uint32]*Stream),
		onReset:      func() {},
		nextID:       1,
		done:         make(chan struct{}),
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.rf = http2.NewFramer(nil, br)
	c.rf.ReadMetaHeaders = hpack.NewDecoder(defaultTableSize, nil)
	c.rf.MaxHeaderListSize = cfg.MaxHeaderListSize
	c.rf.SetReuseFrames()
	// We never advertise SETTINGS_MAX_FRAME_SIZE, so the peer may send no frame
	// over the default. The framer's own cap is 16 MiB, and a frame header that
	// claims that much would have the reader buffer it.
	c.rf.SetMaxReadFrameSize(defaultMaxFrame)
	c.wf = http2.NewFramer(c.bw, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if server {
		// Towards clients, headers are encoded without the dynamic table, as
		// HAProxy and nginx do: a table of the response fields we sent costs
		// every pinned connection 1.4 KB for as long as it lives, to save some
		// tens of bytes per response. Connections to instances are few, and
		// keep it. (The peer's SETTINGS_HEADER_TABLE_SIZE only caps the table we
		// may use, so applySettings leaves this 0 alone.)
		c.henc.SetMaxDynamicTableSizeLimit(0)
	}
	return c
}

// writePreface sends what opens the connection on our side: the client preface
// string when we are the client, then our SETTINGS and the connection window.
func (c *conn) writePreface() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.server {
		c.bw.WriteString(http2.ClientPreface)
	}
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.StreamWindow)},
		{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.MaxHeaderListSize},
	}
	if c.server {
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams})
	} else {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	c.check(c.wf.WriteSettings(s...))
	if inc := c.cfg.ConnWindow - defaultWindow; inc > 0 {
		c.check(c.wf.WriteWindowUpdate(0, uint32(inc)))
	}
	c.dirty = true
	c.flushLocked()
}

// check records the first write error. Later writes are dropped; the reader sees
// the broken connection and tears it down.
func (c *conn) check(err error) {
	if err != nil && c.werr == nil {
		c.werr = err
		c.closed = true
		c.nc.Close()
	}
}

func (c *conn) flushLocked() {
	if !c.dirty || c.werr != nil {
		c.dirty = false
		return
	}
	c.dirty = false
	c.check(c.bw.Flush())
}

func (c *conn) flush() {
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

// writeDataLocked writes p as DATA frames no larger than the peer allows. The
// caller has checked the windows.
func (c *conn) writeDataLocked(id uint32, p []byte, end bool) {
	if c.closed {
		return
	}
	for {
		n := len(p)
		if n > int(c.peerMaxFrame) {
			n = int(c.peerMaxFrame)
		}
		last := n == len(p)
		var flags http2.Flags
		if last && end {
			flags = http2.FlagDataEndStream
		}
		// Header and payload go straight into the buffer, skipping the copy
		// http2.Framer.WriteData makes: this is the per-message hot path.
		if err := c.bw.frameHeader(n, http2.FrameData, flags, id); err != nil {
			c.check(err)
			return
		}
		if _, err := c.bw.Write(p[:n]); err != nil {
			c.check(err)
			return
		}
		p = p[n:]
		if last {
			break
		}
	}
	c.dirty = true
}

// writeHeadersLocked encodes fields with this connection's HPACK encoder and
// writes them as HEADERS and CONTINUATION frames. The encoder's state depends on
// the order blocks reach the peer, so encoding and writing happen under one lock.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	if c.closed {
		return
	}
	c.hbuf.Reset()
	for _, f := range fields {
		c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame)
	first := true
	for first || len(block) > 0 {
		n := min(len(block), max)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = c.wf.WriteHeaders(http2.HeadersFrameParam{
				StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
			})
			first = false
		} else {
			err = c.wf.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			c.check(err)
			return
		}
	}
	c.dirty = true
}

func (c *conn) writeRSTLocked(id uint32, code http2.ErrCode) {
	if c.closed {
		return
	}
	c.check(c.wf.WriteRSTStream(id, code))
	c.dirty = true
}

func (c *conn) writeRST(id uint32, code http2.ErrCode, fl *flusher) {
	c.wmu.Lock()
	c.writeRSTLocked(id, code)
	c.wmu.Unlock()
	fl.add(c)
}

// goAwayLocked sends GOAWAY once. On the server side its last-stream-id is the
// last stream accepted; streams above it were never seen and the client may retry them.
func (c *conn) goAwayLocked(code http2.ErrCode, debug string) {
	if c.sentGoAway || c.closed {
		return
	}
	c.sentGoAway = true
	id := c.lastStreamID
	c.goAwayID = id
	c.check(c.wf.WriteGoAway(id, code, []byte(debug)))
	c.dirty = true
}

// giveBackConn grants n bytes of connection window back to the peer once a
// quarter of the window is owed. Batching keeps WINDOW_UPDATE off the per-message
// path: a unary call normally sends none at all.
func (c *conn) giveBackConnLocked(n int64) {
	c.credit += n
	if c.credit >= int64(c.cfg.ConnWindow)/4 && !c.closed {
		c.check(c.wf.WriteWindowUpdate(0, uint32(c.credit)))
		c.recvWin += c.credit
		c.credit = 0
		c.dirty = true
	}
}

func (c *conn) giveBackConn(n int64, fl *flusher) {
	if n == 0 {
		return
	}
	c.wmu.Lock()
	c.giveBackConnLocked(n)
	c.wmu.Unlock()
	fl.add(c)
}

// takeRecv charges a received DATA frame of n bytes against the connection
// window, and returns the frame's stream, if it is open. A peer that sends
// beyond the window breaks the protocol. One lock for both: this runs per frame.
func (c *conn) takeRecv(id uint32, n int64) (s *Stream, ok bool) {
	c.wmu.Lock()
	c.recvWin -= n
	ok = c.recvWin >= 0
	s = c.streams[id]
	c.wmu.Unlock()
	return s, ok
}

func (c *conn) lookup(id uint32) *Stream {
	c.wmu.Lock()
	s := c.streams[id]
	c.wmu.Unlock()
	return s
}

// applySettings takes the peer's SETTINGS and acknowledges them. It returns
// whether queued data may now move, because a larger initial window opened it.
func (c *conn) applySettings(f *http2.SettingsFrame) (grew bool, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err = f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// Streams keep their window relative to the value in force when they
			// opened (flow.winBase), so a change is one assignment, not a walk
			// over every stream (RFC 9113 6.9.2).
			grew = int32(s.Val) > c.peerInit
			c.peerInit = int32(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			if !c.server {
				c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if !c.closed {
		c.check(c.wf.WriteSettingsAck())
		c.dirty = true
	}
	return grew, nil
}

// takeWaiting empties the list of streams with data queued towards this conn.
func (c *conn) takeWaiting() []*Stream {
	c.wmu.Lock()
	w := c.waiting
	c.waiting = nil
	c.wmu.Unlock()
	return w
}

// readPayload returns the n-byte payload of the frame whose header was just read.
// It points into the read buffer and is valid until discardPayload.
func (c *conn) readPayload(n int) ([]byte, error) {
	if n <= c.br.Size() {
		return c.br.Peek(n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c.br, p)
	return p, err
}

// teardown marks the connection closed and collects its streams.
func (c *conn) teardown() []*Stream {
	c.wmu.Lock()
	c.closed = true
	ss := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		ss = append(ss, s)
	}
	c.wmu.Unlock()
	c.nc.Close()
	return ss
}

// flusher is a set of connections a goroutine has written to and must flush before
// it blocks. The zero value is ready. add never flushes, so it is safe under any
// lock; run flushes, and must be called with no wmu held.
type flusher struct {
	conns []*conn
}

func (f *flusher) add(c *conn) {
	for _, x := range f.conns {
		if x == c {
			return
		}
	}
	f.conns = append(f.conns, c)
}

func (f *flusher) run() {
	for i, c := range f.conns {
		c.flush()
		f.conns[i] = nil
	}
	f.conns = f.conns[:0]
}

var errProtocol = errors.New("protocol error")
