package relay

import (
	"errors"
	"time"

	"golang.org/x/net/http2"
)

// role is what differs between the two ends of the relay.
type role interface {
	headers(f *http2.MetaHeadersFrame) error
	rst(f *http2.RSTStreamFrame)
	goAway(f *http2.GoAwayFrame)
	ping(f *http2.PingFrame)
}

// serve reads frames until the connection fails. Frames common to both roles are
// handled here; the rest go to r.
func (c *conn) serve(r role) error {
	for {
		waited := c.br.Buffered() == 0
		if waited {
			c.fl.run()
			idle := c.park != nil && c.idle()
			switch {
			case idle && (c.wake == nil || c.wake.after == 0):
				// Over TLS no deadline may interrupt a read; see conn.wake.
				go c.park()
				return errParked
			case c.wake != nil:
				c.wake.arm()
				if idle {
					c.wake.kick()
				}
			}
		}
		fh, err := c.rf.ReadFrameHeader()
		if err == errKicked {
			if c.idle() {
				go c.park()
				return errParked
			}
			continue
		}
		if waited {
			// Once per wake-up, not per frame: enough to tell a live peer from a
			// vanished one.
			c.lastRead.Store(time.Now().UnixNano())
		}
		if err != nil {
			if errors.Is(err, http2.ErrFrameTooLarge) {
				return c.connError(http2.ErrCodeFrameSize, "frame too large")
			}
			return err
		}
		if fh.Type == http2.FrameData {
			err = c.readData(fh)
		} else {
			var f http2.Frame
			f, err = c.rf.ReadFrameForHeader(fh)
			if err == nil {
				err = c.dispatch(r, f)
			}
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			c.streamError(se.StreamID, se.Code)
			continue
		}
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return c.connError(http2.ErrCode(ce), err.Error())
		}
		return err
	}
}

func (c *conn) dispatch(r role, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return r.headers(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		grew, err := c.applySettings(f)
		if err != nil {
			return err
		}
		c.fl.add(c)
		if grew {
			c.wakeWaiting()
		}
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.RSTStreamFrame:
		r.rst(f)
	case *http2.PingFrame:
		r.ping(f)
	case *http2.GoAwayFrame:
		r.goAway(f)
	case *http2.PushPromiseFrame:
		// Push is disabled in our SETTINGS; a server that pushes anyway is broken.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// PRIORITY and unknown frame types are ignored, as RFC 9113 asks.
	return nil
}

// connError ends the connection with GOAWAY carrying code.
func (c *conn) connError(code http2.ErrCode, reason string) error {
	c.wmu.Lock()
	c.goAwayLocked(code, reason)
	c.flushLocked()
	c.wmu.Unlock()
	return http2.ConnectionError(code)
}

// streamError resets one stream after a frame on it broke the protocol.
func (c *conn) streamError(id uint32, code http2.ErrCode) {
	c.onReset()
	if s := c.lookup(id); s != nil {
		s.protocolReset(c, code, &c.fl)
		return
	}
	c.writeRST(id, code, &c.fl)
}

func (c *conn) readData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return c.connError(http2.ErrCodeProtocol, "DATA on stream 0")
	}
	n := int(fh.Length)
	p, err := c.readPayload(n)
	if err != nil {
		return err
	}
	defer c.discardPayload(n)
	data := p
	if fh.Flags.Has(http2.FlagDataPadded) {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return c.connError(http2.ErrCodeProtocol, "bad DATA padding")
		}
		data = p[1 : len(p)-int(p[0])]
	}
	s, ok := c.takeRecv(fh.StreamID, int64(n))
	if !ok {
		return c.connError(http2.ErrCodeFlowControl, "connection window exceeded")
	}
	if s == nil {
		// A stream that has closed here may still receive what the peer sent
		// before it learned so; its bytes still count against the connection.
		c.giveBackConn(int64(n), &c.fl)
		if c.server && fh.StreamID > c.lastAccepted() {
			return c.connError(http2.ErrCodeProtocol, "DATA on idle stream")
		}
		return nil
	}
	s.receive(c, data, n, fh.Flags.Has(http2.FlagDataEndStream), &c.fl)
	return nil
}

func (c *conn) discardPayload(n int) {
	if n <= c.br.Size() {
		c.br.Discard(n)
	}
}

func (c *conn) lastAccepted() uint32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.lastStreamID
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		c.wmu.Lock()
		c.sendWin += int64(f.Increment)
		over := c.sendWin > maxWindow
		c.wmu.Unlock()
		if over {
			return c.connError(http2.ErrCodeFlowControl, "connection window overflow")
		}
		c.wakeWaiting()
		return nil
	}
	s := c.lookup(f.StreamID)
	if s == nil {
		return nil
	}
	s.windowUpdate(c, int64(f.Increment), &c.fl)
	return nil
}

// wakeWaiting lets streams with data queued towards c move on after its windows grew.
func (c *conn) wakeWaiting() {
	for _, s := range c.takeWaiting() {
		s.drainTo(c, &c.fl)
	}
}

func (c *conn) pong(f *http2.PingFrame) {
	if f.IsAck() {
		return
	}
	// Each hop answers its own PINGs; they are never activity and never forwarded
	// (case B07).
	c.wmu.Lock()
	if !c.closed {
		c.check(c.wf.WritePing(true, f.Data))
		c.dirty = true
	}
	c.wmu.Unlock()
	c.fl.add(c)
}
