package relay_test

// One test per case of the cases list ("Real failures of gateways like ours")
// that touches the relay. Each test says which failure it pins.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tetherhq/tether/gateway/relay"
)

// dialCC is a plaintext (h2c prior knowledge) client of the relay at addr.
func dialCC(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(bigMsg), grpc.MaxCallSendMsgSize(bigMsg)),
	}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// tightWindows are a client's smallest flow-control windows; a static window also
// turns off BDP estimation, so the client sends no PINGs of its own.
func tightWindows() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535)}
}

var (
	bidiDesc   = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	serverDesc = &grpc.StreamDesc{ServerStreams: true}
)

// seeded is n bytes that differ with seed, so a message delivered twice, late or
// out of order is caught.
func seeded(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed*7 + i>>9)
	}
	if n >= 4 {
		b[0], b[1], b[2], b[3] = byte(seed>>24), byte(seed>>16), byte(seed>>8), byte(seed)
	}
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---------------------------------------------------------------------------
// B01 — trailers the backend did not announce

// TestB01UnannouncedTrailersForwarded pins trailers dropped because the instance
// did not list them in advance: grpc-go adds them with SetTrailer, and a relay
// that forwarded only announced trailers would turn OK into INTERNAL ("server
// closed the stream without sending trailers") and lose x-cost.
func TestB01UnannouncedTrailersForwarded(t *testing.T) {
	binCost := string([]byte{0, 1, 0xfe, 0xff})
	h := func(_ any, ss grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(ss)
		req := new(testpb.SimpleRequest)
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		switch m {
		case "/echo.Echo/Say":
			ss.SetTrailer(metadata.Pairs("x-cost", "5"))
			return ss.SendMsg(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("said")}})
		case "/echo.Echo/Stream":
			for i := range 3 {
				if err := ss.SendMsg(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: seeded(i, 1000)}}); err != nil {
					return err
				}
			}
			// Set only after the messages: nothing about it was in the headers.
			ss.SetTrailer(metadata.Pairs("x-cost", "5", "x-cost-bin", binCost))
			return nil
		}
		return status.Error(codes.Unimplemented, m)
	}
	cc := dialCC(t, gateway(t, backend(t, grpc.UnknownServiceHandler(h)), nil))
	ctx := ctxT(t)

	t.Run("unary", func(t *testing.T) {
		var header, trailer metadata.MD
		resp := new(testpb.SimpleResponse)
		if err := cc.Invoke(ctx, "/echo.Echo/Say", &testpb.SimpleRequest{}, resp, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
			t.Fatalf("got %v, want OK", err)
		}
		if string(resp.GetPayload().GetBody()) != "said" {
			t.Fatalf("message %q", resp.GetPayload().GetBody())
		}
		if got := trailer.Get("x-cost"); len(got) != 1 || got[0] != "5" {
			t.Fatalf("trailer x-cost = %v, want [5] (trailers %v, headers %v)", got, trailer, header)
		}
		if len(header.Get("x-cost")) != 0 {
			t.Fatalf("x-cost moved into the headers: %v", header)
		}
	})

	t.Run("server-stream trailer after 3 messages", func(t *testing.T) {
		s, err := cc.NewStream(ctx, serverDesc, "/echo.Echo/Stream")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(&testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		s.CloseSend()
		for i := range 3 {
			m := new(testpb.SimpleResponse)
			if err := s.RecvMsg(m); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if !bytes.Equal(m.GetPayload().GetBody(), seeded(i, 1000)) {
				t.Fatalf("message %d corrupted", i)
			}
		}
		if err := s.RecvMsg(new(testpb.SimpleResponse)); err != io.EOF {
			t.Fatalf("end: got %v, want io.EOF (status OK)", err)
		}
		tr := s.Trailer()
		if got := tr.Get("x-cost"); len(got) != 1 || got[0] != "5" {
			t.Fatalf("trailer x-cost = %v in %v", got, tr)
		}
		if got := tr.Get("x-cost-bin"); len(got) != 1 || got[0] != binCost {
			t.Fatalf("trailer x-cost-bin = %q in %v", got, tr)
		}
	})
}

// ---------------------------------------------------------------------------
// B02 — errors sent as Trailers-Only

// b02Status is the error the instance returns, with details, so that
// grpc-status-details-bin is on the wire.
func b02Status(t *testing.T) *status.Status {
	st, err := status.New(codes.NotFound, "user 42 missing").WithDetails(
		&errdetails.ErrorInfo{Reason: "USER_MISSING", Domain: "users.tether.test", Metadata: map[string]string{"id": "42"}},
		&errdetails.RetryInfo{},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestB02ErrorStatusKept pins an error answered as Trailers-Only (grpc-status in
// the first and only HEADERS) being handled as ordinary headers with an empty
// body, so the client sees UNKNOWN or "no grpc-status"; and, for errors after
// messages, the status details being lost on the way.
func TestB02ErrorStatusKept(t *testing.T) {
	want := b02Status(t)
	h := func(_ any, ss grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(ss)
		if err := ss.RecvMsg(new(testpb.SimpleRequest)); err != nil {
			return err
		}
		switch m {
		case "/svc.Users/Get", "/svc.Users/ListFailNow":
			return want.Err()
		case "/svc.Users/ListFailAfter2":
			for i := range 2 {
				if err := ss.SendMsg(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: seeded(i, 100)}}); err != nil {
					return err
				}
			}
			return want.Err()
		}
		return status.Error(codes.Unimplemented, m)
	}
	inst := backend(t, grpc.UnknownServiceHandler(h))
	gw := gateway(t, inst, nil)
	cc := dialCC(t, gw)
	ctx := ctxT(t)

	check := func(t *testing.T, err error) {
		t.Helper()
		got := status.Convert(err)
		if got.Code() != codes.NotFound || got.Message() != "user 42 missing" {
			t.Fatalf("got %v, want NotFound %q", err, "user 42 missing")
		}
		if !proto.Equal(got.Proto(), want.Proto()) {
			t.Fatalf("status details lost: got %v, want %v", got.Proto(), want.Proto())
		}
	}

	t.Run("unary", func(t *testing.T) {
		err := cc.Invoke(ctx, "/svc.Users/Get", &testpb.SimpleRequest{}, new(testpb.SimpleResponse))
		check(t, err)
	})
	for _, tc := range []struct {
		method string
		msgs   int
	}{{"/svc.Users/ListFailNow", 0}, {"/svc.Users/ListFailAfter2", 2}} {
		t.Run(tc.method, func(t *testing.T) {
			s, err := cc.NewStream(ctx, serverDesc, tc.method)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(&testpb.SimpleRequest{}); err != nil {
				t.Fatal(err)
			}
			s.CloseSend()
			for i := range tc.msgs {
				m := new(testpb.SimpleResponse)
				if err := s.RecvMsg(m); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(m.GetPayload().GetBody(), seeded(i, 100)) {
					t.Fatalf("message %d corrupted", i)
				}
			}
			check(t, s.RecvMsg(new(testpb.SimpleResponse)))
		})
	}

	// On the wire the answer stays one HEADERS frame with END_STREAM that
	// carries the whole status.
	t.Run("wire is Trailers-Only", func(t *testing.T) {
		c := dialRaw(t, gw)
		ctx := ctxFor(t, 10*time.Second)
		c.write(func(w *http2.Framer) error {
			if err := c.writeHeadersLocked(1, false, grpcRequest("/svc.Users/Get", field("te", "trailers"))); err != nil {
				return err
			}
			return c.dataLocked(1, grpcMsg(t, &testpb.SimpleRequest{}), true)
		})
		r, err := c.response(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.trailersOnly || len(r.body) != 0 {
			t.Fatalf("want Trailers-Only, got headers %v, %d body bytes, trailers %v", r.headers, len(r.body), r.trailers)
		}
		if value(r.headers, ":status") != "200" || value(r.headers, "content-type") != "application/grpc" ||
			r.status() != "5" || value(r.headers, "grpc-message") != "user 42 missing" {
			t.Fatalf("Trailers-Only block %v", r.headers)
		}
		raw := value(r.headers, "grpc-status-details-bin")
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(raw, "="))
		if err != nil {
			t.Fatalf("grpc-status-details-bin %q: %v", raw, err)
		}
		var sp spb.Status
		if err := proto.Unmarshal(b, &sp); err != nil || !proto.Equal(&sp, want.Proto()) {
			t.Fatalf("grpc-status-details-bin = %v (%v), want %v", &sp, err, want.Proto())
		}
	})
}

// ---------------------------------------------------------------------------
// B03 — te: trailers and hop-by-hop fields

// strictInstance answers a request OK only if it carries exactly one te field,
// "trailers", as C-core based servers require; otherwise INTERNAL "missing te".
// It records every request's header list.
func strictInstance(t *testing.T, extra ...hpack.HeaderField) (*rawInstance, func() []instRequest) {
	var mu sync.Mutex
	var seen []instRequest
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		serveGRPC(ctx, c, nil, func(r instRequest) {
			mu.Lock()
			seen = append(seen, r)
			mu.Unlock()
			if te := values(r.fields, "te"); len(te) != 1 || te[0] != "trailers" {
				answerStatus(c, r.id, int(codes.Internal), fmt.Sprintf("missing te: trailers (got %q)", te))
				return
			}
			answerOK(c, r.id, grpcMsg(t, &testpb.SimpleResponse{}), extra...)
		})
	})
	return ri, func() []instRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]instRequest(nil), seen...)
	}
}

// TestB03TETrailersReachesInstance pins te being stripped as hop-by-hop (or
// forwarded with values HTTP/2 forbids): a strict instance then rejects every
// call. Whatever te the client sent, the instance must see exactly "te: trailers".
func TestB03TETrailersReachesInstance(t *testing.T) {
	ri, seen := strictInstance(t)
	gw := gateway(t, ri.addr, nil)
	ctx := ctxFor(t, 20*time.Second)

	c := dialRaw(t, gw)
	id := uint32(1)
	for _, tc := range []struct {
		name string
		te   []hpack.HeaderField
	}{
		{"te-trailers", []hpack.HeaderField{field("te", "trailers")}},
		{"te-gzip-trailers", []hpack.HeaderField{field("te", "gzip, trailers")}},
		{"te-trailers-q", []hpack.HeaderField{field("te", "deflate;q=0.5, Trailers")}},
		{"te-gzip-only", []hpack.HeaderField{field("te", "gzip")}},
		{"te-twice", []hpack.HeaderField{field("te", "trailers"), field("te", "trailers")}},
		{"no-te", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/b03.Strict/" + tc.name
			err := c.write(func(w *http2.Framer) error {
				if err := c.writeHeadersLocked(id, false, grpcRequest(path, tc.te...)); err != nil {
					return err
				}
				return c.dataLocked(id, grpcMsg(t, &testpb.SimpleRequest{}), true)
			})
			if err != nil {
				t.Fatal(err)
			}
			r, err := c.response(ctx, id)
			id += 2
			if err != nil {
				t.Fatal(err)
			}
			if r.rst != nil || r.status() != "0" {
				t.Fatalf("got status %q (rst %v), headers %v, trailers %v; want OK", r.status(), r.rst, r.headers, r.trailers)
			}
			var got []string
			for _, s := range seen() {
				if value(s.fields, ":path") == path {
					got = values(s.fields, "te")
				}
			}
			if len(got) != 1 || got[0] != "trailers" {
				t.Fatalf("instance saw te %q, want exactly [trailers]", got)
			}
		})
	}

	t.Run("grpc-go client", func(t *testing.T) {
		cc := dialCC(t, gw)
		if err := cc.Invoke(ctx, "/b03.Strict/GrpcGo", &testpb.SimpleRequest{}, new(testpb.SimpleResponse)); err != nil {
			t.Fatalf("got %v, want OK", err)
		}
	})
}

// TestB03HopByHopRequestRejected pins connection-specific fields crossing the
// gateway: RFC 9113 8.2.2 makes such a request malformed, so it must be refused
// with a clear error (gRPC INVALID_ARGUMENT as Trailers-Only, or HTTP 400) and
// never reach the instance. Proxy-* fields are the gateway's own business and must
// not reach the instance either.
func TestB03HopByHopRequestRejected(t *testing.T) {
	ri, seen := strictInstance(t)
	gw := gateway(t, ri.addr, nil)
	ctx := ctxFor(t, 20*time.Second)
	c := dialRaw(t, gw)
	id := uint32(1)
	send := func(t *testing.T, fields []hpack.HeaderField, body []byte) rawResponse {
		t.Helper()
		err := c.write(func(w *http2.Framer) error {
			if err := c.writeHeadersLocked(id, body == nil, fields); err != nil {
				return err
			}
			if body == nil {
				return nil
			}
			return c.dataLocked(id, body, true)
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.response(ctx, id)
		id += 2
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	for _, hop := range []hpack.HeaderField{
		field("connection", "keep-alive"),
		field("keep-alive", "timeout=5"),
		field("upgrade", "h2c"),
		field("transfer-encoding", "chunked"),
		field("proxy-connection", "keep-alive"),
	} {
		t.Run("grpc "+hop.Name, func(t *testing.T) {
			r := send(t, grpcRequest("/b03.Rejected/"+hop.Name, field("te", "trailers"), hop), grpcMsg(t, &testpb.SimpleRequest{}))
			if r.rst != nil || !r.trailersOnly {
				t.Fatalf("want a Trailers-Only answer, got rst %v headers %v", r.rst, r.headers)
			}
			if value(r.headers, ":status") != "200" || value(r.headers, "content-type") != "application/grpc" ||
				r.status() != fmt.Sprint(int(codes.InvalidArgument)) || !strings.Contains(value(r.headers, "grpc-message"), hop.Name) {
				t.Fatalf("want INVALID_ARGUMENT naming %s, got %v", hop.Name, r.headers)
			}
		})
		t.Run("http "+hop.Name, func(t *testing.T) {
			r := send(t, []hpack.HeaderField{
				field(":method", "POST"), field(":scheme", "http"), field(":path", "/b03/rejected/"+hop.Name),
				field(":authority", "tether.test"), field("content-type", "application/json"), hop,
			}, []byte(`{}`))
			if r.rst != nil || value(r.headers, ":status") != "400" || !strings.Contains(string(r.body), hop.Name) {
				t.Fatalf("want HTTP 400 naming %s, got rst %v headers %v body %q", hop.Name, r.rst, r.headers, r.body)
			}
			if ct := value(r.headers, "content-type"); strings.Contains(ct, "html") {
				t.Fatalf("content-type %q", ct)
			}
		})
	}

	// Proxy-Authorization is legal HTTP/2 but addressed to the gateway; the call
	// goes through without it.
	t.Run("proxy-authorization not forwarded", func(t *testing.T) {
		r := send(t, grpcRequest("/b03.Proxy/Auth", field("te", "trailers"), field("proxy-authorization", "Basic dXNlcjpwYXNz")),
			grpcMsg(t, &testpb.SimpleRequest{}))
		for _, s := range seen() {
			if value(s.fields, ":path") == "/b03.Proxy/Auth" && hasField(s.fields, "proxy-authorization") {
				t.Fatalf("instance received proxy-authorization: %v", s.fields)
			}
		}
		if r.rst != nil || r.status() != "0" {
			t.Fatalf("got rst %v status %q; a legal request must go through", r.rst, r.status())
		}
	})

	// A good request after the rejected ones: by the time it is answered, the
	// instance has seen every request the relay sent it, in order.
	r := send(t, grpcRequest("/b03.Good/After", field("te", "trailers")), grpcMsg(t, &testpb.SimpleRequest{}))
	if r.status() != "0" {
		t.Fatalf("good request: status %q, headers %v trailers %v", r.status(), r.headers, r.trailers)
	}
	for _, s := range seen() {
		p := value(s.fields, ":path")
		if strings.HasPrefix(p, "/b03.Rejected/") || strings.HasPrefix(p, "/b03/rejected/") {
			t.Errorf("malformed request reached the instance: %v", s.fields)
		}
		for _, f := range s.fields {
			if f.Name == "connection" || f.Name == "keep-alive" || f.Name == "upgrade" ||
				f.Name == "transfer-encoding" || strings.HasPrefix(f.Name, "proxy-") {
				t.Errorf("instance received hop-by-hop field %s on %s", f.Name, p)
			}
		}
	}
}

// TestB03HopByHopResponseDropped pins hop-by-hop fields an instance sets in its
// response headers or trailers reaching the client, where HTTP/2 makes them a
// malformed response.
func TestB03HopByHopResponseDropped(t *testing.T) {
	hops := []hpack.HeaderField{
		field("connection", "close"),
		field("keep-alive", "timeout=5"),
		field("proxy-connection", "keep-alive"),
		field("transfer-encoding", "chunked"),
		field("upgrade", "h2c"),
		field("proxy-authenticate", "Basic realm=pod"),
		field("x-kept", "yes"),
	}
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		serveGRPC(ctx, c, nil, func(r instRequest) {
			if value(r.fields, ":path") == "/b03.Hop/TrailersOnly" {
				c.headers(r.id, true, append([]hpack.HeaderField{
					field(":status", "200"), field("content-type", "application/grpc"),
					field("grpc-status", "5"), field("grpc-message", "gone"),
				}, hops...)...)
				return
			}
			answerOK(c, r.id, grpcMsg(t, &testpb.SimpleResponse{}), hops...)
		})
	})
	gw := gateway(t, ri.addr, nil)
	ctx := ctxFor(t, 10*time.Second)
	c := dialRaw(t, gw)
	check := func(t *testing.T, where string, fields []hpack.HeaderField) {
		t.Helper()
		for _, h := range hops[:len(hops)-1] {
			if hasField(fields, h.Name) {
				t.Errorf("%s: %s reached the client: %v", where, h.Name, fields)
			}
		}
		if value(fields, "x-kept") != "yes" {
			t.Errorf("%s: ordinary field x-kept lost: %v", where, fields)
		}
	}
	for i, path := range []string{"/b03.Hop/Normal", "/b03.Hop/TrailersOnly"} {
		id := uint32(2*i + 1)
		c.write(func(w *http2.Framer) error {
			if err := c.writeHeadersLocked(id, false, grpcRequest(path, field("te", "trailers"))); err != nil {
				return err
			}
			return c.dataLocked(id, grpcMsg(t, &testpb.SimpleRequest{}), true)
		})
		r, err := c.response(ctx, id)
		if err != nil || r.rst != nil {
			t.Fatalf("%s: %v rst %v", path, err, r.rst)
		}
		check(t, path+" headers", r.headers)
		if !r.trailersOnly {
			check(t, path+" trailers", r.trailers)
			if r.status() != "0" {
				t.Fatalf("%s: status %q", path, r.status())
			}
		} else if r.status() != "5" {
			t.Fatalf("%s: status %q", path, r.status())
		}
	}
}

// ---------------------------------------------------------------------------
// B06 — the server finishes before the client half-closes

// b06Handler answers the first message of a bidi call with three ~64 KiB
// messages and OK, without waiting for the client to half-close. grpc-go then
// sends trailers and RST_STREAM(NO_ERROR).
func b06Handler(_ any, ss grpc.ServerStream) error {
	if err := ss.RecvMsg(new(testpb.StreamingOutputCallRequest)); err != nil {
		return err
	}
	for i := range 3 {
		if err := ss.SendMsg(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: seeded(i, 64<<10)}}); err != nil {
			return err
		}
	}
	return nil
}

// b06Client sends one message, does not half-close, waits for ready, then
// expects the three messages and OK.
func b06Client(t *testing.T, cc *grpc.ClientConn, ready <-chan struct{}) {
	t.Helper()
	ctx := ctxT(t)
	s, err := cc.NewStream(ctx, bidiDesc, "/b06.Bus/Talk")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("instance never finished")
	}
	for i := range 3 {
		m := new(testpb.StreamingOutputCallResponse)
		if err := s.RecvMsg(m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m.GetPayload().GetBody(), seeded(i, 64<<10)) {
			t.Fatalf("message %d corrupted", i)
		}
	}
	if err := s.RecvMsg(new(testpb.StreamingOutputCallResponse)); err != io.EOF {
		t.Fatalf("end: got %v, want io.EOF (status OK)", err)
	}
}

// TestB06ServerFinishesBeforeClientHalfCloses pins a relay that takes the
// instance's RST_STREAM(NO_ERROR) after its trailers for a failure, throws away
// the DATA and trailers still queued for a slow client and resets the client's
// stream, which then sees INTERNAL or UNAVAILABLE instead of three messages and OK.
func TestB06ServerFinishesBeforeClientHalfCloses(t *testing.T) {
	t.Run("grpc-go instance", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// ready closes once the instance has written RST_STREAM(NO_ERROR): the
		// client has not read yet, and its 64 KiB window holds the rest inside
		// the relay.
		ready := make(chan struct{})
		var once sync.Once
		tl := tapListener{Listener: lis, onWrite: func(fh http2.FrameHeader, p []byte) {
			if fh.Type == http2.FrameRSTStream && len(p) == 4 && http2.ErrCode(binary.BigEndian.Uint32(p)) == http2.ErrCodeNo {
				once.Do(func() { close(ready) })
			}
		}}
		srv := grpc.NewServer(grpc.UnknownServiceHandler(b06Handler))
		go srv.Serve(tl)
		t.Cleanup(srv.Stop)
		cc := dialCC(t, gateway(t, lis.Addr().String(), nil), tightWindows()...)
		b06Client(t, cc, ready)
	})

	// The same exchange from an instance written frame by frame, which makes
	// sure the relay has read the RST_STREAM before the client reads anything:
	// the instance waits for the relay to answer a PING sent after it.
	t.Run("raw instance", func(t *testing.T) {
		ready := make(chan struct{})
		ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
			h, err := c.take(ctx, ofType(http2.FrameHeaders))
			if err != nil {
				return
			}
			id := h.StreamID
			if _, err := c.take(ctx, func(f rawFrame) bool { return f.Type == http2.FrameData && f.StreamID == id && len(f.data) > 0 }); err != nil {
				return
			}
			c.write(func(w *http2.Framer) error {
				c.writeHeadersLocked(id, false, []hpack.HeaderField{field(":status", "200"), field("content-type", "application/grpc")})
				for i := range 3 {
					c.dataLocked(id, grpcMsg(t, &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: seeded(i, 64<<10)}}), false)
				}
				c.writeHeadersLocked(id, true, []hpack.HeaderField{field("grpc-status", "0")})
				w.WriteRSTStream(id, http2.ErrCodeNo)
				return w.WritePing(false, [8]byte{'b', '0', '6'})
			})
			if _, err := c.take(ctx, func(f rawFrame) bool { return f.Type == http2.FramePing && f.Flags.Has(http2.FlagPingAck) }); err != nil {
				return
			}
			close(ready)
			<-ctx.Done()
		})
		cc := dialCC(t, gateway(t, ri.addr, nil), tightWindows()...)
		b06Client(t, cc, ready)
	})
}

// ---------------------------------------------------------------------------
// B07 — no timer cuts a quiet stream

// TestB07QuietStreamsNotCut pins a hidden per-stream idle, read or
// response-header timeout cutting legitimately quiet gRPC streams. The relay's
// only timers (DialTimeout, CloseLinger) are set to 50ms, and streams are held
// quiet for 2s, 40 times as long.
func TestB07QuietStreamsNotCut(t *testing.T) {
	const quiet = 2 * time.Second
	slowUnary := func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(new(testpb.SimpleRequest)); err != nil {
			return err
		}
		// grpc-go sends no response headers before the first message.
		select {
		case <-time.After(quiet):
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
		return ss.SendMsg(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("late")}})
	}
	inst := backend(t, grpc.UnknownServiceHandler(slowUnary))
	gw := gatewayCfg(t, inst, relay.Config{DialTimeout: 50 * time.Millisecond, CloseLinger: 50 * time.Millisecond}, nil)
	cc := dialCC(t, gw)
	c := testgrpc.NewTestServiceClient(cc)

	hold := func(t *testing.T, ctx context.Context) {
		select {
		case <-time.After(quiet):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	pingPong := func(t *testing.T, bs testgrpc.TestService_FullDuplexCallClient, n int32) {
		t.Helper()
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{n})}); err != nil {
			t.Fatal(err)
		}
		r, err := bs.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != int(n) {
			t.Fatalf("recv: %v", err)
		}
	}
	endOK := func(t *testing.T, bs testgrpc.TestService_FullDuplexCallClient) {
		t.Helper()
		bs.CloseSend()
		if _, err := bs.Recv(); err != io.EOF {
			t.Fatalf("end: got %v, want OK", err)
		}
	}

	t.Run("quiet both ways", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		bs, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pingPong(t, bs, 10)
		hold(t, ctx)
		pingPong(t, bs, 11)
		endOK(t, bs)
	})

	t.Run("client quiet while server streams", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		bs, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ps []*testpb.ResponseParameters
		for range 20 {
			ps = append(ps, &testpb.ResponseParameters{Size: 100, IntervalUs: int32(quiet / 20 / time.Microsecond)})
		}
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: ps}); err != nil {
			t.Fatal(err)
		}
		for i := range ps {
			if _, err := bs.Recv(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		pingPong(t, bs, 12)
		endOK(t, bs)
	})

	t.Run("server quiet while client streams", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		cs, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tick := time.NewTicker(quiet / 20)
		defer tick.Stop()
		for i := range 20 {
			if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: payload(100)}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		res, err := cs.CloseAndRecv()
		if err != nil || res.GetAggregatedPayloadSize() != 2000 {
			t.Fatalf("%v %v", res, err)
		}
	})

	t.Run("response headers delayed", func(t *testing.T) {
		t.Parallel()
		ctx := ctxT(t)
		start := time.Now()
		resp := new(testpb.SimpleResponse)
		if err := cc.Invoke(ctx, "/b07.Slow/Unary", &testpb.SimpleRequest{}, resp); err != nil {
			t.Fatalf("got %v, want OK", err)
		}
		if string(resp.GetPayload().GetBody()) != "late" || time.Since(start) < quiet {
			t.Fatalf("unexpected answer %q after %v", resp.GetPayload().GetBody(), time.Since(start))
		}
		// And a streaming call whose first message (hence headers) comes late.
		bs, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 3, IntervalUs: int32(quiet / time.Microsecond)}}})
		if _, err := bs.Recv(); err != nil {
			t.Fatal(err)
		}
		endOK(t, bs)
	})

	// A client with keepalive (10s is grpc-go's minimum) holds a quiet stream
	// until it has sent a keepalive PING and had it answered; the stream then goes
	// on. Static windows turn off BDP PINGs, so any PING is a keepalive.
	t.Run("keepalive client", func(t *testing.T) {
		t.Parallel()
		var pings atomic.Int32
		acked := make(chan struct{})
		var once sync.Once
		dialer := func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &tapConn{
				Conn: nc,
				out: &frameTap{preface: true, on: func(fh http2.FrameHeader, _ []byte) {
					if fh.Type == http2.FramePing && !fh.Flags.Has(http2.FlagPingAck) {
						pings.Add(1)
					}
				}},
				in: &frameTap{on: func(fh http2.FrameHeader, _ []byte) {
					if fh.Type == http2.FramePing && fh.Flags.Has(http2.FlagPingAck) && pings.Load() > 0 {
						once.Do(func() { close(acked) })
					}
				}},
			}, nil
		}
		kcc := dialCC(t, gw, append(tightWindows(),
			grpc.WithContextDialer(dialer),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))...)
		kc := testgrpc.NewTestServiceClient(kcc)
		ctx := ctxT(t)
		bs, err := kc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pingPong(t, bs, 10)
		select {
		case <-acked:
		case <-ctx.Done():
			t.Fatalf("no keepalive PING answered (%d sent)", pings.Load())
		}
		pingPong(t, bs, 11)
		endOK(t, bs)
		if _, err := kc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestB07PingAnsweredByRelayNotForwarded pins PINGs being relayed end to end (and
// so counted as activity, or answered late by a busy instance): each hop answers
// its own. The client's PINGs get ACKs from the relay and the instance sees none.
func TestB07PingAnsweredByRelayNotForwarded(t *testing.T) {
	gotHeaders := make(chan struct{}, 1)
	pingsAtAnswer := make(chan int32, 1)
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		serveGRPC(ctx, c, func(uint32, []hpack.HeaderField) bool {
			gotHeaders <- struct{}{}
			return true
		}, func(r instRequest) {
			// Frames are handled in order: a PING relayed before the request's
			// last DATA would have been counted by now.
			pingsAtAnswer <- c.pings.Load()
			answerOK(c, r.id, grpcMsg(t, &testpb.SimpleResponse{}))
		})
	})
	gw := gateway(t, ri.addr, nil)
	ctx := ctxFor(t, 10*time.Second)
	c := dialRaw(t, gw)
	if err := c.headers(1, false, grpcRequest("/b07.Ping/Once", field("te", "trailers"))...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gotHeaders:
	case <-ctx.Done():
		t.Fatal("request never reached the instance")
	}
	for i := range 3 {
		data := [8]byte{'b', '0', '7', byte('0' + i)}
		if err := c.write(func(w *http2.Framer) error { return w.WritePing(false, data) }); err != nil {
			t.Fatal(err)
		}
		ack, err := c.take(ctx, ofType(http2.FramePing))
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Flags.Has(http2.FlagPingAck) || ack.ping != data {
			t.Fatalf("PING %d: got %v %q, want ACK %q", i, ack.Flags, ack.ping, data)
		}
	}
	if err := c.data(1, grpcMsg(t, &testpb.SimpleRequest{}), true); err != nil {
		t.Fatal(err)
	}
	r, err := c.response(ctx, 1)
	if err != nil || r.status() != "0" {
		t.Fatalf("response %v %v", r, err)
	}
	if n := <-pingsAtAnswer; n != 0 {
		t.Fatalf("instance received %d PINGs; the relay must answer them itself", n)
	}
}

// ---------------------------------------------------------------------------
// B08 — GOAWAY while streams are in flight

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return nc, err
}

// TestB08MaxConnectionAgeNoErrors pins streams lost when an instance retires its
// connection with GOAWAY (grpc-go MaxConnectionAge): 50 callers in a loop across
// many GOAWAYs must see no error at all.
func TestB08MaxConnectionAgeNoErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	srv := grpc.NewServer(grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 300 * time.Millisecond, MaxConnectionAgeGrace: 10 * time.Second}))
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	go srv.Serve(countingListener{lis, &accepted})
	t.Cleanup(srv.Stop)

	c := testgrpc.NewTestServiceClient(dialCC(t, gateway(t, lis.Addr().String(), nil)))
	run, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	var calls, failures atomic.Int64
	var mu sync.Mutex
	var firstErrs []error
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; run.Err() == nil; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(g*10 + i%7), Payload: payload(2 << 10)})
				cancel()
				calls.Add(1)
				if err == nil && len(resp.GetPayload().GetBody()) != g*10+i%7 {
					err = errors.New("short response")
				}
				if err != nil {
					failures.Add(1)
					mu.Lock()
					if len(firstErrs) < 5 {
						firstErrs = append(firstErrs, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", failures.Load(), calls.Load(), firstErrs)
	}
	if accepted.Load() < 3 {
		t.Fatalf("instance accepted %d connections: MaxConnectionAge never cycled them", accepted.Load())
	}
	t.Logf("%d calls over %d instance connections", calls.Load(), accepted.Load())
}

// TestB08GoAwayBeforeFirstRequestReplayed pins a request the instance never
// processed (GOAWAY with last-stream-id 0 right as it arrives) being failed, or
// lost because its body cannot be replayed: the relay must send it again, whole
// and once, on a new connection.
func TestB08GoAwayBeforeFirstRequestReplayed(t *testing.T) {
	for _, client := range []string{"raw", "grpc-go"} {
		t.Run(client, func(t *testing.T) {
			bodies := make(chan []byte, 10)
			ri := startRawInstance(t, func(ctx context.Context, c *rawConn, n int) {
				if n == 0 {
					if _, err := c.take(ctx, ofType(http2.FrameHeaders)); err != nil {
						return
					}
					c.write(func(w *http2.Framer) error { return w.WriteGoAway(0, http2.ErrCodeNo, []byte("restarting")) })
					c.nc.(*net.TCPConn).CloseWrite()
					// Read on until the relay closes, so nothing it sent is lost
					// to a TCP reset before it has read the GOAWAY.
					c.closed(ctx)
					return
				}
				serveGRPC(ctx, c, nil, func(r instRequest) {
					bodies <- r.body
					answerOK(c, r.id, grpcMsg(t, &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("second")}}))
				})
			})
			gw := gateway(t, ri.addr, nil)
			ctx := ctxFor(t, 10*time.Second)
			req := &testpb.SimpleRequest{ResponseSize: 6, Payload: &testpb.Payload{Body: seeded(8, 6<<10)}}
			switch client {
			case "raw":
				// A raw client does not retry: only the relay can have replayed it.
				c := dialRaw(t, gw)
				c.write(func(w *http2.Framer) error {
					if err := c.writeHeadersLocked(1, false, grpcRequest("/grpc.testing.TestService/UnaryCall", field("te", "trailers"))); err != nil {
						return err
					}
					return c.dataLocked(1, grpcMsg(t, req), true)
				})
				r, err := c.response(ctx, 1)
				if err != nil || r.rst != nil || r.status() != "0" {
					t.Fatalf("got err %v rst %v status %q headers %v; want OK", err, r.rst, r.status(), r.headers)
				}
			case "grpc-go":
				resp, err := testgrpc.NewTestServiceClient(dialCC(t, gw)).UnaryCall(ctx, req)
				if err != nil || string(resp.GetPayload().GetBody()) != "second" {
					t.Fatalf("got %v %v, want OK", resp, err)
				}
			}
			if n := ri.conns.Load(); n != 2 {
				t.Fatalf("instance saw %d connections, want 2", n)
			}
			select {
			case b := <-bodies:
				if !bytes.Equal(b, grpcMsg(t, req)) {
					t.Fatalf("instance received %d body bytes, want the %d sent", len(b), len(grpcMsg(t, req)))
				}
			default:
				t.Fatal("request never completed at the instance")
			}
			if len(bodies) != 0 {
				t.Fatalf("request delivered %d more times", len(bodies))
			}
		})
	}
}

// TestB08RefusedTwiceFailsNotHangs pins a request that an instance refuses again
// and again being retried without end (or hanging): the relay sends it again once,
// then tells the client the stream was refused.
func TestB08RefusedTwiceFailsNotHangs(t *testing.T) {
	var attempts atomic.Int32
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		serveGRPC(ctx, c, func(id uint32, _ []hpack.HeaderField) bool {
			attempts.Add(1)
			c.rst(id, http2.ErrCodeRefusedStream)
			return false
		}, nil)
	})
	gw := gateway(t, ri.addr, nil)

	t.Run("raw", func(t *testing.T) {
		attempts.Store(0)
		ctx := ctxFor(t, 10*time.Second)
		c := dialRaw(t, gw)
		c.write(func(w *http2.Framer) error {
			if err := c.writeHeadersLocked(1, false, grpcRequest("/b08.Refused/Call", field("te", "trailers"))); err != nil {
				return err
			}
			return c.dataLocked(1, grpcMsg(t, &testpb.SimpleRequest{Payload: payload(3000)}), true)
		})
		r, err := c.response(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.rst == nil || *r.rst != http2.ErrCodeRefusedStream {
			t.Fatalf("got rst %v headers %v, want RST_STREAM(REFUSED_STREAM)", r.rst, r.headers)
		}
		if n := attempts.Load(); n != 2 {
			t.Fatalf("instance saw %d attempts, want 2 (the request and one replay)", n)
		}
	})

	t.Run("grpc-go", func(t *testing.T) {
		attempts.Store(0)
		ctx := ctxFor(t, 10*time.Second)
		_, err := testgrpc.NewTestServiceClient(dialCC(t, gw)).UnaryCall(ctx, &testpb.SimpleRequest{Payload: payload(3000)})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want UNAVAILABLE", err)
		}
		// grpc-go retries a refused stream once by itself.
		if n := attempts.Load(); n > 4 {
			t.Fatalf("instance saw %d attempts", n)
		}
	})
}

// ---------------------------------------------------------------------------
// B10 — flow control under tight windows

// echoBidi answers each message of a bidi call with its payload.
func echoBidi(_ any, ss grpc.ServerStream) error {
	for {
		m := new(testpb.StreamingOutputCallRequest)
		if err := ss.RecvMsg(m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := ss.SendMsg(&testpb.StreamingOutputCallResponse{Payload: m.Payload}); err != nil {
			return err
		}
	}
}

// TestB10TightWindowsNeverDeadlock pins flow-control credit not being returned as
// bytes move, which hangs large transfers once windows are small: 200 × 256 KiB
// each way at once with a client (and, in one variant, the relay and the
// instance) on the 64 KiB minimum windows, byte-identical.
func TestB10TightWindowsNeverDeadlock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   relay.Config
		sopts []grpc.ServerOption
	}{
		{"tight client", relay.Config{}, nil},
		{"tight everywhere", relay.Config{StreamWindow: 65535, ConnWindow: 65535},
			[]grpc.ServerOption{grpc.InitialWindowSize(65535), grpc.InitialConnWindowSize(65535)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := backend(t, append(tc.sopts, grpc.UnknownServiceHandler(echoBidi))...)
			cc := dialCC(t, gatewayCfg(t, inst, tc.cfg, nil), tightWindows()...)
			ctx := ctxFor(t, 90*time.Second)
			s, err := cc.NewStream(ctx, bidiDesc, "/b10.Echo/Bidi")
			if err != nil {
				t.Fatal(err)
			}
			const n, size = 200, 256 << 10
			errc := make(chan error, 1)
			go func() {
				for i := range n {
					if err := s.SendMsg(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: seeded(i, size)}}); err != nil {
						errc <- fmt.Errorf("send %d: %w", i, err)
						return
					}
				}
				errc <- s.CloseSend()
			}()
			for i := range n {
				m := new(testpb.StreamingOutputCallResponse)
				if err := s.RecvMsg(m); err != nil {
					t.Fatalf("recv %d: %v", i, err)
				}
				if !bytes.Equal(m.GetPayload().GetBody(), seeded(i, size)) {
					t.Fatalf("message %d not byte-identical", i)
				}
			}
			if err := s.RecvMsg(new(testpb.StreamingOutputCallResponse)); err != io.EOF {
				t.Fatalf("end: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// B11 — errors the relay makes are valid gRPC responses

// TestB11ConnectRefusedIsTrailersOnlyUnavailable pins a gateway answering a gRPC
// client with a non-gRPC error (HTML page, no content-type, HTTP 502) when it
// cannot reach the instance, which clients report as UNKNOWN or "unexpected
// content-type". It must be Trailers-Only, :status 200, application/grpc,
// UNAVAILABLE, and quick.
func TestB11ConnectRefusedIsTrailersOnlyUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	gw := gateway(t, dead, nil)

	t.Run("raw gRPC", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Second)
		c := dialRaw(t, gw)
		c.write(func(w *http2.Framer) error {
			if err := c.writeHeadersLocked(1, false, grpcRequest("/b11.Down/Call", field("te", "trailers"))); err != nil {
				return err
			}
			return c.dataLocked(1, grpcMsg(t, &testpb.SimpleRequest{}), true)
		})
		r, err := c.response(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.rst != nil || !r.trailersOnly || len(r.body) != 0 {
			t.Fatalf("want Trailers-Only, got rst %v headers %v body %q", r.rst, r.headers, r.body)
		}
		if value(r.headers, ":status") != "200" || value(r.headers, "content-type") != "application/grpc" ||
			r.status() != fmt.Sprint(int(codes.Unavailable)) || value(r.headers, "grpc-message") == "" {
			t.Fatalf("want :status 200, application/grpc, grpc-status 14 with a message; got %v", r.headers)
		}
	})

	t.Run("raw HTTP", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Second)
		c := dialRaw(t, gw)
		c.headers(1, true, field(":method", "GET"), field(":scheme", "http"), field(":path", "/healthz"), field(":authority", "tether.test"))
		r, err := c.response(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if value(r.headers, ":status") != "503" || strings.Contains(value(r.headers, "content-type"), "html") {
			t.Fatalf("want HTTP 503 in plain text, got %v %q", r.headers, r.body)
		}
	})

	t.Run("grpc-go", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Second)
		_, err := testgrpc.NewTestServiceClient(dialCC(t, gw)).EmptyCall(ctx, &testpb.Empty{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want UNAVAILABLE", err)
		}
	})
}

// TestB11InstanceLostMidStreamIsUnavailable pins a stream whose instance
// connection dies mid-response hanging, or ending with a status the client cannot
// act on: it must end with UNAVAILABLE.
func TestB11InstanceLostMidStreamIsUnavailable(t *testing.T) {
	started := make(chan struct{}, 1)
	watch := func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(new(testpb.SimpleRequest)); err != nil {
			return err
		}
		if err := ss.SendMsg(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("first")}}); err != nil {
			return err
		}
		started <- struct{}{}
		<-ss.Context().Done()
		return ss.Context().Err()
	}
	inst, srv := backendServer(t, grpc.UnknownServiceHandler(watch))
	cc := dialCC(t, gateway(t, inst, nil))
	ctx := ctxFor(t, 10*time.Second)
	s, err := cc.NewStream(ctx, serverDesc, "/b11.Feed/Watch")
	if err != nil {
		t.Fatal(err)
	}
	s.SendMsg(&testpb.SimpleRequest{})
	s.CloseSend()
	if err := s.RecvMsg(new(testpb.SimpleResponse)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	// Stop closes the listener and every connection at once.
	srv.Stop()
	err = s.RecvMsg(new(testpb.SimpleResponse))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
}

// ---------------------------------------------------------------------------
// B12 — h2c prior knowledge on both hops

// TestB12H2CPriorKnowledgeBothHops pins a hop that speaks HTTP/1.1 (or h2c
// Upgrade) to a gRPC peer, which hangs: a prior-knowledge client gets through,
// and the relay opens its instance connection with the HTTP/2 preface straight
// away, to an instance (x/net's http2.Server) that serves nothing else.
func TestB12H2CPriorKnowledgeBothHops(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		msgs, err := splitMsgs(body)
		if r.ProtoMajor != 2 || err != nil || len(msgs) != 1 || r.Header.Get("Content-Type") != "application/grpc" ||
			len(r.Header.Values("Te")) != 1 || r.Header.Get("Te") != "trailers" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "13")
			w.Header().Set("Grpc-Message", fmt.Sprintf("bad request: proto %d, te %q, %d messages", r.ProtoMajor, r.Header.Values("Te"), len(msgs)))
			w.WriteHeader(200)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write(grpcMsg(t, &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte("h2c")}}))
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
	h2 := &http2.Server{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				h2.ServeConn(nc, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})

	cc := dialCC(t, gateway(t, lis.Addr().String(), nil))
	resp := new(testpb.SimpleResponse)
	if err := cc.Invoke(ctxFor(t, 10*time.Second), "/b12.Echo/Say", &testpb.SimpleRequest{}, resp); err != nil {
		t.Fatalf("got %v, want OK", err)
	}
	if string(resp.GetPayload().GetBody()) != "h2c" {
		t.Fatalf("response %q", resp.GetPayload().GetBody())
	}
}

// ---------------------------------------------------------------------------
// B18 — parallel first requests share one instance connection

// TestB18ParallelFirstStreamsShareOneConnection pins streams that arrive while
// the relay is still connecting to an instance: they must all share the one new
// connection and all succeed. A relay that lets a stream write its HEADERS on
// the new connection before the HTTP/2 preface makes the instance reject the
// whole connection ("bogus greeting"), failing every stream on it. The race is
// narrow, so it is run for many rounds with many clients released at once.
func TestB18ParallelFirstStreamsShareOneConnection(t *testing.T) {
	const rounds, clients, streams = 20, 8, 25
	for round := range rounds {
		ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
			serveGRPC(ctx, c, nil, nil)
		})
		gw := gateway(t, ri.addr, nil)
		ctx := ctxFor(t, 20*time.Second)
		cs := make([]*rawConn, clients)
		for i := range cs {
			cs[i] = dialRaw(t, gw)
		}
		start := make(chan struct{})
		errc := make(chan error, clients)
		for _, c := range cs {
			go func() {
				<-start
				err := c.write(func(w *http2.Framer) error {
					for j := range streams {
						if err := c.writeHeadersLocked(uint32(2*j+1), true, grpcRequest("/b18.Cold/Call", field("te", "trailers"))); err != nil {
							return err
						}
					}
					return nil
				})
				for j := 0; err == nil && j < streams; j++ {
					var r rawResponse
					r, err = c.response(ctx, uint32(2*j+1))
					if err == nil && (r.rst != nil || r.status() != "0") {
						err = fmt.Errorf("stream %d: rst %v, headers %v, trailers %v", 2*j+1, r.rst, r.headers, r.trailers)
					}
				}
				errc <- err
			}()
		}
		close(start)
		for range cs {
			if err := <-errc; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if n := ri.conns.Load(); n != 1 {
			t.Fatalf("round %d: instance saw %d connections, want 1", round, n)
		}
	}
}

// ---------------------------------------------------------------------------
// B20 — the client goes away while its stream waits

// TestB20ClientDisconnectCancelsUpstream pins a client that drops its TCP
// connection (no RST_STREAM) while a forwarded stream still waits for the
// instance: the upstream stream must be cancelled at once, and the instance
// connection, which other clients share, must go on working.
func TestB20ClientDisconnectCancelsUpstream(t *testing.T) {
	waiting := make(chan uint32, 1)
	cancelled := make(chan rawFrame, 1)
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		for {
			f, err := c.next(ctx)
			if err != nil {
				return
			}
			switch {
			case f.Type == http2.FrameHeaders && value(f.fields, ":path") == "/b20.Wait/Forever":
				select {
				case waiting <- f.StreamID:
				default:
				}
			case f.Type == http2.FrameHeaders && f.endStream():
				answerOK(c, f.StreamID, grpcMsg(t, &testpb.Empty{}))
			case f.Type == http2.FrameRSTStream:
				select {
				case cancelled <- f:
				default:
				}
			}
		}
	})
	gw := gateway(t, ri.addr, nil)
	ctx := ctxFor(t, 10*time.Second)

	c := dialRaw(t, gw)
	c.write(func(w *http2.Framer) error {
		if err := c.writeHeadersLocked(1, false, grpcRequest("/b20.Wait/Forever", field("te", "trailers"))); err != nil {
			return err
		}
		return c.dataLocked(1, grpcMsg(t, &testpb.Empty{}), false)
	})
	var uid uint32
	select {
	case uid = <-waiting:
	case <-ctx.Done():
		t.Fatal("request never reached the instance")
	}
	c.close()
	select {
	case f := <-cancelled:
		if f.StreamID != uid || f.code != http2.ErrCodeCancel {
			t.Fatalf("instance got %v, want RST_STREAM(CANCEL) on stream %d", f, uid)
		}
	case <-ctx.Done():
		t.Fatal("instance never told that the client went away")
	}

	c2 := dialRaw(t, gw)
	c2.headers(1, true, grpcRequest("/b20.Other/Call", field("te", "trailers"))...)
	r, err := c2.response(ctx, 1)
	if err != nil || r.status() != "0" {
		t.Fatalf("next client on the same instance connection: %v %v", err, r)
	}
}

// ---------------------------------------------------------------------------
// B32 — rapid reset

// floodResult is what a stream flood saw.
type floodResult struct {
	goAway      *rawFrame
	sent        int
	maxRoutines int
}

// flood opens streams from 3 upwards and, for each, calls after to make the relay
// reset it, as fast as the connection takes it; then waits for GOAWAY or for the
// answer to a PING sent after the flood, whichever comes first.
func flood(t *testing.T, ctx context.Context, c *rawConn, streams int, after func(w *http2.Framer, id uint32) error) floodResult {
	t.Helper()
	var res floodResult
	fields := grpcRequest("/b32.Flood/Call", field("te", "trailers"), field("x-tether-memory", "64Mi"))
	const batch = 50
	for i := 0; i < streams; i += batch {
		err := c.write(func(w *http2.Framer) error {
			for j := i; j < min(i+batch, streams); j++ {
				id := uint32(3 + 2*j)
				if err := c.writeHeadersLocked(id, false, fields); err != nil {
					return err
				}
				if err := after(w, id); err != nil {
					return err
				}
				res.sent++
			}
			return nil
		})
		if err != nil {
			break // the relay closed the connection
		}
		res.maxRoutines = max(res.maxRoutines, runtime.NumGoroutine())
	}
	c.write(func(w *http2.Framer) error { return w.WritePing(false, [8]byte{'f', 'l', 'o', 'o', 'd'}) })
	f, err := c.take(ctx, func(f rawFrame) bool {
		return f.Type == http2.FrameGoAway || (f.Type == http2.FramePing && f.Flags.Has(http2.FlagPingAck))
	})
	if err == nil && f.Type == http2.FrameGoAway {
		res.goAway = &f
	}
	return res
}

// b32Setup runs a counting instance behind a relay and makes one call so the
// instance connection is up before a flood.
func b32Setup(t *testing.T, cfg relay.Config) (gw string, streams *atomic.Int32, probe func(t *testing.T) int32) {
	streams = new(atomic.Int32)
	ri := startRawInstance(t, func(ctx context.Context, c *rawConn, _ int) {
		serveGRPC(ctx, c, func(uint32, []hpack.HeaderField) bool {
			streams.Add(1)
			return true
		}, nil)
	})
	gw = gatewayCfg(t, ri.addr, cfg, nil)
	// probe makes a call on a fresh connection. The relay writes every stream's
	// HEADERS to the one instance connection in order, so when the probe is
	// answered the instance has counted every stream forwarded before it.
	probe = func(t *testing.T) int32 {
		t.Helper()
		c := dialRaw(t, gw)
		c.write(func(w *http2.Framer) error {
			return c.writeHeadersLocked(1, true, grpcRequest("/b32.Probe/Call", field("te", "trailers")))
		})
		r, err := c.response(ctxFor(t, 10*time.Second), 1)
		if err != nil || r.status() != "0" {
			t.Fatalf("probe call: %v %v", err, r)
		}
		c.close()
		return streams.Load()
	}
	probe(t)
	return gw, streams, probe
}

// TestB32RapidResetGetsEnhanceYourCalm pins CVE-2023-44487 on the relay: a
// client that opens streams and cancels them at once never meets the
// concurrency limit, yet each stream costs an upstream stream. The connection
// must get GOAWAY(ENHANCE_YOUR_CALM) and be closed, the instance must see a
// bounded number of streams, and goroutines stay bounded.
func TestB32RapidResetGetsEnhanceYourCalm(t *testing.T) {
	// Registered first, so it runs after every other cleanup: by then the
	// relay's goroutines must be back to what they were before the test.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	gw, _, probe := b32Setup(t, relay.Config{})
	base := probe(t)
	routines := runtime.NumGoroutine()
	ctx := ctxFor(t, 20*time.Second)
	c := dialRaw(t, gw)
	res := flood(t, ctx, c, 5000, func(w *http2.Framer, id uint32) error {
		return w.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	if res.goAway == nil || res.goAway.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d create-and-cancel streams: GOAWAY %v, want ENHANCE_YOUR_CALM", res.sent, res.goAway)
	}
	if err := c.closed(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connection not closed after GOAWAY: %v", err)
	}
	// The relay allows 1000 resets a second; the flood is far faster.
	if n := probe(t) - base - 1; n > 1100 {
		t.Fatalf("instance saw %d of the %d flood streams", n, res.sent)
	} else {
		t.Logf("flood: %d streams sent, %d reached the instance, GOAWAY last-stream-id %d", res.sent, n, res.goAway.lastID)
	}
	if res.maxRoutines > routines+50 {
		t.Fatalf("goroutines grew from %d to %d during the flood", routines, res.maxRoutines)
	}
	c.close()
}

// TestB32ProvokedResetsGetEnhanceYourCalm pins the "MadeYouReset" variant
// (CVE-2025-8671): instead of resetting streams itself, the client sends an
// invalid frame on each (WINDOW_UPDATE with increment 0) so that the relay resets
// it. Each stream still costs an upstream stream, so the connection must be cut
// off the same way.
func TestB32ProvokedResetsGetEnhanceYourCalm(t *testing.T) {
	// Registered first, so it runs after every other cleanup: by then the
	// relay's goroutines must be back to what they were before the test.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	gw, _, probe := b32Setup(t, relay.Config{})
	base := probe(t)
	routines := runtime.NumGoroutine()
	ctx := ctxFor(t, 20*time.Second)
	c := dialRaw(t, gw)
	res := flood(t, ctx, c, 5000, func(w *http2.Framer, id uint32) error {
		return w.WriteWindowUpdate(id, 0)
	})
	n := probe(t) - base - 1
	if res.goAway == nil || res.goAway.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d streams reset by the relay (%d reached the instance): GOAWAY %v, want ENHANCE_YOUR_CALM", res.sent, n, res.goAway)
	}
	if n > 1100 {
		t.Fatalf("instance saw %d of the %d flood streams", n, res.sent)
	}
	if res.maxRoutines > routines+50 {
		t.Fatalf("goroutines grew from %d to %d during the flood", routines, res.maxRoutines)
	}
	c.close()
}

// TestB32MaxConcurrentStreamsEnforced pins the concurrency limit being advertised
// but not enforced: with MaxConcurrentStreams 5, a sixth open stream is refused
// with RST_STREAM(REFUSED_STREAM), and a slot freed by a reset can be reused.
func TestB32MaxConcurrentStreamsEnforced(t *testing.T) {
	gw := gatewayCfg(t, backend(t), relay.Config{MaxConcurrentStreams: 5}, nil)
	ctx := ctxFor(t, 10*time.Second)
	c := dialRaw(t, gw)
	s, err := c.take(ctx, func(f rawFrame) bool { return f.Type == http2.FrameSettings && f.settings != nil })
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := s.settings[http2.SettingMaxConcurrentStreams]; !ok || v != 5 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent %v), want 5", v, ok)
	}
	hold := grpcRequest("/grpc.testing.TestService/FullDuplexCall", field("te", "trailers"))
	for id := uint32(1); id <= 11; id += 2 {
		if err := c.headers(id, false, hold...); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.take(ctx, ofType(http2.FrameRSTStream))
	if err != nil {
		t.Fatal(err)
	}
	if r.StreamID != 11 || r.code != http2.ErrCodeRefusedStream {
		t.Fatalf("got %v, want RST_STREAM(REFUSED_STREAM) on stream 11", r)
	}
	// Free a slot, then a whole call must go through.
	c.rst(1, http2.ErrCodeCancel)
	c.write(func(w *http2.Framer) error {
		if err := c.writeHeadersLocked(13, false, grpcRequest("/grpc.testing.TestService/EmptyCall", field("te", "trailers"))); err != nil {
			return err
		}
		return c.dataLocked(13, grpcMsg(t, &testpb.Empty{}), true)
	})
	resp, err := c.response(ctx, 13)
	if err != nil || resp.rst != nil || resp.status() != "0" {
		t.Fatalf("call in the freed slot: err %v rst %v status %q", err, resp.rst, resp.status())
	}
	if f, err := c.take(ctxFor(t, 0), ofType(http2.FrameRSTStream)); err == nil {
		t.Fatalf("unexpected %v", f)
	}
}
