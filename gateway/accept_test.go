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
