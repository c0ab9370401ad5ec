package relay

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
)

// Stream is one client request and its response. It opens on the client's
// connection and is forwarded to an instance by a Pool, now or after a hold.
//
// A held stream (not yet forwarded) keeps what the client sends, bounded by the
// stream window the relay granted: the relay grants no more until the bytes have
// left for the instance, so HTTP/2 flow control holds the client, not memory.
type Stream struct {
	mu sync.Mutex

	down *conn // the client's connection
	did  uint32
	up   *conn // the instance's connection; nil while held
	uid  uint32
	pool *Pool
	fl   *flusher // the client reader's flush batch, while OpenStream runs

	req  flow // client → instance
	resp flow // instance → client

	fields     []hpack.HeaderField // request headers to forward
	hints      []activator.Header
	grpc       bool
	timeout    time.Duration
	timeIdx    int
	path       string
	opened     time.Time
	respSent   bool // response HEADERS written to the client
	downClosed bool // closed on the client's connection
	upClosed   bool // closed on the instance's connection, or never opened there

	// replay holds the request bytes sent upstream until the instance answers,
	// so a stream the instance refused (REFUSED_STREAM, or above a GOAWAY's
	// last-stream-id) can be sent again on a new connection (case B08).
	replay    chunks
	replayOK  bool
	retried   bool
	extraResp []hpack.HeaderField
	onResp    func()
	onDone    []func()
	done      bool
}

// flow is one direction of a stream: bytes read from one connection (src) and
// written to the other (dst). It is guarded by Stream.mu.
type flow struct {
	// Towards dst.
	win       int64 // send window, relative to winBase (see budget)
	winBase   int32 // dst.peerInit when win was set
	pending   chunks
	trailers  []hpack.HeaderField // sent after pending, with END_STREAM
	endQueued bool                // END_STREAM follows pending
	sentEnd   bool                // END_STREAM or RST_STREAM written to dst
	waiting   bool                // on dst.waiting
	meter     *atomic.Uint64
	// From src.
	recvWin int64 // what src may still send on this stream
	credit  int64 // bytes passed on, not yet granted back to src
	// credited counts queued bytes already granted back to src: a replayed
	// request is sent twice but its window was spent once.
	credited int64
	gotEnd   bool // src sent END_STREAM
}

// budget is how many bytes may be written to dst now. The stream window is kept
// relative to the peer's initial window at the time it was set, so a SETTINGS
// change applies to every stream without visiting them. dst.wmu is held.
func (f *flow) budget(dst *conn) int64 {
	b := f.win + int64(dst.peerInit) - int64(f.winBase)
	return min(b, dst.sendWin)
}

func (f *flow) attach(dst *conn) {
	f.win = int64(dst.peerInit)
	f.winBase = dst.peerInit
}

// Hints are the x-tether-* headers of the request, which are never forwarded.
func (s *Stream) Hints() []activator.Header { return s.hints }

// GRPC reports whether the request's content-type is application/grpc or a
// subtype of it.
func (s *Stream) GRPC() bool { return s.grpc }

// Timeout is the request's grpc-timeout, or 0.
func (s *Stream) Timeout() time.Duration { return s.timeout }

// Opened is when the stream's headers arrived.
func (s *Stream) Opened() time.Time { return s.opened }

// Path is the request's :path, the gRPC method.
func (s *Stream) Path() string { return s.path }

// OnDone registers f to run once when the stream has ended on the client's side,
// however it ended. Register before handing the stream to a Pool.
func (s *Stream) OnDone(f func()) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		f()
		return
	}
	s.onDone = append(s.onDone, f)
	s.mu.Unlock()
}

// AddResponseHeaders adds fields to the response headers the client receives,
// and calls sent (if not nil) once they have been written.
func (s *Stream) AddResponseHeaders(fields []hpack.HeaderField, sent func()) {
	s.mu.Lock()
	s.extraResp = append(s.extraResp, fields...)
	if sent != nil {
		prev := s.onResp
		s.onResp = func() {
			if prev != nil {
				prev()
			}
			sent()
		}
	}
	s.mu.Unlock()
}

// Meter makes the stream count the payload bytes it moves: in is client to
// instance, out is instance to client.
func (s *Stream) Meter(in, out *atomic.Uint64) {
	s.mu.Lock()
	s.req.meter, s.resp.meter = in, out
	s.mu.Unlock()
}

// Fail ends the stream with a gRPC status made by the gateway: Trailers-Only if no
// response has begun, else trailers after what was sent. A non-gRPC request gets
// the matching HTTP status and the message as text. It is safe from any goroutine,
// and a no-op once the stream has ended.
func (s *Stream) Fail(code codes.Code, msg string) {
	var fl flusher
	s.mu.Lock()
	s.failLocked(code, msg, &fl)
	s.mu.Unlock()
	s.finish()
	fl.run()
}

func (s *Stream) failLocked(code codes.Code, msg string, fl *flusher) {
	if s.downClosed {
		return
	}
	s.down.cfg.OnFail(code)
	s.dropResp(fl)
	d := s.down
	d.wmu.Lock()
	switch {
	case s.grpc || s.respSent:
		fields := statusFields(code, msg, !s.respSent)
		if !s.respSent {
			fields = append(fields, s.extraResp...)
		}
		d.writeHeadersLocked(s.did, fields, true)
	default:
		d.writeHeadersLocked(s.did, []hpack.HeaderField{
			{Name: ":status", Value: strconv.Itoa(httpStatus(code))},
			{Name: "content-type", Value: "text/plain; charset=utf-8"},
		}, false)
		body := []byte(msg + "\n")
		// The error body is tiny and goes out regardless of the stream window:
		// the client's initial window is at least 64 KiB unless it said otherwise,
		// and an error is better than a hang if it did.
		d.writeDataLocked(s.did, body, true)
	}
	s.respSent = true
	s.resp.sentEnd = true
	d.wmu.Unlock()
	fl.add(d)
	s.closeDownLocked(fl)
}

// dropResp discards response bytes queued for the client and grants their window
// back to the instance.
func (s *Stream) dropResp(fl *flusher) {
	if n := s.resp.pending.len(); n > 0 {
		s.resp.pending.reset()
		if s.up != nil {
			s.up.giveBackConn(int64(n), fl)
		}
	}
	s.resp.trailers = nil
}

// dropReq discards request bytes queued for the instance and grants their window
// back to the client.
func (s *Stream) dropReq(fl *flusher) {
	if n := s.req.pending.len(); n > 0 {
		s.req.pending.reset()
		s.down.giveBackConn(int64(n), fl)
	}
	s.req.trailers = nil
	s.replay.reset()
	s.replayOK = false
}

// closeDownLocked ends the stream on the client's connection once the response
// has been written in full (or reset). A client still sending is told to stop
// with RST_STREAM(NO_ERROR), as RFC 9113 8.1 allows a server that has answered.
func (s *Stream) closeDownLocked(fl *flusher) {
	if s.downClosed {
		return
	}
	d := s.down
	d.wmu.Lock()
	if !s.req.gotEnd {
		d.writeRSTLocked(s.did, http2.ErrCodeNo)
	}
	delete(d.streams, s.did)
	d.wakeIfIdleLocked()
	d.wmu.Unlock()
	fl.add(d)
	s.downClosed = true
	s.dropReq(fl)
	// Nothing more will reach the instance: close our side there too.
	s.closeUpLocked(http2.ErrCodeCancel, true, fl)
}

// closeUpLocked ends the stream on the instance's connection. If the exchange
// there is not already complete, the instance gets RST_STREAM(code). abort drops
// response bytes still queued for the client; a normal end lets them drain.
func (s *Stream) closeUpLocked(code http2.ErrCode, abort bool, fl *flusher) {
	if s.upClosed {
		return
	}
	s.upClosed = true
	u := s.up
	if u == nil || s.uid == 0 {
		return
	}
	u.wmu.Lock()
	if !(s.req.sentEnd && s.resp.gotEnd) {
		u.writeRSTLocked(s.uid, code)
	}
	s.req.sentEnd = true
	delete(u.streams, s.uid)
	u.retireIfIdleLocked()
	u.wmu.Unlock()
	fl.add(u)
	if abort {
		s.dropResp(fl)
	}
}

// finish runs the done callbacks once the stream has closed on the client's side.
func (s *Stream) finish() {
	s.mu.Lock()
	if s.done || !s.downClosed {
		s.mu.Unlock()
		return
	}
	s.done = true
	cbs := s.onDone
	s.onDone = nil
	s.req.pending.reset()
	s.resp.pending.reset()
	s.replay.reset()
	s.mu.Unlock()
	for _, f := range cbs {
		f()
	}
}

// sendLocked moves p, then END_STREAM if end, towards dst on stream id, queueing
// what the windows do not allow yet. It returns how many payload bytes left the
// gateway, which the caller grants back to the source. s.mu is held.
func (f *flow) sendLocked(s *Stream, dst *conn, id uint32, p []byte, end bool) int {
	dst.wmu.Lock()
	sent := f.drainLocked(s, dst, id)
	if f.pending.len() == 0 && !f.endQueued {
		if b := f.budget(dst); b > 0 || len(p) == 0 {
			n := int(min(int64(len(p)), max(b, 0)))
			last := end && n == len(p)
			if n > 0 || last {
				dst.writeDataLocked(id, p[:n], last)
				f.spend(dst, n)
				sent += n
				if last {
					f.sentEnd = true
				}
			}
			p = p[n:]
		}
	}
	if len(p) > 0 {
		f.pending.write(p)
	}
	if end && !f.sentEnd {
		f.endQueued = true
		sent += f.drainLocked(s, dst, id)
	}
	if f.pending.len() > 0 && !f.waiting {
		f.waiting = true
		dst.waiting = append(dst.waiting, s)
	}
	dst.wmu.Unlock()
	return sent
}

func (f *flow) spend(dst *conn, n int) {
	f.win -= int64(n)
	dst.sendWin -= int64(n)
	if f.meter != nil {
		f.meter.Add(uint64(n))
	}
}

// drainLocked writes queued bytes as far as the windows allow, then the queued
// END_STREAM or trailers once nothing is left. dst.wmu and s.mu are held.
func (f *flow) drainLocked(s *Stream, dst *conn, id uint32) int {
	sent := 0
	for f.pending.len() > 0 {
		b := f.budget(dst)
		if b <= 0 || dst.closed {
			return sent
		}
		p := f.pending.peek(int(min(b, int64(dst.peerMaxFrame))))
		last := f.endQueued && f.trailers == nil && len(p) == f.pending.len()
		dst.writeDataLocked(id, p, last)
		f.spend(dst, len(p))
		f.pending.consume(len(p))
		sent += len(p)
		if last {
			f.sentEnd = true
		}
	}
	if f.endQueued && !f.sentEnd {
		if f.trailers != nil {
			dst.writeHeadersLocked(id, f.trailers, true)
			f.trailers = nil
		} else {
			dst.writeDataLocked(id, nil, true)
		}
		f.sentEnd = true
	}
	return sent
}

// giveBackLocked grants n bytes that have left the gateway back to src, on the
// stream and the connection, in batches of a quarter window. s.mu is held.
func (f *flow) giveBackLocked(src *conn, id uint32, n int, fl *flusher) {
	if f.credited > 0 {
		// Bytes replayed after a refusal were granted back the first time.
		k := min(int64(n), f.credited)
		f.credited -= k
		n -= int(k)
	}
	if n == 0 {
		return
	}
	src.wmu.Lock()
	src.giveBackConnLocked(int64(n))
	if !f.gotEnd && !src.closed {
		f.credit += int64(n)
		if f.credit >= int64(src.cfg.StreamWindow)/4 {
			src.check(src.wf.WriteWindowUpdate(id, uint32(f.credit)))
			f.recvWin += f.credit
			f.credit = 0
			src.dirty = true
		}
	}
	src.wmu.Unlock()
	fl.add(src)
}

// forwardLocked opens the stream on u and sends what the client has sent so far.
// It returns false if u can take no new stream. s.mu is held.
func (s *Stream) forwardLocked(u *conn, fl *flusher) bool {
	u.wmu.Lock()
	if u.closed || u.peerGoAway || u.sentGoAway || u.nextID > maxStreamID {
		u.wmu.Unlock()
		return false
	}
	s.up, s.uid = u, u.nextID
	u.nextID += 2
	u.streams[s.uid] = s
	s.upClosed = false
	s.req.attach(u)
	s.req.waiting = false
	s.resp.recvWin = int64(s.down.cfg.StreamWindow)
	fields := s.fields
	if s.timeIdx >= 0 {
		// Time spent held counts against the client's deadline, so the instance
		// is told what is left of it (case B17).
		if waited := time.Since(s.opened); waited > time.Millisecond {
			fields = append([]hpack.HeaderField(nil), fields...)
			fields[s.timeIdx].Value = formatTimeout(s.timeout - waited)
		}
	}
	end := s.req.gotEnd && s.req.pending.len() == 0 && s.req.trailers == nil
	u.writeHeadersLocked(s.uid, fields, end)
	if end {
		s.req.sentEnd = true
	} else if s.req.gotEnd {
		s.req.endQueued = true
	}
	var sent int
	if s.req.pending.len() > 0 {
		sent = s.req.drainLocked(s, u, s.uid)
		if s.req.pending.len() > 0 && !s.req.waiting {
			s.req.waiting = true
			u.waiting = append(u.waiting, s)
		}
	} else if s.req.endQueued {
		s.req.drainLocked(s, u, s.uid)
	}
	u.wmu.Unlock()
	fl.add(u)
	s.req.giveBackLocked(s.down, s.did, sent, fl)
	return true
}

// keepForReplay copies request bytes into the replay buffer until the instance
// answers or the buffer would pass its limit, after which the stream is no longer
// replayable.
func (s *Stream) keepForReplay(p []byte) {
	if s.replay.len()+len(p) > s.down.cfg.ReplayLimit {
		s.replay.reset()
		s.replayOK = false
		return
	}
	s.replay.write(p)
}

const maxStreamID = 1<<31 - 1
