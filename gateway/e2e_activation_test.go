package gateway_test

import (
	"context"
	"crypto/tls"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// Done when 3, case B29: a hint that cannot be used is INVALID_ARGUMENT naming
// the header, before anything is started.
func TestBadHintsGetInvalidArgumentNamingTheHeaderAndStartNoInstance(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	for _, c := range []struct {
		name    string
		md      []string
		header  string
		mention []string // also named in the message
	}{
		{"banana", []string{"x-tether-cpu", "banana"}, "x-tether-cpu", []string{"banana"}},
		{"negative", []string{"x-tether-memory", "-1"}, "x-tether-memory", []string{"-1"}},
		{"huge exponent", []string{"x-tether-cpu", "1e400"}, "x-tether-cpu", []string{"1e400"}},
		{"empty", []string{"x-tether-memory", ""}, "x-tether-memory", []string{"empty"}},
		{"limit below request", []string{"x-tether-cpu", "2", "x-tether-cpu-limit", "1"}, "x-tether-cpu-limit", []string{"x-tether-cpu ", "2"}},
		{"cpu above the bound", []string{"x-tether-cpu", "5"}, "x-tether-cpu", []string{`"5"`, "TETHER_MAX_CPU"}},
		{"memory above the bound", []string{"x-tether-memory", "16Gi"}, "x-tether-memory", []string{"16Gi", "8Gi", "TETHER_MAX_MEMORY"}},
		{"idle timeout not a duration", []string{"x-tether-idle-timeout", "soon"}, "x-tether-idle-timeout", []string{"soon"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, _ := h.client(t)
			_, err := cl.Info(withMD(ctx, c.md...), &examplepb.InfoRequest{})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("got %v, want INVALID_ARGUMENT", err)
			}
			for _, m := range append([]string{c.header}, c.mention...) {
				if !strings.Contains(st.Message(), m) {
					t.Errorf("message %q does not name %q", st.Message(), m)
				}
			}
		})
	}
	if n := h.rt.starts(); n != 0 {
		t.Errorf("runtime was asked for %d instances for bad hints, want 0", n)
	}
	if n := len(h.mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions exist after bad hints only", n)
	}
}

// Done when 4: an instance that exits before it is ready fails the call at once,
// with its exit code and stderr, not at the activation timeout.
func TestInstanceThatExitsAtOnceFailsFastWithItsExitCodeAndStderr(t *testing.T) {
	h := startGateway(t, options{command: `sh -c 'echo boom >&2; exit 3'`, activation: time.Minute})
	c, _ := h.client(t)
	ctx := noDeadline(t, 30*time.Second)

	start := time.Now()
	_, err := c.Info(ctx, &examplepb.InfoRequest{})
	took := time.Since(start)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
	for _, m := range []string{"exit code 3", "boom"} {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not contain %q", st.Message(), m)
		}
	}
	if took > 2*time.Second {
		t.Errorf("failure took %v, want under 2s (the activation timeout is 1m)", took)
	}
	if err := h.rt.waitAll(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, pid := range h.rt.pids() {
		if alive(pid) {
			t.Errorf("failed instance pid %d is still running", pid)
		}
	}
	if n := len(h.mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions exist after a failed start", n)
	}
}

// Case B14: a cold bidi stream is forwarded as soon as the instance is ready,
// without waiting for the client to half-close.
func TestColdBidiStreamGetsItsReplyWithoutHalfClosing(t *testing.T) {
	h := startGateway(t, options{args: []string{"-startup-delay", "500ms"}})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	x, err := c.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Send(&examplepb.IncrementRequest{Delta: 7}); err != nil {
		t.Fatal(err)
	}
	v, err := x.Recv()
	if err != nil || v.GetValue() != 7 {
		t.Fatalf("first reply: %v, %v", v, err)
	}
	md, err := x.Header()
	if err != nil {
		t.Fatal(err)
	}
	cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start"))
	if err != nil || cold < 500*time.Millisecond {
		t.Errorf("x-tether-cold-start %v (%v): the stream did not wait for a cold start of at least 500ms", cold, err)
	}
	if err := x.Send(&examplepb.IncrementRequest{Delta: 3}); err != nil {
		t.Fatal(err)
	}
	if v, err := x.Recv(); err != nil || v.GetValue() != 10 {
		t.Fatalf("second reply: %v, %v", v, err)
	}
	if err := x.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
}

// Case B16: a cold start that outlasts TETHER_ACTIVATION_TIMEOUT is UNAVAILABLE
// naming the last phase; one that outlasts the client's deadline is
// DEADLINE_EXCEEDED. Either way no process is left.
func TestSlowColdStartEndsAtTheActivationTimeoutOrClientDeadlineAndLeavesNoProcess(t *testing.T) {
	const activation = 300 * time.Millisecond
	h := startGateway(t, options{args: []string{"-startup-delay", "5s"}, activation: activation})
	ctx := testCtx(t, time.Minute)

	t.Run("no client deadline", func(t *testing.T) {
		c, _ := h.client(t)
		start := time.Now()
		_, err := c.Info(noDeadline(t, 30*time.Second), &examplepb.InfoRequest{})
		took := time.Since(start)
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Fatalf("got %v, want UNAVAILABLE", err)
		}
		for _, m := range []string{"TETHER_ACTIVATION_TIMEOUT", "last phase: started"} {
			if !strings.Contains(st.Message(), m) {
				t.Errorf("message %q does not contain %q", st.Message(), m)
			}
		}
		if took < activation || took > 2*time.Second {
			t.Errorf("failed after %v, want about the activation timeout %v", took, activation)
		}
		sc := h.rt.nextStart(t, ctx)
		waitClosed(t, ctx, sc.done, "the runtime's Start to return")
		if pid := int(sc.pid.Load()); pid == 0 || alive(pid) {
			t.Errorf("instance pid %d is left running after the activation timed out", pid)
		}
	})

	t.Run("streams waiting together share one failure", func(t *testing.T) {
		c, _ := h.client(t)
		before := h.rt.starts()
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				_, err := c.Info(noDeadline(t, 30*time.Second), &examplepb.InfoRequest{})
				errs <- err
			}()
		}
		for range 3 {
			var err error
			select {
			case err = <-errs:
			case <-ctx.Done():
				t.Fatal("held calls never ended")
			}
			if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "last phase") {
				t.Errorf("got %v, want UNAVAILABLE naming the last phase", err)
			}
		}
		sc := h.rt.nextStart(t, ctx)
		waitClosed(t, ctx, sc.done, "the runtime's Start to return")
		if n := h.rt.starts() - before; n != 1 {
			t.Errorf("three streams held on one connection made %d Start calls, want 1", n)
		}
	})

	t.Run("client deadline first", func(t *testing.T) {
		c, _ := h.client(t)
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Info(dctx, &examplepb.InfoRequest{})
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
		}
		if took > 2*time.Second {
			t.Errorf("failed after %v, want about the client's 100ms deadline", took)
		}
		sc := h.rt.nextStart(t, ctx)
		waitClosed(t, ctx, sc.done, "the abandoned activation to end")
		if sc.err == nil {
			t.Errorf("the activation succeeded although the instance needs 5s and the timeout is %v", activation)
		}
		if pid := int(sc.pid.Load()); pid == 0 || alive(pid) {
			t.Errorf("instance pid %d is left running after the activation was abandoned", pid)
		}
	})
	if n := len(h.mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions exist after failed activations", n)
	}
}

// Case B17: time spent held during the cold start counts against the client's
// deadline, so the instance is given only what is left of it. The backend is
// the test binary in its "deadline" role, which reports the deadline it got.
func TestInstanceSeesTheClientDeadlineMinusTheTimeHeld(t *testing.T) {
	const delay = 600 * time.Millisecond
	h := startGateway(t, options{helper: "deadline", args: []string{"-startup-delay", delay.String()}})
	ctx := testCtx(t, time.Minute)
	cc := h.dial(t)

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	clientDeadline, _ := dctx.Deadline()
	s, err := cc.NewStream(dctx, &grpc.StreamDesc{ServerStreams: true}, "/tether.test.Deadline/Report")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	md, err := s.Header()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecvMsg(new(emptypb.Empty)); err != io.EOF {
		t.Fatalf("end of call: %v", err)
	}
	cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start"))
	if err != nil || cold < delay {
		t.Fatalf("x-tether-cold-start %v (%v): the call was not held for the %v cold start", cold, err, delay)
	}
	ns, err := strconv.ParseInt(one(t, md, "x-deadline-unix-nano"), 10, 64)
	if err != nil {
		t.Fatalf("the instance saw no deadline: %v", md)
	}
	skew := time.Unix(0, ns).Sub(clientDeadline)
	if skew > 100*time.Millisecond || skew < -100*time.Millisecond {
		t.Errorf("the instance's deadline is %v off the client's after a cold start of %v; want the time held subtracted", skew, cold)
	}
}

// Case B20: a call that gives up while held is never delivered, and the
// activation it started still pins the connection for its next call.
func TestCallThatGivesUpWhileHeldIsNeverDeliveredAndTheNextCallFindsTheInstanceWarm(t *testing.T) {
	h := startGateway(t, options{args: []string{"-startup-delay", "1s"}})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := c.Increment(dctx, &examplepb.IncrementRequest{Delta: 100})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("held call: got %v, want DEADLINE_EXCEEDED", err)
	}
	sc := h.rt.nextStart(t, ctx)
	waitClosed(t, ctx, sc.done, "the activation to finish")
	if sc.err != nil {
		t.Fatalf("the activation failed after its first caller left: %v", sc.err)
	}

	var md metadata.MD
	info, err := c.Info(ctx, &examplepb.InfoRequest{}, grpc.Header(&md))
	if err != nil {
		t.Fatal(err)
	}
	if int64(sc.pid.Load()) != info.GetPid() {
		t.Errorf("second call reached pid %d, want the instance the first call started (%d)", info.GetPid(), sc.pid.Load())
	}
	if info.GetCalls() != 1 {
		t.Errorf("instance saw %d calls, want 1: the abandoned request must never be delivered", info.GetCalls())
	}
	if len(md.Get("x-tether-session")) != 1 {
		t.Errorf("the first response that reached the client carries no session token: %v", md)
	}
	if v, err := c.Increment(ctx, &examplepb.IncrementRequest{Delta: 1}); err != nil || v.GetValue() != 1 {
		t.Errorf("Increment after the abandoned one: %v, %v; want 1", v, err)
	}
	if n := h.rt.starts(); n != 1 {
		t.Errorf("runtime started %d instances, want 1", n)
	}
}

// Case B15: a client stream whose messages were all sent during the cold start
// reaches the instance exactly once. The instance's port opens only after 500ms,
// so the readiness probe is refused until then; the gateway sends no request
// byte before the probe succeeds, and so never has a body to rewind. The deltas
// are powers of two: a message lost or delivered twice changes the sum.
func TestColdClientStreamDeliversEachMessageExactlyOnce(t *testing.T) {
	const delay = 500 * time.Millisecond
	h := startGateway(t, options{args: []string{"-startup-delay", delay.String()}})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	a, err := c.Accumulate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []int64{1, 2, 4} {
		if err := a.Send(&examplepb.IncrementRequest{Delta: d}); err != nil {
			t.Fatal(err)
		}
	}
	v, err := a.CloseAndRecv()
	if err != nil || v.GetValue() != 7 {
		t.Fatalf("Accumulate: %v, %v; want 7", v, err)
	}
	md, err := a.Header()
	if err != nil {
		t.Fatal(err)
	}
	if cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start")); err != nil || cold < delay {
		t.Errorf("x-tether-cold-start %v (%v): the messages were not held through a cold start of %v", cold, err, delay)
	}
	if v, err := c.Increment(ctx, &examplepb.IncrementRequest{Delta: 8}); err != nil || v.GetValue() != 15 {
		t.Errorf("the instance's counter afterwards: %v, %v; want 15", v, err)
	}
	if n := h.rt.starts(); n != 1 {
		t.Errorf("runtime started %d instances, want 1", n)
	}
}

// Case B19: a cold start longer than the gateway's other timeouts (here the
// handshake timeout) is cut by nothing but TETHER_ACTIVATION_TIMEOUT or the
// client's deadline, over h2c and over TLS, with and without grpc-timeout.
// Where the wait does end, it ends at min(deadline, activation timeout): see
// TestSlowColdStartEndsAtTheActivationTimeoutOrClientDeadlineAndLeavesNoProcess.
func TestColdStartOutlastsEveryOtherTimeout(t *testing.T) {
	const (
		delay     = 1500 * time.Millisecond
		handshake = 200 * time.Millisecond
	)
	cert, pool := selfSigned(t)
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) {
			o := options{args: []string{"-startup-delay", delay.String()}, handshake: handshake, activation: 30 * time.Second}
			var dial []grpc.DialOption
			if mode == "tls" {
				o.tls = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
				dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
			}
			h := startGateway(t, o)
			ctx := testCtx(t, time.Minute)
			for _, deadline := range []time.Duration{0, 20 * time.Second} {
				c, _ := h.client(t, dial...)
				cctx := noDeadline(t, time.Minute)
				if deadline > 0 {
					var cancel context.CancelFunc
					cctx, cancel = context.WithTimeout(ctx, deadline)
					defer cancel()
				}
				var md metadata.MD
				if _, err := c.Info(cctx, &examplepb.InfoRequest{}, grpc.Header(&md)); err != nil {
					t.Fatalf("deadline %v: %v", deadline, err)
				}
				if cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start")); err != nil || cold < delay {
					t.Errorf("deadline %v: x-tether-cold-start %v (%v), want at least %v", deadline, cold, err, delay)
				}
			}
		})
	}
}
