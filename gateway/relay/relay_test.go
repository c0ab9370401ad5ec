package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/gateway/relay"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const bigMsg = 64 << 20

// backend starts a real grpc-go server with the gRPC interop TestService on a
// loopback port.
func backend(t testing.TB, opts ...grpc.ServerOption) string {
	t.Helper()
	addr, _ := backendServer(t, opts...)
	return addr
}

// backendServer is backend, also returning the server so a test can stop it.
func backendServer(t testing.TB, opts ...grpc.ServerOption) (string, *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, grpc.MaxRecvMsgSize(bigMsg), grpc.MaxSendMsgSize(bigMsg))
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv
}

// forwardAll is a Handler that pins every stream to one pool.
type forwardAll struct{ p *relay.Pool }

func (f forwardAll) OpenStream(s *relay.Stream) { f.p.Forward(s) }

// gateway runs the relay on a loopback port in front of the instance at addr.
func gateway(t testing.TB, addr string, h func(*relay.Pool) relay.Handler) string {
	t.Helper()
	return gatewayCfg(t, addr, relay.Config{}, h)
}

// gatewayCfg is gateway with a relay configuration of the test's choosing.
func gatewayCfg(t testing.TB, addr string, c relay.Config, h func(*relay.Pool) relay.Handler) string {
	t.Helper()
	cfg := c.WithDefaults()
	pool := relay.NewPool(addr, cfg)
	var handler relay.Handler = forwardAll{pool}
	if h != nil {
		handler = h(pool)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*relay.Downstream
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReaderSize(nc, 16<<10+9)
			pre := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(br, pre); err != nil || string(pre) != http2.ClientPreface {
				nc.Close()
				continue
			}
			d := relay.NewDownstream(nc, br, cfg, handler)
			mu.Lock()
			conns = append(conns, d)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); d.Serve() }()
		}
	}()
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			lis.Close()
			mu.Lock()
			for _, d := range conns {
				d.Close()
			}
			mu.Unlock()
			pool.Close("test over")
			wg.Wait()
		}()
		// A relay that cannot shut down is stuck: report where, rather than
		// hang the test binary until its timeout.
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("relay did not shut down within 20s; its goroutines:\n%s", relayStacks())
		}
	})
	return lis.Addr().String()
}

// relayStacks returns the stacks of the goroutines running relay code.
func relayStacks() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "tether/gateway/relay.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func dial(t testing.TB, addr string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(bigMsg), grpc.MaxCallSendMsgSize(bigMsg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func payload(n int) *testpb.Payload {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return &testpb.Payload{Body: b}
}

func TestUnaryThroughRelay(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	for _, size := range []int{0, 1, 100, 16<<10 + 1, 1 << 20, 32 << 20} {
		req := &testpb.SimpleRequest{ResponseSize: int32(size), Payload: payload(size / 2)}
		resp, err := c.UnaryCall(ctx, req)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got := len(resp.GetPayload().GetBody()); got != size {
			t.Fatalf("size %d: got %d bytes", size, got)
		}
	}
}

func TestStatusAndTrailersOnly(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	// The interop server answers this before sending any message: a Trailers-Only
	// response on the wire (case B02).
	msg := "user 42 missing\t\r\n% ünïcode 🚀"
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: msg}})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != msg {
		t.Fatalf("got %v, want NotFound %q", err, msg)
	}
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "bidi abort"}})
	stream.CloseSend()
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "bidi abort" {
		t.Fatalf("bidi: got %v", err)
	}
}

func TestCustomMetadataBothWays(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := metadata.AppendToOutgoingContext(ctxT(t),
		"x-grpc-test-echo-initial", "initial-value",
		"x-grpc-test-echo-trailing-bin", string([]byte{0xab, 0xab, 0xab}))
	var header, trailer metadata.MD
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("x-grpc-test-echo-initial"); len(got) != 1 || got[0] != "initial-value" {
		t.Fatalf("header %v", header)
	}
	// The interop server sets this trailer with SetTrailer without announcing it
	// (case B01).
	if got := trailer.Get("x-grpc-test-echo-trailing-bin"); len(got) != 1 || got[0] != string([]byte{0xab, 0xab, 0xab}) {
		t.Fatalf("trailer %v", trailer)
	}
}

func TestStreamingKinds(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)

	sizes := []int32{31415, 9, 2653, 58979}
	ss, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params(sizes)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range sizes {
		r, err := ss.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != int(sizes[i]) {
			t.Fatalf("server stream %d: %v", i, err)
		}
	}
	if _, err := ss.Recv(); err != io.EOF {
		t.Fatalf("server stream end: %v", err)
	}

	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range []int{27182, 8, 1828, 45904} {
		total += n
		if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: payload(n)}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cs.CloseAndRecv()
	if err != nil || int(res.GetAggregatedPayloadSize()) != total {
		t.Fatalf("client stream: %v %v", res, err)
	}

	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{n}), Payload: payload(int(n))}); err != nil {
			t.Fatal(err)
		}
		r, err := bs.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != int(n) {
			t.Fatalf("ping-pong %d: %v", i, err)
		}
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("ping-pong end: %v", err)
	}
}

func params(sizes []int32) []*testpb.ResponseParameters {
	var p []*testpb.ResponseParameters
	for _, n := range sizes {
		p = append(p, &testpb.ResponseParameters{Size: n})
	}
	return p
}

func TestCancelAndDeadline(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx, cancel := context.WithCancel(ctxT(t))
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{10})})
	if _, err := bs.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := bs.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}

	dctx, dcancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer dcancel()
	sleepy, err := c.FullDuplexCall(dctx)
	if err == nil {
		// The server waits 100ms before answering: the client's deadline passes first.
		sleepy.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 1e5}}})
		_, err = sleepy.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}
	// The connection is still good.
	if _, err := c.EmptyCall(ctxT(t), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
}

// TestLargeBidiBothWays sends 200 × 256 KiB each way at once, which needs flow
// control to be returned as bytes move, on every hop (case B10).
func TestLargeBidiBothWays(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 200, 256 << 10
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{size}), Payload: payload(size)}); err != nil {
				errc <- err
				return
			}
		}
		errc <- bs.CloseSend()
	}()
	want := payload(size).Body
	for i := 0; i < n; i++ {
		r, err := bs.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if len(r.GetPayload().GetBody()) != size {
			t.Fatalf("recv %d: %d bytes", i, len(r.GetPayload().GetBody()))
		}
		_ = want
	}
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestLargeRequestBytesIntact(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := payload(16<<20 + 3)
	if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: p}); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CloseAndRecv()
	if err != nil || int(res.GetAggregatedPayloadSize()) != len(p.Body) {
		t.Fatalf("%v %v", res, err)
	}
	// Byte-exact echo of a large body through both directions.
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1, Payload: p})
	if err != nil || len(resp.GetPayload().GetBody()) != 1 {
		t.Fatal(err)
	}
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The interop server fills responses with zeros, so check bytes on the way in
	// by size and on the way out by content of a compressible known payload.
	bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{8 << 20})})
	r, err := bs.Recv()
	if err != nil || !bytes.Equal(r.GetPayload().GetBody(), make([]byte, 8<<20)) {
		t.Fatalf("8 MiB response: %v", err)
	}
	bs.CloseSend()
}

func TestManyConcurrentCalls(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(i * 100), Payload: payload(i * 50)})
			if err == nil && len(resp.GetPayload().GetBody()) != i*100 {
				err = errors.New("short response")
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// deadlineEcho is a backend method that answers with the deadline it was given,
// in its header, then waits for its context to end.
func deadlineEcho(srv any, stream grpc.ServerStream) error {
	d, ok := stream.Context().Deadline()
	left := "none"
	if ok {
		left = time.Until(d).Round(10 * time.Millisecond).String()
	}
	stream.SendHeader(metadata.Pairs("x-deadline", left))
	<-stream.Context().Done()
	return status.FromContextError(stream.Context().Err()).Err()
}

// TestGRPCTimeoutForwarded checks the instance sees the client's deadline and
// ends the call itself when it passes.
func TestGRPCTimeoutForwarded(t *testing.T) {
	addr := backend(t, grpc.UnknownServiceHandler(deadlineEcho))
	cc, err := grpc.NewClient(gateway(t, addr, nil), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/probe.Deadline/Wait")
	if err != nil {
		t.Fatal(err)
	}
	s.CloseSend()
	h, err := s.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("x-deadline"); len(got) != 1 || got[0] == "none" {
		t.Fatalf("instance saw deadline %v", got)
	}
	if err := s.RecvMsg(new(testpb.Empty)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
}
