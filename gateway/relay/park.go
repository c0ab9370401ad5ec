package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// An idle client connection waits for its next bytes on a goroutine of its own
// whose stack is as small as a stack can be (see Downstream.park), once it has
// had no stream open for Config.ParkAfter. The reader, when it would block with
// no stream open, sets itself a read deadline that far ahead; a reader that went
// to wait while a stream was still open, the usual case after a unary call, gets
// the same deadline from a waker when that last stream closes. Bytes arriving
// first clear it, so a busy connection never parks; the deadline passing parks
// the reader.

// errParked is what serve returns when it handed the connection to c.park.
var errParked = errors.New("relay: connection parked")

// errKicked is what a read returns when a waker's deadline woke it. Nothing was
// read: a reader is woken only while it waits at a frame boundary.
var errKicked = errors.New("relay: reader woken to park")

// waker wakes a reader that waits at a frame boundary, through a read deadline:
// the only way to wake a goroutine parked in the runtime's poller short of
// closing the connection, and a timer the runtime keeps without a goroutine.
type waker struct {
	nc    net.Conn
	after time.Duration // Config.ParkAfter
	state atomic.Uint32
	mu    sync.Mutex // serialises deadline changes between reader and wakers
	until time.Time  // the closing linger's deadline
}

const (
	wakerRunning uint32 = iota // the reader is busy, or waits mid-frame
	wakerWaiting               // the reader waits at a frame boundary
	wakerKicked                // woken: a past deadline is set
	wakerClosing               // the connection lingers until `until`
)

// arm is called by the reader before it waits at a frame boundary.
func (w *waker) arm() {
	w.state.CompareAndSwap(wakerRunning, wakerWaiting)
}

// kick wakes the reader after w.after if it waits at a frame boundary and
// nothing arrives before then.
func (w *waker) kick() {
	w.mu.Lock()
	if w.state.CompareAndSwap(wakerWaiting, wakerKicked) {
		w.nc.SetReadDeadline(time.Now().Add(w.after))
	}
	w.mu.Unlock()
}

// linger sets the deadline for the end of a connection that is closing, and
// keeps kicks from touching deadlines from now on.
func (w *waker) linger(until time.Time) {
	w.mu.Lock()
	w.state.Store(wakerClosing)
	w.until = until
	w.nc.SetReadDeadline(until)
	w.mu.Unlock()
}

// settle is called by the reader after each read with its error, and returns
// the error the read should report.
func (w *waker) settle(err error) error {
	if w.state.CompareAndSwap(wakerWaiting, wakerRunning) || w.state.Load() == wakerRunning {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	switch w.state.Load() {
	case wakerKicked:
		w.state.Store(wakerRunning)
		w.nc.SetReadDeadline(time.Time{})
		if timedOut {
			return errKicked
		}
	case wakerClosing:
		// A kick's past deadline may have fired just before the linger replaced
		// it; the wait goes on until the linger's own.
		if timedOut && time.Now().Before(w.until) {
			return errKicked
		}
	}
	return err
}

// wakeIfIdleLocked wakes the reader of a client connection whose last stream
// has just closed. c.wmu is held.
func (c *conn) wakeIfIdleLocked() {
	if c.wake != nil && len(c.streams) == 0 && !c.closed && !c.sentGoAway {
		c.wake.kick()
	}
}

// idle reports whether no stream is open on c.
func (c *conn) idle() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.streams) == 0
}
