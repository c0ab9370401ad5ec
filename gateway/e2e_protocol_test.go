package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// checkTrailersOnly checks that s is a gateway-made gRPC error as gRPC clients
// need it: one HEADERS frame with END_STREAM, :status 200, content-type
// application/grpc, the status code and a message.
func checkTrailersOnly(t *testing.T, s *rawStream, wantCode string) {
	t.Helper()
	if !s.trailersOnly() {
		t.Errorf("not a Trailers-Only response: %v", s)
		return
	}
	h := s.headers[0]
	want := map[string]string{":status": "200", "content-type": "application/grpc", "grpc-status": wantCode}
	for name, v := range want {
		if got, _ := field(h, name); got != v {
			t.Errorf("%s = %q, want %q: %v", name, got, v, s)
		}
	}
	if msg, _ := field(h, "grpc-message"); msg == "" {
		t.Errorf("no grpc-message: %v", s)
	}
}

// Case B11: every error the gateway makes itself is a valid Trailers-Only gRPC
// response with HTTP status 200 and content-type application/grpc.
func TestGatewayMadeErrorsAreTrailersOnlyGRPCResponses(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	const info = "/tether.example.v1.Session/Info"

	t.Run("bad hint and unknown token", func(t *testing.T) {
		h := startGateway(t, options{})
		r := dialRaw(t, h.addr)
		checkTrailersOnly(t, r.call(1, grpcHeaders(info, "x-tether-cpu", "banana"), &examplepb.InfoRequest{}).wait(t, ctx), "3")
		checkTrailersOnly(t, r.call(3, grpcHeaders(info, "x-tether-session", "aaaaaaaaaaaaaaaa.nope"), &examplepb.InfoRequest{}).wait(t, ctx), "5")
		if n := h.rt.starts(); n != 0 {
			t.Errorf("runtime was asked for %d instances", n)
		}
	})
	t.Run("start failure", func(t *testing.T) {
		h := startGateway(t, options{command: `sh -c 'echo boom >&2; exit 3'`})
		r := dialRaw(t, h.addr)
		checkTrailersOnly(t, r.call(1, grpcHeaders(info), &examplepb.InfoRequest{}).wait(t, ctx), "14")
	})
	t.Run("activation timeout and deadline while held", func(t *testing.T) {
		h := startGateway(t, options{args: []string{"-startup-delay", "5s"}, activation: 300 * time.Millisecond})
		r := dialRaw(t, h.addr)
		held := r.call(1, grpcHeaders(info), &examplepb.InfoRequest{})
		hurried := r.call(3, grpcHeaders(info, "grpc-timeout", "100m"), &examplepb.InfoRequest{})
		checkTrailersOnly(t, hurried.wait(t, ctx), "4")
		checkTrailersOnly(t, held.wait(t, ctx), "14")
	})
}

// Case B12: an HTTP/1.1 request is refused at once with 505, and starts nothing.
func TestHTTP1RequestGets505QuicklyAndStartsNoInstance(t *testing.T) {
	h := startGateway(t, options{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ctx := testCtx(t, 10*time.Second)

	start := time.Now()
	resp := post(t, ctx, tr, "http://"+h.addr+"/tether.example.v1.Session/Info")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("HTTP/1.1 answer took %v", took)
	}
	if resp.StatusCode != http.StatusHTTPVersionNotSupported || resp.ProtoMajor != 1 {
		t.Errorf("got %s %s, want HTTP/1.1 505", resp.Proto, resp.Status)
	}
	if n := h.rt.starts(); n != 0 {
		t.Errorf("an HTTP/1.1 request started %d instances", n)
	}
}

// post sends a gRPC-looking HTTP/1.1 request with net/http and returns the
// response, its body read.
func post(t *testing.T, ctx context.Context, tr *http.Transport, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("X-Tether-Cpu", "1")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("HTTP/1.1 request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// Case B12: TLS with ALPN h2 works end to end; a TLS client that offers only
// http/1.1 gets a quick 505, never a hang.
func TestTLSWithALPNh2WorksAndAnHTTP1OnlyTLSClientGets505(t *testing.T) {
	cert, pool := selfSigned(t)
	h := startGateway(t, options{tls: &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}})
	ctx := testCtx(t, time.Minute)

	c, _ := h.client(t, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	var md metadata.MD
	v, err := c.Increment(withMD(ctx, "x-tether-cpu", "750m"), &examplepb.IncrementRequest{Delta: 2}, grpc.Header(&md))
	if err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	if v.GetValue() != 2 || len(md.Get("x-tether-session")) != 1 {
		t.Errorf("gRPC over TLS: value %d, headers %v", v.GetValue(), md)
	}
	info, err := c.Info(ctx, &examplepb.InfoRequest{})
	if err != nil || info.GetCpuRequest() != "750m" {
		t.Errorf("Info over TLS: %v, %v", info, err)
	}

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}}
	defer tr.CloseIdleConnections()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	resp := post(t, hctx, tr, "https://"+h.addr+"/tether.example.v1.Session/Info")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("HTTP/1.1 over TLS answer took %v", took)
	}
	if resp.StatusCode != http.StatusHTTPVersionNotSupported || resp.ProtoMajor != 1 {
		t.Errorf("got %s %s, want HTTP/1.1 505", resp.Proto, resp.Status)
	}
	if resp.TLS == nil || resp.TLS.NegotiatedProtocol == "h2" {
		t.Errorf("the HTTP/1.1-only client negotiated %+v", resp.TLS)
	}
	if n := h.rt.starts(); n != 1 {
		t.Errorf("runtime started %d instances, want 1 (the gRPC client's)", n)
	}
}

// Graceful drain: Shutdown refuses new connections at once and lets open streams
// run until their clients end them.
func TestShutdownRefusesNewConnectionsAndLetsOpenStreamsFinish(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	c, cc := h.client(t)

	wctx, closeWatch := context.WithCancel(ctx)
	defer closeWatch()
	w, err := c.Watch(wctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	x, err := c.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Send(&examplepb.IncrementRequest{Delta: 1}); err != nil {
		t.Fatal(err)
	}
	if v, err := x.Recv(); err != nil || v.GetValue() != 1 {
		t.Fatalf("Exchange: %v, %v", v, err)
	}

	shutdown := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shutdown <- h.gw.Shutdown(sctx)
	}()
	// The client hears GOAWAY; by then the listener is closed.
	if !cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("client connection never left READY: no GOAWAY")
	}
	nc, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", h.addr)
	if err == nil {
		nc.Close()
		t.Error("a new connection was accepted while draining")
	}
	c2 := examplepb.NewSessionClient(h.dial(t))
	if _, err := c2.Info(ctx, &examplepb.InfoRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("new call while draining: got %v, want UNAVAILABLE", err)
	}

	// Streams already open still move both ways.
	if err := x.Send(&examplepb.IncrementRequest{Delta: 2}); err != nil {
		t.Fatal(err)
	}
	if v, err := x.Recv(); err != nil || v.GetValue() != 3 {
		t.Fatalf("Exchange while draining: %v, %v", v, err)
	}
	for {
		v, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch while draining: %v", err)
		}
		if v.GetValue() == 3 {
			break
		}
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while streams were open", err)
	default:
	}
	if err := x.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Recv(); err != io.EOF {
		t.Fatalf("Exchange end while draining: %v", err)
	}
	closeWatch()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Watch end: %v", err)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown: %v, want nil once every stream finished", err)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return after the last stream finished")
	}
}

// Graceful drain: a stream still open when the grace period ends gets
// UNAVAILABLE "gateway is shutting down".
func TestShutdownEndsStreamsStillOpenAfterTheGraceWithUnavailable(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	w, err := c.Watch(ctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := h.shutdown(200 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want context.DeadlineExceeded: a stream outlived the grace period", err)
	}
	_, err = w.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "gateway is shutting down") {
		t.Errorf("open stream after the grace: got %v, want UNAVAILABLE \"gateway is shutting down\"", err)
	}
}

// A request that is not gRPC (a browser, a scanner, curl --http2-prior-knowledge)
// must not cost an instance for the idle timeout: it gets a plain 400 at once,
// and nothing starts.
func TestNonGRPCRequestStartsNothing(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, 30*time.Second)
	r := dialRaw(t, h.addr)
	s := r.call(1, []hpack.HeaderField{
		{Name: ":method", Value: "GET"},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "tether.test"},
		{Name: ":path", Value: "/"},
	}, nil).wait(t, ctx)
	status, _ := field(s.headers[0], ":status")
	if status != "400" || !strings.Contains(string(s.data), "only for a gRPC request") {
		t.Fatalf("got %s", s)
	}
	if n := h.rt.starts(); n != 0 {
		t.Errorf("a non-gRPC request started %d instances", n)
	}
}
