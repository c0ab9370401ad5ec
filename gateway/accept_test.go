package gateway_test

import (
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// failingListener fails its first Accepts as a process out of file descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A gateway that runs out of file descriptors keeps serving: it waits for some to
// be freed instead of exiting and taking every pinned session down with it.
// (make bench found this: at the 20,000 open-files limit the gateway exited.)
func TestAcceptOutOfFilesIsRetried(t *testing.T) {
	var fl *failingListener
	h := startGateway(t, options{listener: func(l net.Listener) net.Listener {
		fl = &failingListener{Listener: l}
		fl.fails.Store(3)
		return fl
	}})
	c, _ := h.client(t)
	if _, err := c.Info(testCtx(t, 30*time.Second), &examplepb.InfoRequest{}); err != nil {
		t.Fatalf("call after accept failures: %v", err)
	}
	if n := fl.fails.Load(); n >= 0 {
		t.Fatalf("the listener still had %d failures to give: the test did not exercise them", n+1)
	}
	if got := strings.Count(h.log.String(), "accept failed; retrying"); got != 3 {
		t.Errorf("logged %d accept retries, want 3:\n%s", got, h.log.String())
	}
}

// A connection that never completes its preface is closed at the handshake
// timeout, not handed to the HTTP/1 server to wait for its header timeout too.
func TestSilentConnectionClosedAtHandshakeTimeout(t *testing.T) {
	const timeout = time.Second
	h := startGateway(t, options{handshake: timeout})
	for _, sent := range []string{"", "PRI * HTTP/2.0\r\n"} {
		nc, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if _, err := nc.Write([]byte(sent)); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(began.Add(10 * timeout))
		n, err := nc.Read(make([]byte, 1))
		waited := time.Since(began)
		nc.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("sent %q: still open after %s", sent, waited)
		}
		// Closed at the deadline, not at twice it: the bound is loose for a busy machine.
		if n != 0 || waited < timeout || waited > timeout*17/10 {
			t.Errorf("sent %q: closed after %s with %d bytes (%v), want at the %s handshake timeout", sent, waited, n, err, timeout)
		}
	}
}
