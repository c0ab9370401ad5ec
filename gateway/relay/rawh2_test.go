package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// This file holds small raw HTTP/2 peers for the tests that must see or send
// exact frames: a client that speaks to the relay, and instances the relay dials.

// rawFrame is a frame read by a rawConn, copied out of the framer's buffers.
type rawFrame struct {
	http2.FrameHeader
	data     []byte              // DATA payload, without padding
	fields   []hpack.HeaderField // HEADERS, decoded
	code     http2.ErrCode       // RST_STREAM, GOAWAY
	lastID   uint32              // GOAWAY
	debug    string              // GOAWAY
	ping     [8]byte             // PING
	incr     uint32              // WINDOW_UPDATE
	settings map[http2.SettingID]uint32
}

func (f rawFrame) endStream() bool {
	return (f.Type == http2.FrameData || f.Type == http2.FrameHeaders) && f.Flags.Has(http2.FlagDataEndStream)
}

// values returns every value of the field name, in order.
func values(fields []hpack.HeaderField, name string) []string {
	var v []string
	for _, f := range fields {
		if f.Name == name {
			v = append(v, f.Value)
		}
	}
	return v
}

// value returns the single value of name, or "" if it is absent.
func value(fields []hpack.HeaderField, name string) string {
	v := values(fields, name)
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (f rawFrame) String() string {
	switch f.Type {
	case http2.FrameHeaders:
		return fmt.Sprintf("HEADERS[%d end=%v] %v", f.StreamID, f.endStream(), f.fields)
	case http2.FrameData:
		return fmt.Sprintf("DATA[%d end=%v] %d bytes", f.StreamID, f.endStream(), len(f.data))
	case http2.FrameRSTStream:
		return fmt.Sprintf("RST_STREAM[%d] %v", f.StreamID, f.code)
	case http2.FrameGoAway:
		return fmt.Sprintf("GOAWAY last=%d %v %q", f.lastID, f.code, f.debug)
	}
	return f.FrameHeader.String()
}

// rawConn is one end of an HTTP/2 connection driven frame by frame. A goroutine
// reads frames into a queue, acknowledging SETTINGS and PING as it goes; the test
// takes frames from the queue and writes what it wants.
type rawConn struct {
	nc net.Conn

	wmu  sync.Mutex
	bw   *bufio.Writer
	wf   *http2.Framer
	enc  *hpack.Encoder
	ebuf bytes.Buffer

	mu   sync.Mutex
	q    []rawFrame
	err  error         // why reading stopped
	sig  chan struct{} // poked when q or err change
	done chan struct{} // closed when the reader returns

	pings atomic.Int32 // PINGs (not ACKs) received

	acked     chan struct{} // closed once the peer's first SETTINGS is acknowledged
	ackedOnce sync.Once
}

func newRawConn(nc net.Conn, r io.Reader) *rawConn {
	c := &rawConn{nc: nc, sig: make(chan struct{}, 1), done: make(chan struct{}), acked: make(chan struct{})}
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.wf = http2.NewFramer(c.bw, nil)
	c.wf.AllowIllegalWrites = true
	c.enc = hpack.NewEncoder(&c.ebuf)
	rf := http2.NewFramer(nil, r)
	rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rf.MaxHeaderListSize = 1 << 20
	go c.read(rf)
	return c
}

func (c *rawConn) read(rf *http2.Framer) {
	defer close(c.done)
	for {
		fr, err := rf.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.poke()
			return
		}
		f := rawFrame{FrameHeader: fr.Header()}
		switch fr := fr.(type) {
		case *http2.DataFrame:
			f.data = append([]byte(nil), fr.Data()...)
		case *http2.MetaHeadersFrame:
			f.fields = fr.Fields
		case *http2.RSTStreamFrame:
			f.code = fr.ErrCode
		case *http2.GoAwayFrame:
			f.code, f.lastID, f.debug = fr.ErrCode, fr.LastStreamID, string(fr.DebugData())
		case *http2.PingFrame:
			f.ping = fr.Data
			if !fr.IsAck() {
				c.pings.Add(1)
				c.write(func(w *http2.Framer) error { return w.WritePing(true, fr.Data) })
			}
		case *http2.WindowUpdateFrame:
			f.incr = fr.Increment
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				f.settings = map[http2.SettingID]uint32{}
				fr.ForeachSetting(func(s http2.Setting) error { f.settings[s.ID] = s.Val; return nil })
				c.write(func(w *http2.Framer) error { return w.WriteSettingsAck() })
				c.ackedOnce.Do(func() { close(c.acked) })
			}
		}
		c.mu.Lock()
		c.q = append(c.q, f)
		c.mu.Unlock()
		c.poke()
	}
}

func (c *rawConn) poke() {
	select {
	case c.sig <- struct{}{}:
	default:
	}
}

// take removes and returns the first queued frame that match accepts, waiting
// for one. Frames it skips stay queued. It fails once the connection has ended
// with no such frame, or when ctx ends.
func (c *rawConn) take(ctx context.Context, match func(rawFrame) bool) (rawFrame, error) {
	for {
		c.mu.Lock()
		for i, f := range c.q {
			if match(f) {
				if i == 0 {
					c.q[0] = rawFrame{}
					c.q = c.q[1:]
				} else {
					c.q = append(c.q[:i], c.q[i+1:]...)
				}
				c.mu.Unlock()
				return f, nil
			}
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return rawFrame{}, err
		}
		select {
		case <-c.sig:
		case <-ctx.Done():
			return rawFrame{}, ctx.Err()
		}
	}
}

// next takes the first queued frame of any kind.
func (c *rawConn) next(ctx context.Context) (rawFrame, error) {
	return c.take(ctx, func(rawFrame) bool { return true })
}

func ofType(t http2.FrameType) func(rawFrame) bool {
	return func(f rawFrame) bool { return f.Type == t }
}

func onStream(id uint32) func(rawFrame) bool {
	return func(f rawFrame) bool { return f.StreamID == id }
}

// closed waits until the peer has closed the connection, and returns the read error.
func (c *rawConn) closed(ctx context.Context) error {
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write runs fn on the framer and flushes.
func (c *rawConn) write(fn func(w *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := fn(c.wf); err != nil {
		return err
	}
	return c.bw.Flush()
}

// encode returns fields as an HPACK block. wmu is held.
func (c *rawConn) encode(fields []hpack.HeaderField) []byte {
	c.ebuf.Reset()
	for _, f := range fields {
		c.enc.WriteField(f)
	}
	return append([]byte(nil), c.ebuf.Bytes()...)
}

// writeHeadersLocked writes fields as one HEADERS frame (the tests' blocks are small).
func (c *rawConn) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField) error {
	return c.wf.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.encode(fields), EndStream: end, EndHeaders: true})
}

func (c *rawConn) headers(id uint32, end bool, fields ...hpack.HeaderField) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeHeadersLocked(id, end, fields); err != nil {
		return err
	}
	return c.bw.Flush()
}

// dataLocked writes p as DATA frames of at most 16 KiB, the default maximum.
func (c *rawConn) dataLocked(id uint32, p []byte, end bool) error {
	for {
		n := min(len(p), 16<<10)
		last := n == len(p)
		if err := c.wf.WriteData(id, end && last, p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
}

func (c *rawConn) data(id uint32, p []byte, end bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.dataLocked(id, p, end); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (c *rawConn) rst(id uint32, code http2.ErrCode) error {
	return c.write(func(w *http2.Framer) error { return w.WriteRSTStream(id, code) })
}

func (c *rawConn) close() {
	c.nc.Close()
	<-c.done
}

// dialRaw connects a raw client to the relay at addr: the preface, then SETTINGS
// with a 1 MiB stream window, and a connection window to match.
func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newRawConn(nc, bufio.NewReader(nc))
	t.Cleanup(c.close)
	err = c.write(func(w *http2.Framer) error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		if err := w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
			return err
		}
		return w.WriteWindowUpdate(0, 16<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Finish the handshake first, so the reader never waits on the writer to
	// acknowledge SETTINGS while a test floods the connection.
	select {
	case <-c.acked:
	case <-c.done:
		t.Fatal("relay closed the connection during the handshake")
	case <-time.After(10 * time.Second):
		t.Fatal("no SETTINGS from the relay")
	}
	return c
}

// grpcRequest is the header list a gRPC client sends for path, then extra.
func grpcRequest(path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: "tether.test"},
		{Name: "content-type", Value: "application/grpc"},
	}, extra...)
}

func field(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// grpcMsg frames m as one gRPC message: a zero compression flag, the length, the bytes.
func grpcMsg(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	copy(out[5:], b)
	return out
}

// splitMsgs splits a gRPC body into its messages.
func splitMsgs(body []byte) ([][]byte, error) {
	var out [][]byte
	for len(body) > 0 {
		if len(body) < 5 {
			return out, errors.New("truncated gRPC message header")
		}
		n := int(binary.BigEndian.Uint32(body[1:5]))
		if len(body) < 5+n {
			return out, errors.New("truncated gRPC message")
		}
		out = append(out, body[5:5+n])
		body = body[5+n:]
	}
	return out, nil
}

// rawResponse is everything one stream received.
type rawResponse struct {
	headers  []hpack.HeaderField
	body     []byte
	trailers []hpack.HeaderField
	rst      *http2.ErrCode
	// trailersOnly is set when the response was a single HEADERS with END_STREAM.
	trailersOnly bool
}

// status is the response's grpc-status, from trailers or a Trailers-Only block.
func (r rawResponse) status() string {
	if r.trailersOnly {
		return value(r.headers, "grpc-status")
	}
	return value(r.trailers, "grpc-status")
}

// response reads stream id to its end: END_STREAM or RST_STREAM.
func (c *rawConn) response(ctx context.Context, id uint32) (rawResponse, error) {
	var r rawResponse
	gotHeaders := false
	for {
		f, err := c.take(ctx, onStream(id))
		if err != nil {
			return r, fmt.Errorf("stream %d: %w", id, err)
		}
		switch f.Type {
		case http2.FrameHeaders:
			st := value(f.fields, ":status")
			switch {
			case !gotHeaders && len(st) == 3 && st[0] == '1' && !f.endStream():
				continue // informational
			case !gotHeaders:
				gotHeaders = true
				r.headers = f.fields
				r.trailersOnly = f.endStream()
			default:
				r.trailers = f.fields
			}
		case http2.FrameData:
			r.body = append(r.body, f.data...)
		case http2.FrameRSTStream:
			code := f.code
			r.rst = &code
			return r, nil
		}
		if f.endStream() {
			return r, nil
		}
	}
}

// rawInstance is an h2c instance written frame by frame. Each accepted
// connection is read through a rawConn and handed to serve with its index,
// counting from 0; the connection closes when serve returns.
type rawInstance struct {
	addr  string
	ctx   context.Context // ends when the test does
	conns atomic.Int32
}

func startRawInstance(t *testing.T, serve func(ctx context.Context, c *rawConn, n int)) *rawInstance {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ri := &rawInstance{addr: lis.Addr().String(), ctx: ctx}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []*rawConn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			n := int(ri.conns.Add(1)) - 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				pre := make([]byte, len(http2.ClientPreface))
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(br, pre); err != nil {
					return
				}
				if string(pre) != http2.ClientPreface {
					t.Errorf("instance conn %d: expected the HTTP/2 prior-knowledge preface, got %q", n, pre)
					return
				}
				nc.SetReadDeadline(time.Time{})
				c := newRawConn(nc, br)
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
				defer c.close()
				if err := c.write(func(w *http2.Framer) error { return w.WriteSettings() }); err != nil {
					return
				}
				serve(ctx, c, n)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		lis.Close()
		mu.Lock()
		for _, c := range open {
			c.nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ri
}

// instRequest is a request as an instance received it.
type instRequest struct {
	id     uint32
	fields []hpack.HeaderField
	body   []byte
}

// serveGRPC runs a simple gRPC instance on c until the connection ends. onHeaders,
// if set, sees each new stream's HEADERS first and returns false if it has dealt
// with the stream itself. answer, if set, writes the response to a complete
// request; by default the instance answers OK with one empty message.
func serveGRPC(ctx context.Context, c *rawConn, onHeaders func(id uint32, fields []hpack.HeaderField) bool, answer func(r instRequest)) {
	reqs := map[uint32]*instRequest{}
	for {
		f, err := c.next(ctx)
		if err != nil {
			return
		}
		switch f.Type {
		case http2.FrameHeaders:
			r := reqs[f.StreamID]
			if r != nil {
				// Request trailers end the request.
				delete(reqs, f.StreamID)
				complete(c, *r, answer)
				continue
			}
			if onHeaders != nil && !onHeaders(f.StreamID, f.fields) {
				continue
			}
			r = &instRequest{id: f.StreamID, fields: f.fields}
			if f.endStream() {
				complete(c, *r, answer)
				continue
			}
			reqs[f.StreamID] = r
		case http2.FrameData:
			r := reqs[f.StreamID]
			if r == nil {
				continue
			}
			r.body = append(r.body, f.data...)
			if f.endStream() {
				delete(reqs, f.StreamID)
				complete(c, *r, answer)
			}
		case http2.FrameRSTStream:
			delete(reqs, f.StreamID)
		}
	}
}

func complete(c *rawConn, r instRequest, answer func(instRequest)) {
	if answer != nil {
		answer(r)
		return
	}
	answerOK(c, r.id, []byte{0, 0, 0, 0, 0})
}

// answerOK writes a whole gRPC response: headers, body, grpc-status 0.
func answerOK(c *rawConn, id uint32, body []byte, extra ...hpack.HeaderField) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := append([]hpack.HeaderField{field(":status", "200"), field("content-type", "application/grpc")}, extra...)
	if err := c.writeHeadersLocked(id, false, h); err != nil {
		return err
	}
	if err := c.dataLocked(id, body, false); err != nil {
		return err
	}
	tr := append([]hpack.HeaderField{field("grpc-status", "0")}, extra...)
	if err := c.writeHeadersLocked(id, true, tr); err != nil {
		return err
	}
	return c.bw.Flush()
}

// answerStatus writes a Trailers-Only gRPC response.
func answerStatus(c *rawConn, id uint32, code int, msg string) error {
	return c.headers(id, true,
		field(":status", "200"), field("content-type", "application/grpc"),
		field("grpc-status", fmt.Sprint(code)), field("grpc-message", msg))
}

// hasField reports whether any field is named name (case-insensitively, as a
// defence against a relay that would forward it in another case).
func hasField(fields []hpack.HeaderField, name string) bool {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// frameTap reads a copy of one direction of an HTTP/2 byte stream and reports
// each frame header it sees. It skips the client preface if told to.
type frameTap struct {
	mu      sync.Mutex
	buf     []byte
	preface bool
	on      func(http2.FrameHeader, []byte)
}

func (ft *frameTap) feed(p []byte) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.buf = append(ft.buf, p...)
	if ft.preface {
		if len(ft.buf) < len(http2.ClientPreface) {
			return
		}
		ft.buf = ft.buf[len(http2.ClientPreface):]
		ft.preface = false
	}
	for len(ft.buf) >= 9 {
		n := int(ft.buf[0])<<16 | int(ft.buf[1])<<8 | int(ft.buf[2])
		if len(ft.buf) < 9+n {
			return
		}
		fh := http2.FrameHeader{
			Type:     http2.FrameType(ft.buf[3]),
			Flags:    http2.Flags(ft.buf[4]),
			StreamID: binary.BigEndian.Uint32(ft.buf[5:9]) & (1<<31 - 1),
			Length:   uint32(n),
		}
		ft.on(fh, ft.buf[9:9+n])
		ft.buf = ft.buf[9+n:]
	}
}

// tapConn reports the frames read and written on a connection.
type tapConn struct {
	net.Conn
	in, out *frameTap
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.in != nil {
		c.in.feed(p[:n])
	}
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 && c.out != nil {
		c.out.feed(p[:n])
	}
	return n, err
}

// tapListener wraps each accepted connection so frames it writes are reported.
type tapListener struct {
	net.Listener
	onWrite func(http2.FrameHeader, []byte)
}

func (l tapListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: nc, out: &frameTap{on: l.onWrite}}, nil
}
