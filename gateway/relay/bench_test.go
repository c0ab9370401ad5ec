package relay_test

import (
	"context"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// The hot path, in process: a grpc-go client, the relay and the grpc-go interop
// server on loopback. The Direct benchmarks are the same calls without the relay;
// the relay's own cost is the difference (ns/op and allocs/op). `make bench-go`
// runs them; `make bench` measures the gateway as a process against other proxies.

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}}

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	return ctx
}

// unaryLoop times unary calls that send and receive size bytes of payload.
func unaryLoop(b *testing.B, addr string, size int) {
	c := dial(b, addr)
	ctx := benchCtx(b)
	req := &testpb.SimpleRequest{ResponseSize: int32(size), Payload: payload(size)}
	if _, err := c.UnaryCall(ctx, req); err != nil { // connect and warm up
		b.Fatal(err)
	}
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.UnaryCall(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.GetPayload().GetBody()) != size {
			b.Fatalf("got %d bytes", len(resp.GetPayload().GetBody()))
		}
	}
}

// streamLoop times one message each way on an open bidi stream.
func streamLoop(b *testing.B, addr string, size int) {
	c := dial(b, addr)
	ctx := benchCtx(b)
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		b.Fatal(err)
	}
	req := &testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{int32(size)}), Payload: payload(size)}
	exchange := func() {
		if err := bs.Send(req); err != nil {
			b.Fatal(err)
		}
		r, err := bs.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if len(r.GetPayload().GetBody()) != size {
			b.Fatalf("got %d bytes", len(r.GetPayload().GetBody()))
		}
	}
	exchange() // open the stream end to end
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	for b.Loop() {
		exchange()
	}
	b.StopTimer()
	bs.CloseSend()
	bs.Recv()
}

func BenchmarkUnary(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) { unaryLoop(b, gateway(b, backend(b), nil), s.n) })
	}
}

func BenchmarkDirectUnary(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) { unaryLoop(b, backend(b), s.n) })
	}
}

func BenchmarkStreamMessage(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) { streamLoop(b, gateway(b, backend(b), nil), s.n) })
	}
}

func BenchmarkDirectStreamMessage(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) { streamLoop(b, backend(b), s.n) })
	}
}
