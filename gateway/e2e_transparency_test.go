package gateway_test

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// Done when 2, case B10 (cold variant): a large request sent while the instance
// is still cold is held under flow control and arrives byte for byte.
func TestLargeRequestSentWhileColdArrivesByteIdentical(t *testing.T) {
	h := startGateway(t, options{args: []string{"-startup-delay", "300ms"}})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))

	// The example server keeps grpc-go's default 4 MiB limit on what it receives,
	// so the whole message stays just under 4 MiB: four times the gateway's
	// stream window, which it must hold back by flow control, not by buffering.
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for range 4<<20 - 1024 {
		b.WriteByte(byte('!' + rng.IntN(94)))
	}
	value := b.String()

	var md metadata.MD
	if _, err := c.Put(ctx, &examplepb.PutRequest{Key: "big", Value: value}, grpc.Header(&md)); err != nil {
		t.Fatalf("cold Put of %d bytes: %v", len(value), err)
	}
	if cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start")); err != nil || cold < 300*time.Millisecond {
		t.Errorf("x-tether-cold-start %v (%v): the Put did not wait for the 300ms cold start", cold, err)
	}
	got, err := c.Get(ctx, &examplepb.GetRequest{Key: "big"})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetFound() || got.GetValue() != value {
		i := 0
		for i < min(len(value), len(got.GetValue())) && value[i] == got.GetValue()[i] {
			i++
		}
		t.Fatalf("Get returned %d bytes (found=%v), first difference at byte %d; want the %d bytes put",
			len(got.GetValue()), got.GetFound(), i, len(value))
	}
}

// Done when 2: server-, client- and bidi-streaming calls pass through the gateway
// to the example server unchanged.
func TestStreamingCallsOfEveryKindPassThrough(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	wctx, closeWatch := context.WithCancel(ctx)
	defer closeWatch()
	w, err := c.Watch(wctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvUntil := func(want int64) {
		t.Helper()
		for {
			v, err := w.Recv()
			if err != nil {
				t.Fatalf("Watch waiting for %d: %v", want, err)
			}
			if v.GetValue() == want {
				return
			}
		}
	}
	recvUntil(0)

	// Client streaming: every delta is applied; the reply comes after half-close.
	a, err := c.Accumulate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []int64{2, 3, 4} {
		if err := a.Send(&examplepb.IncrementRequest{Delta: d}); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := a.CloseAndRecv(); err != nil || v.GetValue() != 9 {
		t.Fatalf("Accumulate: %v, %v; want 9", v, err)
	}
	recvUntil(9)

	// Bidi: each message is answered before the next is sent.
	x, err := c.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range []int64{1, -5, 10} {
		if err := x.Send(&examplepb.IncrementRequest{Delta: d}); err != nil {
			t.Fatal(err)
		}
		v, err := x.Recv()
		want := []int64{10, 5, 15}[i]
		if err != nil || v.GetValue() != want {
			t.Fatalf("Exchange reply %d: %v, %v; want %d", i, v, err, want)
		}
	}
	if err := x.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Recv(); err != io.EOF {
		t.Fatalf("Exchange end: %v", err)
	}
	recvUntil(15)

	closeWatch()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Watch after cancel: %v", err)
	}
	// The connection and instance are fine after a cancelled stream.
	if v, err := c.Increment(ctx, &examplepb.IncrementRequest{}); err != nil || v.GetValue() != 16 {
		t.Fatalf("Increment after cancel: %v, %v", v, err)
	}
}

// Done when 2: statuses the instance returns, with their messages, reach the
// client as the instance sent them, including Trailers-Only replies.
func TestStatusCodesFromTheInstancePassThrough(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	cc := h.dial(t)
	c := examplepb.NewSessionClient(cc)
	if _, err := c.Info(ctx, &examplepb.InfoRequest{}); err != nil {
		t.Fatal(err)
	}

	err := cc.Invoke(ctx, "/tether.example.v1.Session/Nope", &examplepb.InfoRequest{}, new(examplepb.InfoResponse))
	if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "Nope") {
		t.Errorf("unknown method: got %v, want UNIMPLEMENTED naming the method", err)
	}
	hc := healthpb.NewHealthClient(cc)
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v, %v", r, err)
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "unknown service") {
		t.Errorf("health check of an unknown service: got %v, want NOT_FOUND \"unknown service\"", err)
	}

	// An expired deadline ends a stream that has already answered.
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	w, err := c.Watch(dctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Watch past its deadline: got %v, want DEADLINE_EXCEEDED", err)
	}

	// On the wire: the instance's Trailers-Only reply stays Trailers-Only (case B02).
	r := dialRaw(t, h.addr)
	if st := r.call(1, grpcHeaders("/tether.example.v1.Session/Info"), &examplepb.InfoRequest{}).wait(t, ctx); !strings.HasPrefix(mustStatus(st), "0") {
		t.Fatalf("raw Info: %v", st)
	}
	st := r.call(3, grpcHeaders("/tether.example.v1.Session/Nope"), &examplepb.InfoRequest{}).wait(t, ctx)
	if !st.trailersOnly() {
		t.Errorf("instance's UNIMPLEMENTED reply is not Trailers-Only through the gateway: %v", st)
	}
	if code, _ := st.status(); code != "12" {
		t.Errorf("raw unknown method: grpc-status %q, want 12: %v", code, st)
	}
}

func mustStatus(s *rawStream) string {
	code, msg := s.status()
	return code + " " + msg
}

// The gateway consumes every x-tether-* request header, on every stream of a
// connection, and only it sets x-tether-* response headers and trailers.
func TestTetherHeadersNeverReachTheInstanceAndOnlyTheGatewaySetsThem(t *testing.T) {
	h := startGateway(t, options{helper: "deadline"})
	ctx := testCtx(t, time.Minute)

	call := func(t *testing.T, cc *grpc.ClientConn, ctx context.Context) (header, trailer metadata.MD) {
		t.Helper()
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/tether.test.Headers/Report")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if header, err = s.Header(); err != nil {
			t.Fatal(err)
		}
		if err := s.RecvMsg(new(examplepb.InfoRequest)); err != io.EOF {
			t.Fatalf("end of call: %v", err)
		}
		return header, s.Trailer()
	}
	checkSeen := func(t *testing.T, md metadata.MD) {
		t.Helper()
		seen := one(t, md, "x-seen-headers")
		if strings.Contains(seen, "x-tether-") {
			t.Errorf("the instance received gateway headers: %s", seen)
		}
		if !strings.Contains(seen, "x-app") {
			t.Errorf("the instance did not receive the application's own header x-app: %s", seen)
		}
	}

	cc := h.dial(t)
	hdr, trl := call(t, cc, withMD(ctx, "x-tether-cpu", "1", "x-tether-memory", "64Mi",
		"x-tether-idle-timeout", "30m", "x-app", "kept"))
	checkSeen(t, hdr)
	if got := one(t, hdr, "x-tether-instance"); got == "set-by-the-instance" {
		t.Errorf("the instance's x-tether-instance reached the client")
	}
	token := one(t, hdr, "x-tether-session")
	if token == "set-by-the-instance" || len(trl.Get("x-tether-session")) != 0 {
		t.Errorf("the instance's x-tether-session reached the client: header %q, trailer %q", token, trl.Get("x-tether-session"))
	}

	// A later stream on the pinned connection, with hints again.
	hdr, _ = call(t, cc, withMD(ctx, "x-tether-cpu", "2", "x-app", "kept"))
	checkSeen(t, hdr)
	if v := hdr.Get("x-tether-instance"); len(v) != 0 {
		t.Errorf("a warm call carries x-tether-instance %q, which only the gateway sets on a cold start", v)
	}

	// A re-attached connection.
	hdr, trl = call(t, h.dial(t), withMD(ctx, "x-tether-session", token, "x-app", "kept"))
	checkSeen(t, hdr)
	for _, md := range []metadata.MD{hdr, trl} {
		for k := range md {
			if strings.HasPrefix(k, "x-tether-") {
				t.Errorf("the instance's %s reached a re-attached client: %q", k, md.Get(k))
			}
		}
	}
	if n := h.rt.starts(); n != 1 {
		t.Errorf("runtime started %d instances, want 1", n)
	}
}
