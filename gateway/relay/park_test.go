package relay_test

import (
	"strings"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/tetherhq/tether/gateway/relay"
)

// downstreamReaders counts the goroutines reading client connections: parked
// ones (waiting on a fresh goroutine) and serving ones (on the goroutine that
// decoded headers and forwarded frames).
func downstreamReaders() (parked, serving int) {
	for _, g := range strings.Split(relayStacks(), "\n\n") {
		switch {
		case strings.Contains(g, "relay.(*Downstream).park(") && !strings.Contains(g, "relay.(*Downstream).run("):
			parked++
		case strings.Contains(g, "relay.(*Downstream).run("):
			serving++
		}
	}
	return parked, serving
}

// waitParked waits until the one client connection's reader has parked.
func waitParked(t *testing.T) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		parked, serving := downstreamReaders()
		if parked == 1 && serving == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client connection not parked: %d parked, %d serving readers; relay goroutines:\n%s", parked, serving, relayStacks())
		}
		<-tick.C
	}
}

// A connection whose last stream has ended waits on a parked goroutine, even
// when its reader was already waiting while that stream was open (a unary
// call's response comes after the request was read in full). Parking is
// invisible to the client: the connection goes on serving.
func TestIdleConnectionParksAndServesOn(t *testing.T) {
	c := dial(t, gateway(t, backend(t), nil))
	ctx := ctxT(t)
	for i := range 3 {
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10, Payload: payload(100)})
		if err != nil || len(resp.GetPayload().GetBody()) != 10 {
			t.Fatalf("call %d: %v", i, err)
		}
		waitParked(t)
	}

	// A stream opened on a parked connection, and messages after a pause
	// mid-stream, when the reader waits with the stream open.
	st, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req := &testpb.StreamingOutputCallRequest{ResponseParameters: params([]int32{7}), Payload: payload(5)}
		if err := st.Send(req); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if resp, err := st.Recv(); err != nil || len(resp.GetPayload().GetBody()) != 7 {
			t.Fatalf("recv %d: %v", i, err)
		}
		if parked, _ := downstreamReaders(); parked != 0 {
			t.Fatalf("reader parked with a stream open")
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("stream did not end")
	}
	waitParked(t)
}

// Back-to-back calls on one connection race the reader's wake-up against the
// client's next request: its read deadline being set and cleared (the default),
// or, parking at once, the hand-over to a parked goroutine. No request may be
// lost or cut in either race.
func TestParkRacesNextRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
	}{{"deadline", 0}, {"park at once", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, gatewayCfg(t, backend(t), relay.Config{ParkAfter: tc.parkAfter}, nil))
			ctx := ctxT(t)
			for i := range 2000 {
				size := 1 + i%3000
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(size), Payload: payload(i % 5000)})
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if got := len(resp.GetPayload().GetBody()); got != size {
					t.Fatalf("call %d: %d bytes, want %d", i, got, size)
				}
			}
		})
	}
}

// A connection busy again within ParkAfter keeps its goroutine: it parks only
// once it has been idle that long.
func TestBusyConnectionDoesNotPark(t *testing.T) {
	const parkAfter = time.Hour
	c := dial(t, gatewayCfg(t, backend(t), relay.Config{ParkAfter: parkAfter}, nil))
	ctx := ctxT(t)
	for i := range 50 {
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if parked, serving := downstreamReaders(); parked != 0 || serving != 1 {
			t.Fatalf("call %d: %d parked, %d serving readers, want the one serving reader kept", i, parked, serving)
		}
	}
}
