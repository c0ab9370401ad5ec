package relay

import (
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// from returns, for a frame read from c, the flow it feeds, where that flow
// goes, and the stream's id on each side.
func (s *Stream) from(c *conn) (f *flow, dst *conn, srcID, dstID uint32) {
	if c == s.down {
		return &s.req, s.up, s.did, s.uid
	}
	return &s.resp, s.down, s.uid, s.did
}

// towards returns the flow written to c, where it comes from, and the ids.
func (s *Stream) towards(c *conn) (f *flow, src *conn, srcID, dstID uint32) {
	if c == s.down {
		return &s.resp, s.up, s.uid, s.did
	}
	return &s.req, s.down, s.did, s.uid
}

// attached reports whether s is still open on c.
func (s *Stream) attached(c *conn) bool {
	if c == s.down {
		return !s.downClosed
	}
	return c == s.up && !s.upClosed
}

// receive handles a DATA frame of n bytes (data without padding) read from c.
func (s *Stream) receive(c *conn, data []byte, n int, end bool, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		c.giveBackConn(int64(n), fl)
		return
	}
	f, dst, srcID, dstID := s.from(c)
	if f.gotEnd {
		s.mu.Unlock()
		c.giveBackConn(int64(n), fl)
		s.protocolReset(c, http2.ErrCodeStreamClosed, fl)
		return
	}
	f.recvWin -= int64(n)
	if f.recvWin < 0 {
		s.mu.Unlock()
		c.giveBackConn(int64(n), fl)
		s.protocolReset(c, http2.ErrCodeFlowControl, fl)
		return
	}
	f.gotEnd = end
	if pad := n - len(data); pad > 0 {
		// Padding is never forwarded, so its window comes back at once.
		c.giveBackConn(int64(pad), fl)
		f.recvWin += int64(pad)
	}
	if c == s.up {
		s.dropReplay() // the instance has answered: the stream was processed
	} else if s.replayOK {
		s.keepForReplay(data)
	}
	switch {
	case c == s.down && s.up != nil && s.upClosed, c == s.up && s.downClosed:
		// The other side has finished: the bytes have nowhere to go.
		c.giveBackConn(int64(len(data)), fl)
	case dst == nil:
		// Held: keep the bytes until the stream is forwarded. The window the client
		// was granted bounds them.
		f.pending.write(data)
	default:
		sent := f.sendLocked(s, dst, dstID, data, end)
		fl.add(dst)
		f.giveBackLocked(c, srcID, sent, fl)
	}
	s.settleLocked(fl)
	// finish takes s.mu again; most frames are mid-stream and need not.
	over := s.downClosed && !s.done
	s.mu.Unlock()
	if over {
		s.finish()
	}
}

// windowUpdate grows the window of the flow written to c, and moves what it held back.
func (s *Stream) windowUpdate(c *conn, inc int64, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		return
	}
	f, _, _, _ := s.towards(c)
	f.win += inc
	if f.win+int64(c.peerInitLocked())-int64(f.winBase) > maxWindow {
		s.mu.Unlock()
		s.protocolReset(c, http2.ErrCodeFlowControl, fl)
		return
	}
	s.mu.Unlock()
	s.drainTo(c, fl)
}

func (c *conn) peerInitLocked() int32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.peerInit
}

// drainTo writes what s has queued towards c, as far as c's windows allow.
func (s *Stream) drainTo(c *conn, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) || (c == s.up && s.uid == 0) {
		s.mu.Unlock()
		return
	}
	f, src, srcID, dstID := s.towards(c)
	c.wmu.Lock()
	f.waiting = false
	sent := f.drainLocked(s, c, dstID)
	if f.pending.len() > 0 {
		f.waiting = true
		c.waiting = append(c.waiting, s)
	}
	c.wmu.Unlock()
	fl.add(c)
	if src != nil {
		f.giveBackLocked(src, srcID, sent, fl)
	}
	s.settleLocked(fl)
	s.mu.Unlock()
	s.finish()
}

// settleLocked closes each side of the stream whose exchange is complete.
func (s *Stream) settleLocked(fl *flusher) {
	if s.up != nil && !s.upClosed && s.req.sentEnd && s.resp.gotEnd {
		s.closeUpLocked(http2.ErrCodeNo, false, fl)
	}
	if s.resp.sentEnd && !s.downClosed {
		s.closeDownLocked(fl)
	}
}

// peerReset handles RST_STREAM(code) sent by c.
func (s *Stream) peerReset(c *conn, code http2.ErrCode, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		return
	}
	switch {
	case c == s.down:
		// The client cancelled: forget the stream here and cancel it upstream.
		s.resetDownLocked(fl)
	case code == http2.ErrCodeNo && s.resp.gotEnd:
		// A server may answer in full, then reset a request it no longer needs
		// (RFC 9113 8.1). That is a normal end: what it sent still reaches the
		// client, then the client is told to stop sending (case B06).
		s.req.sentEnd = true
		s.dropReqPending(fl)
		s.closeUpLocked(http2.ErrCodeNo, false, fl)
	case code == http2.ErrCodeRefusedStream && !s.respSent:
		s.mu.Unlock()
		s.refused(c, fl)
		return
	default:
		// Pass the reset through, as a direct connection would have seen it.
		s.upClosed = true
		s.removeUp()
		s.dropResp(fl)
		s.resp.sentEnd = true
		s.down.writeRST(s.did, code, fl)
		s.markDownClosedLocked(fl)
	}
	s.settleLocked(fl)
	s.mu.Unlock()
	s.finish()
}

// protocolReset resets the stream on c after c broke the protocol on it. A client
// gets its reset; an instance's client gets an UNAVAILABLE status.
func (s *Stream) protocolReset(c *conn, code http2.ErrCode, fl *flusher) {
	if c == s.down {
		// A reset the client provoked costs what one it sent does (MadeYouReset,
		// CVE-2025-8671).
		c.onReset()
	}
	s.mu.Lock()
	if c == s.down {
		if !s.downClosed {
			s.down.writeRST(s.did, code, fl)
			s.resetDownLocked(fl)
		}
	} else if c == s.up && !s.upClosed {
		s.closeUpLocked(code, true, fl)
		s.failLocked(codes.Unavailable, "instance broke the HTTP/2 protocol on this stream: "+code.String(), fl)
	}
	s.mu.Unlock()
	s.finish()
}

// resetDownLocked forgets a stream the client reset or left, and cancels it upstream.
func (s *Stream) resetDownLocked(fl *flusher) {
	s.resp.sentEnd = true
	s.req.gotEnd = true
	s.markDownClosedLocked(fl)
}

// markDownClosedLocked closes the stream on the client's side without writing
// to the client.
func (s *Stream) markDownClosedLocked(fl *flusher) {
	if s.downClosed {
		return
	}
	d := s.down
	d.wmu.Lock()
	delete(d.streams, s.did)
	d.wakeIfIdleLocked()
	d.wmu.Unlock()
	s.downClosed = true
	s.dropResp(fl)
	s.dropReq(fl)
	s.closeUpLocked(http2.ErrCodeCancel, true, fl)
}

func (s *Stream) removeUp() {
	if u := s.up; u != nil && s.uid != 0 {
		u.wmu.Lock()
		delete(u.streams, s.uid)
		u.retireIfIdleLocked()
		u.wmu.Unlock()
	}
}

func (s *Stream) dropReqPending(fl *flusher) {
	if n := s.req.pending.len(); n > 0 {
		s.req.pending.reset()
		s.down.giveBackConn(int64(n), fl)
	}
	s.req.trailers = nil
	s.req.endQueued = false
}

func (s *Stream) dropReplay() {
	if s.replayOK || s.replay.len() > 0 {
		s.replay.reset()
		s.replayOK = false
	}
}

// respHeaders handles a HEADERS frame from the instance: the response headers,
// a Trailers-Only response, or the trailers.
func (s *Stream) respHeaders(c *conn, mh *http2.MetaHeadersFrame, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		return
	}
	s.dropReplay()
	f := &s.resp
	end := mh.StreamEnded()
	if f.gotEnd {
		s.mu.Unlock()
		s.protocolReset(c, http2.ErrCodeStreamClosed, fl)
		return
	}
	var sent func()
	d := s.down
	if s.downClosed {
		f.gotEnd = end
	} else if !s.respSent {
		status := mh.PseudoValue("status")
		informational := len(status) == 3 && status[0] == '1' && !end
		fields := filterResponse(mh.Fields)
		if !informational && len(s.extraResp) > 0 {
			fields = append(append(make([]hpack.HeaderField, 0, len(fields)+len(s.extraResp)), fields...), s.extraResp...)
		}
		d.wmu.Lock()
		d.writeHeadersLocked(s.did, fields, end)
		d.wmu.Unlock()
		fl.add(d)
		if !informational {
			s.respSent = true
			sent, s.onResp = s.onResp, nil
		}
		if end {
			f.gotEnd, f.sentEnd = true, true
		}
	} else {
		if !end {
			s.mu.Unlock()
			s.protocolReset(c, http2.ErrCodeProtocol, fl)
			return
		}
		// Trailers go out after every byte queued before them, whether or not the
		// instance announced them (cases B01, B02).
		f.gotEnd = true
		f.trailers = filterResponse(mh.Fields)
		if f.trailers == nil {
			f.trailers = []hpack.HeaderField{}
		}
		f.endQueued = true
		d.wmu.Lock()
		n := f.drainLocked(s, d, s.did)
		d.wmu.Unlock()
		fl.add(d)
		f.giveBackLocked(c, s.uid, n, fl)
	}
	s.settleLocked(fl)
	s.mu.Unlock()
	s.finish()
	if sent != nil {
		sent()
	}
}

// reqTrailers handles trailers the client sends to end its request.
func (s *Stream) reqTrailers(mh *http2.MetaHeadersFrame, fl *flusher) {
	s.mu.Lock()
	f := &s.req
	if s.downClosed || f.gotEnd || !mh.StreamEnded() {
		s.mu.Unlock()
		s.protocolReset(s.down, http2.ErrCodeProtocol, fl)
		return
	}
	f.gotEnd = true
	f.trailers = filterResponse(mh.Fields)
	if f.trailers == nil {
		f.trailers = []hpack.HeaderField{}
	}
	if u := s.up; u != nil && !s.upClosed && s.uid != 0 {
		f.endQueued = true
		u.wmu.Lock()
		n := f.drainLocked(s, u, s.uid)
		u.wmu.Unlock()
		fl.add(u)
		f.giveBackLocked(s.down, s.did, n, fl)
	}
	s.settleLocked(fl)
	s.mu.Unlock()
	s.finish()
}

// refused handles a stream the instance never processed: refused outright, or
// above the last-stream-id of its GOAWAY. The request is sent again once, on a new
// connection, if all of it is still at hand; otherwise the client is told the
// stream was refused, which gRPC clients retry transparently (case B08).
func (s *Stream) refused(c *conn, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		return
	}
	s.removeUp()
	pool := s.pool
	if !s.replayOK || s.retried || pool == nil || s.respSent {
		s.upClosed = true
		s.down.writeRST(s.did, http2.ErrCodeRefusedStream, fl)
		s.resetDownLocked(fl)
		s.mu.Unlock()
		s.finish()
		return
	}
	// Everything the client sent is in the replay buffer; what is still queued is
	// its tail. The part already granted back to the client must not be granted twice.
	credited := s.replay.len() - s.req.pending.len()
	s.req.pending.reset()
	s.req.pending, s.replay = s.replay, chunks{}
	s.req.credited = int64(credited)
	s.replayOK = false
	s.retried = true
	s.up, s.uid = nil, 0
	s.upClosed = false
	s.req.sentEnd, s.req.endQueued, s.req.waiting = false, false, false
	s.resp = flow{recvWin: s.resp.recvWin, win: s.resp.win, winBase: s.resp.winBase, meter: s.resp.meter}
	s.mu.Unlock()
	pool.forward(s, fl)
}

// upLost handles the loss of the instance's connection under a stream.
func (s *Stream) upLost(c *conn, msg string, fl *flusher) {
	s.mu.Lock()
	if !s.attached(c) {
		s.mu.Unlock()
		return
	}
	s.upClosed = true
	if s.resp.gotEnd {
		// The answer is complete; it only waits for the client's window.
		s.mu.Unlock()
		return
	}
	s.failLocked(codes.Unavailable, msg, fl)
	s.mu.Unlock()
	s.finish()
}
