package relay

import (
	"bufio"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/net/http2"
)

// Buffers are taken from pools while a connection has bytes to move and given
// back when it has none, so an idle connection holds no buffer at all. Most of
// the memory a proxy spends per connection is buffers held by connections that
// are doing nothing; a gateway that pins every client for hours has many.

const (
	readBufSize  = defaultMaxFrame + frameHeaderLen // one whole frame, so a DATA payload can be peeked in place
	writeBufSize = 32 << 10
)

var (
	readPool  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	writePool = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}
)

// reader is a buffered reader over a connection that gives its buffer back to the
// pool whenever it is empty, and waits for the connection to become readable
// before taking one again.
type reader struct {
	nc   net.Conn
	raw  syscall.RawConn // nil when the connection offers none (TLS)
	wake *waker          // see park.go; nil on instance connections
	buf  *[]byte
	r, w int

	// The poller callback and what it returns, bound once: a closure made per
	// read would escape through the RawConn interface, an allocation per read.
	readFn func(fd uintptr) bool
	n      int
	rerr   error
}

func newReader(nc net.Conn, leftover []byte) *reader {
	rd := &reader{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		rd.raw, _ = sc.SyscallConn()
		rd.readFn = rd.readFD
	}
	if len(leftover) > 0 {
		rd.take()
		rd.w = copy(*rd.buf, leftover)
	}
	return rd
}

// fromBufio hands over what a bufio.Reader has read ahead.
func fromBufio(nc net.Conn, br *bufio.Reader) *reader {
	if br == nil {
		return newReader(nc, nil)
	}
	b, _ := br.Peek(br.Buffered())
	return newReader(nc, b)
}

func (rd *reader) take() {
	if rd.buf == nil {
		rd.buf = readPool.Get().(*[]byte)
	}
}

func (rd *reader) release() {
	if rd.buf != nil && rd.r == rd.w {
		readPool.Put(rd.buf)
		rd.buf, rd.r, rd.w = nil, 0, 0
	}
}

// Buffered is how many bytes can be read without touching the connection.
func (rd *reader) Buffered() int { return rd.w - rd.r }

// Size is the most Peek can return.
func (rd *reader) Size() int { return readBufSize }

// fill reads more from the connection, keeping what is buffered.
func (rd *reader) fill() error {
	if rd.r == rd.w {
		rd.release()
	}
	if rd.raw == nil {
		return rd.readInto()
	}
	rd.compact()
	// Read inside the runtime's poller callback. When nothing is buffered, the
	// buffer is taken only when the socket has data and given back before
	// parking: one read(2) per wake-up, as a plain Read does, with no buffer held
	// while the connection is idle. (A callback that parks first and reads after
	// would lose a wake-up: the poller forgets readiness it saw before the wait.)
	rd.n, rd.rerr = 0, nil
	err := rd.raw.Read(rd.readFn)
	n, rerr := rd.n, rd.rerr
	rd.rerr = nil
	if rd.wake != nil {
		err = rd.wake.settle(err)
	}
	switch {
	case err != nil:
		return err
	case rerr != nil:
		return rerr
	case n <= 0:
		return io.EOF
	}
	rd.w += n
	return nil
}

// compact moves a partial frame to the front of the buffer, making room for the
// rest of it.
func (rd *reader) compact() {
	if rd.buf != nil && rd.r > 0 {
		b := *rd.buf
		rd.w = copy(b, b[rd.r:rd.w])
		rd.r = 0
	}
}

// readFD is fill's poller callback.
func (rd *reader) readFD(fd uintptr) bool {
	rd.take()
	rd.n, rd.rerr = readFD(fd, (*rd.buf)[rd.w:])
	if rd.rerr == syscall.EAGAIN {
		rd.release()
		return false
	}
	return true
}

// readInto reads through the connection's own Read, for connections that offer
// no raw access (TLS).
func (rd *reader) readInto() error {
	rd.take()
	rd.compact()
	n, err := rd.nc.Read((*rd.buf)[rd.w:])
	rd.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (rd *reader) Read(p []byte) (int, error) {
	if rd.r == rd.w {
		if err := rd.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*rd.buf)[rd.r:rd.w])
	rd.r += n
	if rd.r == rd.w {
		rd.release()
	}
	return n, nil
}

// Peek returns the next n bytes without consuming them. n must not be more than
// Size. The slice is valid until the next read.
func (rd *reader) Peek(n int) ([]byte, error) {
	if n == 0 {
		// An empty DATA frame (END_STREAM alone) has no payload to wait for.
		return nil, nil
	}
	for rd.w-rd.r < n {
		if err := rd.fill(); err != nil {
			return nil, err
		}
	}
	return (*rd.buf)[rd.r : rd.r+n], nil
}

// Discard consumes n buffered bytes.
func (rd *reader) Discard(n int) {
	rd.r += n
	if rd.r == rd.w {
		rd.release()
	}
}

// writer buffers frames for a connection; it is used under the connection's wmu.
// Its buffer comes from the pool at the first write after a flush and goes back
// at the flush.
type writer struct {
	nc  net.Conn
	raw syscall.RawConn // nil when the connection offers none (TLS)
	buf *[]byte

	// As reader.readFn: the callback bound once, its input and results in fields.
	writeFn func(fd uintptr) bool
	p       []byte
	n       int
	werr    error
}

func newWriter(nc net.Conn) *writer {
	w := &writer{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
		w.writeFn = w.writeFD
	}
	return w
}

// write writes all of p, through the poller like net.Conn's Write, deadlines
// included, but with writeFD.
func (w *writer) write(p []byte) (int, error) {
	if w.raw == nil {
		return w.nc.Write(p)
	}
	done := 0
	for done < len(p) {
		w.p, w.n, w.werr = p[done:], 0, nil
		err := w.raw.Write(w.writeFn)
		if err == nil {
			err = w.werr
		}
		done += w.n
		w.p, w.werr = nil, nil
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeFD is write's poller callback.
func (w *writer) writeFD(fd uintptr) bool {
	w.n, w.werr = writeFD(fd, w.p)
	return w.werr != syscall.EAGAIN
}

func (w *writer) Write(p []byte) (int, error) {
	if w.buf == nil {
		w.buf = writePool.Get().(*[]byte)
	}
	b := *w.buf
	if len(b)+len(p) > cap(b) {
		if err := w.Flush(); err != nil {
			return 0, err
		}
		if len(p) >= writeBufSize {
			// Larger than the buffer: one write of its own, no copy.
			return w.write(p)
		}
		w.buf = writePool.Get().(*[]byte)
		b = *w.buf
	}
	*w.buf = append(b, p...)
	return len(p), nil
}

// frameHeader appends a frame header. It builds the nine bytes in the buffer
// itself: a header array passed to Write would escape through the net.Conn
// interface and cost an allocation per DATA frame.
func (w *writer) frameHeader(length int, typ http2.FrameType, flags http2.Flags, id uint32) error {
	if w.buf == nil {
		w.buf = writePool.Get().(*[]byte)
	}
	if len(*w.buf)+frameHeaderLen > cap(*w.buf) {
		if err := w.Flush(); err != nil {
			return err
		}
		w.buf = writePool.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	return nil
}

func (w *writer) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// Flush writes what is buffered and returns the buffer to the pool.
func (w *writer) Flush() error {
	if w.buf == nil {
		return nil
	}
	b := *w.buf
	var err error
	if len(b) > 0 {
		_, err = w.write(b)
	}
	*w.buf = b[:0]
	writePool.Put(w.buf)
	w.buf = nil
	return err
}
