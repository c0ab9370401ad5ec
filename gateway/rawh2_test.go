package gateway_test

// A raw HTTP/2 client built on x/net's Framer, for what grpc-go hides: the exact
// frames of a gateway-made error, and a connection that sends nothing but PINGs.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
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

type rawConn struct {
	t  *testing.T
	nc net.Conn

	wmu  sync.Mutex
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer

	mu      sync.Mutex
	streams map[uint32]*rawStream

	pingAcks atomic.Int64
	settings chan []http2.Setting // the gateway's first SETTINGS
	goAway   chan rawGoAway       // the first GOAWAY
	closed   chan struct{}        // the reader has stopped
	done     chan struct{}        // cleanup has begun
	doneOnce sync.Once
}

type rawGoAway struct {
	lastStreamID uint32
	code         http2.ErrCode
	debug        string
}

// rawStream is what the gateway sent on one stream. Read it after done is closed.
type rawStream struct {
	headers     [][]hpack.HeaderField // each HEADERS block in order
	endOnHeader []bool                // whether each block carried END_STREAM
	data        []byte
	rst         http2.ErrCode
	reset       bool
	done        chan struct{}
	gotData     chan struct{} // closed at the first DATA frame
}

// trailersOnly reports whether the response was a single HEADERS frame with END_STREAM.
func (s *rawStream) trailersOnly() bool {
	return len(s.headers) == 1 && s.endOnHeader[0] && len(s.data) == 0 && !s.reset
}

func field(fs []hpack.HeaderField, name string) (string, bool) {
	for _, f := range fs {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// dialRaw opens an h2c connection with prior knowledge and sends the preface.
func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{
		t: t, nc: nc,
		streams:  make(map[uint32]*rawStream),
		settings: make(chan []http2.Setting, 1),
		goAway:   make(chan rawGoAway, 1),
		closed:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.fr = http2.NewFramer(nc, nc)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go r.read()
	t.Cleanup(r.close)
	return r
}

func (r *rawConn) close() {
	r.doneOnce.Do(func() { close(r.done) })
	r.nc.Close()
	<-r.closed
}

// write runs f, which writes frames, under the write lock.
func (r *rawConn) write(f func() error) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return f()
}

func (r *rawConn) stream(id uint32) *rawStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.streams[id]
	if s == nil {
		s = &rawStream{done: make(chan struct{}), gotData: make(chan struct{})}
		r.streams[id] = s
	}
	return s
}

func (r *rawConn) read() {
	defer func() {
		r.mu.Lock()
		for _, s := range r.streams {
			select {
			case <-s.done:
			default:
				s.reset = true
				close(s.done)
			}
		}
		r.mu.Unlock()
		close(r.closed)
	}()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				var ss []http2.Setting
				f.ForeachSetting(func(s http2.Setting) error { ss = append(ss, s); return nil })
				select {
				case r.settings <- ss:
				default:
				}
				r.write(func() error { return r.fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if f.IsAck() {
				r.pingAcks.Add(1)
			} else {
				d := f.Data
				r.write(func() error { return r.fr.WritePing(true, d) })
			}
		case *http2.GoAwayFrame:
			select {
			case r.goAway <- rawGoAway{f.LastStreamID, f.ErrCode, string(f.DebugData())}:
			default:
			}
		case *http2.MetaHeadersFrame:
			s := r.stream(f.StreamID)
			r.mu.Lock()
			s.headers = append(s.headers, append([]hpack.HeaderField(nil), f.Fields...))
			s.endOnHeader = append(s.endOnHeader, f.StreamEnded())
			r.mu.Unlock()
			if f.StreamEnded() {
				close(s.done)
			}
		case *http2.DataFrame:
			s := r.stream(f.StreamID)
			r.mu.Lock()
			if len(s.data) == 0 && len(f.Data()) > 0 {
				close(s.gotData)
			}
			s.data = append(s.data, f.Data()...)
			r.mu.Unlock()
			if n := len(f.Data()); n > 0 {
				id := f.StreamID
				r.write(func() error {
					if err := r.fr.WriteWindowUpdate(0, uint32(n)); err != nil {
						return err
					}
					if f.StreamEnded() {
						return nil
					}
					return r.fr.WriteWindowUpdate(id, uint32(n))
				})
			}
			if f.StreamEnded() {
				close(s.done)
			}
		case *http2.RSTStreamFrame:
			s := r.stream(f.StreamID)
			r.mu.Lock()
			already := false
			select {
			case <-s.done:
				already = true
			default:
			}
			if !already {
				s.reset, s.rst = true, f.ErrCode
			}
			r.mu.Unlock()
			if !already {
				close(s.done)
			}
		}
	}
}

// grpcHeaders is a gRPC request's header list for path, then extra name/value pairs.
func grpcHeaders(path string, extra ...string) []hpack.HeaderField {
	fs := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "tether.test"},
		{Name: ":path", Value: path},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return fs
}

// call opens stream id with headers and, if msg is not nil, sends it as one gRPC
// message and half-closes; with msg nil the stream stays open for writing.
func (r *rawConn) call(id uint32, headers []hpack.HeaderField, msg proto.Message) *rawStream {
	s := r.stream(id)
	if err := r.write(func() error {
		r.hbuf.Reset()
		for _, f := range headers {
			if err := r.enc.WriteField(f); err != nil {
				return err
			}
		}
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true,
		}); err != nil {
			return err
		}
		if msg == nil {
			return nil
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			return err
		}
		frame := make([]byte, 5+len(b))
		binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
		copy(frame[5:], b)
		return r.fr.WriteData(id, true, frame)
	}); err != nil {
		r.t.Errorf("raw h2: writing stream %d: %v", id, err)
	}
	return s
}

func (r *rawConn) ping(n uint64) error {
	var d [8]byte
	binary.BigEndian.PutUint64(d[:], n)
	return r.write(func() error { return r.fr.WritePing(false, d) })
}

// firstData is closed once the stream has received a DATA frame.
func (r *rawConn) firstData(id uint32) <-chan struct{} { return r.stream(id).gotData }

// wait waits for the stream to end, or fails the test when ctx ends.
func (s *rawStream) wait(t *testing.T, ctx context.Context) *rawStream {
	t.Helper()
	select {
	case <-s.done:
		return s
	case <-ctx.Done():
		t.Fatal("timed out waiting for a raw HTTP/2 stream to end")
		return nil
	}
}

// status returns grpc-status and grpc-message from the last HEADERS block.
func (s *rawStream) status() (code, msg string) {
	if len(s.headers) == 0 {
		return "", ""
	}
	last := s.headers[len(s.headers)-1]
	code, _ = field(last, "grpc-status")
	msg, _ = field(last, "grpc-message")
	return code, msg
}

func (s *rawStream) String() string {
	var b strings.Builder
	for i, h := range s.headers {
		b.WriteString("HEADERS")
		if s.endOnHeader[i] {
			b.WriteString("+END_STREAM")
		}
		b.WriteString(" [")
		for j, f := range h {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(f.Name + ": " + f.Value)
		}
		b.WriteString("] ")
	}
	if len(s.data) > 0 {
		fmt.Fprintf(&b, "DATA(%d bytes) ", len(s.data))
	}
	if s.reset {
		b.WriteString("RST_STREAM(" + s.rst.String() + ")")
	}
	return b.String()
}
