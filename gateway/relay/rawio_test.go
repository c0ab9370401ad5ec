package relay

import (
	"net"
	"testing"
)

// Socket reads and writes allocate nothing: their poller callbacks are bound
// once per connection, where a closure per call would escape through the
// RawConn interface. A regression here is an allocation per frame batch.
func TestSocketIOAllocatesNothing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	defer b.Close()

	w, rd := newWriter(a), newReader(b, nil)
	if w.raw == nil || rd.raw == nil {
		t.Fatal("TCP connections offer no raw access")
	}
	msg := make([]byte, 100)
	var ioErr error
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := w.write(msg); err != nil {
			ioErr = err
			return
		}
		for got := 0; got < len(msg); {
			if err := rd.fill(); err != nil {
				ioErr = err
				return
			}
			n := rd.Buffered()
			got += n
			rd.Discard(n)
		}
	})
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per write and read, want 0", allocs)
	}
}
