package gateway_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// An instance that dies mid-session ends the streams open on it with
// UNAVAILABLE saying why it went (design: errors table), its token is then
// NOT_FOUND, and the same client's next call gets a fresh instance.
func TestInstanceThatDiesMidSessionEndsOpenStreamsWithUnavailableSayingWhy(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	c, cc := h.client(t)

	var md metadata.MD
	info, err := c.Info(ctx, &examplepb.InfoRequest{}, grpc.Header(&md))
	if err != nil {
		t.Fatal(err)
	}
	token := one(t, md, "x-tether-session")
	w, err := c.Watch(ctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	s := h.onlySession(t)

	if err := syscall.Kill(int(info.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, err = w.Recv()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("open stream on a killed instance: got %v, want UNAVAILABLE", err)
	}
	if !strings.Contains(st.Message(), "SIGKILL") {
		t.Errorf("open stream on a killed instance: message %q does not say why it went (killed by SIGKILL)", st.Message())
	}
	waitClosed(t, ctx, s.Done(), "the session of the killed instance to end")
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "SIGKILL") {
		t.Errorf("session ended with %v, want the reason: killed by SIGKILL", err)
	}

	other, _ := h.client(t)
	if _, err := other.Info(withMD(ctx, "x-tether-session", token), &examplepb.InfoRequest{}); status.Code(err) != codes.NotFound {
		t.Errorf("token of a dead instance: got %v, want NOT_FOUND", err)
	}
	// The client was told to go away; its next call starts a new session.
	if !cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("client connection stayed READY after its instance died: no GOAWAY")
	}
	fresh, err := c.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatalf("next call after the instance died: %v", err)
	}
	if fresh.GetPid() == info.GetPid() {
		t.Errorf("next call reached the dead instance's pid %d", fresh.GetPid())
	}
}

// TETHER_MAX_LIFETIME ends a session whatever is open on it: the open stream
// gets UNAVAILABLE with the reason, and the process stops.
func TestMaxLifetimeEndsOpenStreamsWithUnavailableAndTheReason(t *testing.T) {
	const lifetime = 500 * time.Millisecond
	h := startGateway(t, options{maxLifetime: lifetime})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	start := time.Now()
	w, err := c.Watch(ctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	s := h.onlySession(t)
	_, err = w.Recv()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "TETHER_MAX_LIFETIME") {
		t.Errorf("stream open at the maximum lifetime: got %v, want UNAVAILABLE naming TETHER_MAX_LIFETIME", err)
	}
	if took := time.Since(start); took < lifetime {
		t.Errorf("session ended after %v, before its maximum lifetime %v", took, lifetime)
	}
	waitClosed(t, ctx, s.Done(), "the session to end")
	waitClosed(t, ctx, s.Instance.Done(), "the instance's process to exit")
}

// A connection that goes away before its session token reached it takes its
// session with it: nobody could ever re-attach, so nothing may be left running.
func TestClientThatLeavesBeforeItsTokenWasDeliveredLeavesNoInstance(t *testing.T) {
	h := startGateway(t, options{args: []string{"-startup-delay", "500ms"}})
	ctx := testCtx(t, time.Minute)

	giveUp := func(t *testing.T) (*grpc.ClientConn, *startCall) {
		t.Helper()
		cc := h.dial(t)
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := examplepb.NewSessionClient(cc).Info(dctx, &examplepb.InfoRequest{})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("held call: got %v, want DEADLINE_EXCEEDED", err)
		}
		return cc, h.rt.nextStart(t, ctx)
	}

	t.Run("during the cold start", func(t *testing.T) {
		cc, sc := giveUp(t)
		cc.Close()
		waitClosed(t, ctx, sc.done, "the activation to end")
		if sc.err == nil {
			waitClosed(t, ctx, sc.inst.Done(), "the instance nobody can reach to stop")
		}
		if pid := int(sc.pid.Load()); pid == 0 || alive(pid) {
			t.Errorf("instance pid %d left running after its client left", pid)
		}
	})
	t.Run("after the cold start", func(t *testing.T) {
		cc, sc := giveUp(t)
		waitClosed(t, ctx, sc.done, "the activation to end")
		if sc.err != nil {
			t.Fatalf("activation: %v", sc.err)
		}
		cc.Close()
		waitClosed(t, ctx, sc.inst.Done(), "the instance nobody can reach to stop")
		if pid := int(sc.pid.Load()); alive(pid) {
			t.Errorf("instance pid %d left running after its client left", pid)
		}
	})
	if n := len(h.mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions left after their clients left", n)
	}
}

// A client that vanishes with a stream open (its TCP connection closes without
// RST_STREAM) costs nothing but that stream: the instance's side of it is
// cancelled, the session lives on for the token, and the gateway still drains.
func TestClientThatVanishesWithAStreamOpenLeavesTheSessionUsable(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	r := dialRaw(t, h.addr)

	first := r.call(1, grpcHeaders("/tether.example.v1.Session/Increment"), &examplepb.IncrementRequest{Delta: 1}).wait(t, ctx)
	if code, msg := first.status(); code != "0" {
		t.Fatalf("first call: grpc-status %q %q", code, msg)
	}
	token, ok := field(first.headers[0], "x-tether-session")
	if !ok {
		t.Fatalf("no session token: %v", first)
	}
	// A server stream that stays open: the instance sends the value at once,
	// then waits for changes.
	watch := r.call(3, grpcHeaders("/tether.example.v1.Session/Watch"), &examplepb.WatchRequest{})
	select {
	case <-r.firstData(3):
	case <-watch.done:
		t.Fatalf("Watch ended: %v", watch)
	case <-ctx.Done():
		t.Fatal("no Watch message")
	}
	r.close() // the client vanishes

	c, _ := h.client(t)
	tctx, cancel := context.WithTimeout(withMD(ctx, "x-tether-session", token), 10*time.Second)
	defer cancel()
	v, err := c.Increment(tctx, &examplepb.IncrementRequest{Delta: 1})
	if err != nil || v.GetValue() != 2 {
		t.Fatalf("re-attach after the client vanished: %v, %v; want 2", v, err)
	}
	info, err := c.Info(tctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Increment, Watch, Increment, Info: the vanished Watch reached the instance
	// once and was cancelled there, or the instance would still hold it open.
	if info.GetCalls() != 4 {
		t.Errorf("instance saw %d calls, want 4", info.GetCalls())
	}
	if err := h.shutdown(5 * time.Second); err != nil {
		t.Errorf("Shutdown after a client vanished mid-stream: %v", err)
	}
}
