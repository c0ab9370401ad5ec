package gateway_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// one returns the single value of key in md, or fails the test.
func one(t *testing.T, md metadata.MD, key string) string {
	t.Helper()
	v := md.Get(key)
	if len(v) != 1 {
		t.Fatalf("response header %s: got %q, want exactly one value (headers: %v)", key, v, md)
	}
	return v[0]
}

// checkActivationHeaders checks what the activating call is told about its cold
// start: the instance's name, the cold-start time, and its phases, whose
// durations add up to the cold-start time.
func checkActivationHeaders(t *testing.T, md metadata.MD, pid int64) time.Duration {
	t.Helper()
	if got, want := one(t, md, "x-tether-instance"), fmt.Sprintf("tether-example-%d", pid); got != want {
		t.Errorf("x-tether-instance = %q, want %q (the instance that answered)", got, want)
	}
	cold, err := time.ParseDuration(one(t, md, "x-tether-cold-start"))
	if err != nil || cold <= 0 {
		t.Fatalf("x-tether-cold-start %q: %v", md.Get("x-tether-cold-start"), err)
	}
	phases := one(t, md, "x-tether-phases")
	var names []string
	var sum float64
	for part := range strings.SplitSeq(phases, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), ";dur=")
		ms, err := strconv.ParseFloat(dur, 64)
		if !ok || err != nil || ms < 0 {
			t.Fatalf("x-tether-phases %q: entry %q is not phase;dur=ms", phases, part)
		}
		names = append(names, name)
		sum += ms
	}
	// The runtime's phases in order, then the gateway's own "forwarded" if it
	// reports it: the glossary's order of a cold start.
	want := []string{"requested", "scheduled", "started", "ready"}
	if len(names) == len(want)+1 {
		want = append(want, "forwarded")
	}
	if !slices.Equal(names, want) {
		t.Errorf("x-tether-phases %q: phases %v, want %v", phases, names, want)
	}
	if diff := math.Abs(sum - float64(cold.Microseconds())/1000); diff > 5 {
		t.Errorf("x-tether-phases %q sum to %.3fms, but x-tether-cold-start is %v", phases, sum, cold)
	}
	return cold
}

// Done when 1: each connection's instance is exactly the size it asked for.
func TestTwoConnectionsWithDifferentHintsGetTwoInstancesOfExactlyTheirSize(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	small, _ := h.client(t)
	large, _ := h.client(t)

	si, err := small.Info(withMD(ctx, "x-tether-cpu", "250m", "x-tether-memory", "64Mi"), &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	li, err := large.Info(withMD(ctx, "x-tether-cpu", "1.5", "x-tether-cpu-limit", "2",
		"x-tether-memory", "128Mi", "x-tether-memory-limit", "1Gi"), &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		info *examplepb.InfoResponse
		want [4]string
	}{
		{"small", si, [4]string{"250m", "250m", "64Mi", "64Mi"}},
		{"large", li, [4]string{"1500m", "2", "128Mi", "1Gi"}},
	} {
		got := [4]string{c.info.GetCpuRequest(), c.info.GetCpuLimit(), c.info.GetMemoryRequest(), c.info.GetMemoryLimit()}
		if got != c.want {
			t.Errorf("%s instance reports cpu request/limit, memory request/limit %q, want %q", c.name, got, c.want)
		}
	}
	if si.GetPid() == li.GetPid() || si.GetSession() == li.GetSession() {
		t.Errorf("both connections reached the same instance: pid %d/%d, session %q/%q",
			si.GetPid(), li.GetPid(), si.GetSession(), li.GetSession())
	}
	if n := h.rt.starts(); n != 2 {
		t.Errorf("runtime started %d instances, want 2", n)
	}
}

// Done when 1: one connection is pinned to one instance, and its token brings a
// new connection back to it.
func TestCallsOnOneConnectionReachOneInstanceAndItsTokenReattaches(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	c, cc := h.client(t)

	var first metadata.MD
	v, err := c.Increment(ctx, &examplepb.IncrementRequest{}, grpc.Header(&first))
	if err != nil {
		t.Fatal(err)
	}
	if v.GetValue() != 1 {
		t.Fatalf("first Increment = %d, want 1", v.GetValue())
	}
	token := one(t, first, "x-tether-session")
	for want := int64(2); want <= 5; want++ {
		var md metadata.MD
		v, err := c.Increment(ctx, &examplepb.IncrementRequest{}, grpc.Header(&md))
		if err != nil {
			t.Fatal(err)
		}
		if v.GetValue() != want {
			t.Fatalf("Increment %d = %d: the calls did not all reach one instance", want, v.GetValue())
		}
		if cs := md.Get("x-tether-cold-start"); len(cs) != 0 {
			t.Errorf("warm call %d carries x-tether-cold-start %q", want, cs)
		}
	}
	info, err := c.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkActivationHeaders(t, first, info.GetPid())

	// The client reconnects, as after a network blip: a new connection that
	// presents the token reaches the same instance and state.
	cc.Close()
	back, _ := h.client(t)
	tctx := withMD(ctx, "x-tether-session", token)
	v, err = back.Increment(tctx, &examplepb.IncrementRequest{})
	if err != nil {
		t.Fatalf("re-attach with the session token: %v", err)
	}
	if v.GetValue() != 6 {
		t.Errorf("Increment after re-attach = %d, want 6 (the state of the first connection)", v.GetValue())
	}
	binfo, err := back.Info(tctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if binfo.GetPid() != info.GetPid() {
		t.Errorf("re-attached connection reached pid %d, want %d", binfo.GetPid(), info.GetPid())
	}

	// Unknown tokens are NOT_FOUND, never a fresh instance.
	id, secret, _ := strings.Cut(token, ".")
	wrongSecret := id + "." + strings.Repeat("A", len(secret))
	for _, bad := range []string{"garbage", "aaaaaaaaaaaaaaaa.bogus", wrongSecret} {
		other, _ := h.client(t)
		_, err := other.Increment(withMD(ctx, "x-tether-session", bad), &examplepb.IncrementRequest{})
		if status.Code(err) != codes.NotFound {
			t.Errorf("token %q: got %v, want NOT_FOUND", bad, err)
		}
	}
	if n := h.rt.starts(); n != 1 {
		t.Errorf("runtime started %d instances, want 1", n)
	}
}

// Done when 5, case B18: streams that arrive during the cold start wait for the
// same activation.
func TestTenConcurrentStreamsDuringColdStartStartExactlyOneInstance(t *testing.T) {
	h := startGateway(t, options{args: []string{"-startup-delay", "500ms"}})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	const n = 10
	var (
		wg      sync.WaitGroup
		values  [n]int64
		errs    [n]error
		headers [n]metadata.MD
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			v, err := c.Increment(ctx, &examplepb.IncrementRequest{}, grpc.Header(&headers[i]))
			values[i], errs[i] = v.GetValue(), err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		// Only streams held by the activation are told its cost: this proves each
		// arrived while the instance was cold.
		if len(headers[i].Get("x-tether-cold-start")) != 1 {
			t.Fatalf("call %d did not wait for the cold start (no x-tether-cold-start); the test did not exercise B18", i)
		}
	}
	got := slices.Clone(values[:])
	slices.Sort(got)
	if want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("counter values %v, want a permutation of 1..10", values)
	}
	info, err := c.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetCalls() != n+1 {
		t.Errorf("instance saw %d calls, want %d", info.GetCalls(), n+1)
	}
	if s := h.rt.starts(); s != 1 {
		t.Errorf("runtime started %d instances for one connection, want 1", s)
	}
}

// Done when 6, case B22: an idle instance is reaped; its token is then NOT_FOUND
// and a new connection gets a new instance.
func TestIdleInstanceIsReapedThenItsTokenIsNotFoundAndANewConnectionGetsANewOne(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := startGateway(t, options{idle: idle})
	ctx := testCtx(t, time.Minute)
	c, cc := h.client(t)

	callStart := time.Now()
	var md metadata.MD
	info, err := c.Info(ctx, &examplepb.InfoRequest{}, grpc.Header(&md))
	if err != nil {
		t.Fatal(err)
	}
	token := one(t, md, "x-tether-session")
	s := h.onlySession(t)

	waitClosed(t, ctx, s.Done(), "the idle session to be reaped")
	if after := time.Since(callStart); after < idle {
		t.Errorf("reaped %v after its only call began, before its idle timeout %v", after, idle)
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "idle") {
		t.Errorf("session ended with %v, want a reason that says it was idle", err)
	}
	waitClosed(t, ctx, s.Instance.Done(), "the reaped instance's process to exit")
	if alive(int(info.GetPid())) {
		t.Errorf("reaped instance pid %d is still running", info.GetPid())
	}
	// The client that was connected is told to go away.
	if !cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Error("client connection stayed READY: no GOAWAY after its instance was reaped")
	}

	other, _ := h.client(t)
	_, err = other.Info(withMD(ctx, "x-tether-session", token), &examplepb.InfoRequest{})
	if status.Code(err) != codes.NotFound {
		t.Errorf("token of a reaped session: got %v, want NOT_FOUND", err)
	}
	fresh, _ := h.client(t)
	finfo, err := fresh.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if finfo.GetPid() == info.GetPid() {
		t.Errorf("new connection reached the reaped instance's pid %d", finfo.GetPid())
	}
	if n := h.rt.starts(); n != 2 {
		t.Errorf("runtime started %d instances, want 2", n)
	}
}

// Done when 6, case B22: a quiet open stream is activity, however long; the idle
// clock starts when it closes.
func TestQuietOpenStreamKeepsItsInstanceAliveUntilItCloses(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := startGateway(t, options{idle: idle})
	ctx := testCtx(t, time.Minute)
	c, _ := h.client(t)

	wctx, closeWatch := context.WithCancel(ctx)
	defer closeWatch()
	w, err := c.Watch(wctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := w.Recv(); err != nil || v.GetValue() != 0 {
		t.Fatalf("first Watch value: %v, %v", v, err)
	}
	s := h.onlySession(t)

	// Several idle timeouts and reaper ticks with nothing moving on the stream.
	quiet := time.NewTimer(5 * idle)
	select {
	case <-s.Done():
		t.Fatalf("instance reaped while a stream was open on it: %v", s.Err())
	case <-quiet.C:
	}
	if v, err := c.Increment(ctx, &examplepb.IncrementRequest{}); err != nil || v.GetValue() != 1 {
		t.Fatalf("Increment after the quiet period: %v, %v", v, err)
	}
	if v, err := w.Recv(); err != nil || v.GetValue() != 1 {
		t.Fatalf("Watch after the quiet period: %v, %v", v, err)
	}

	closedAt := time.Now()
	closeWatch()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Watch after cancel: %v", err)
	}
	waitClosed(t, ctx, s.Done(), "the session to be reaped once its stream closed")
	if after := time.Since(closedAt); after < idle {
		t.Errorf("reaped %v after its last stream closed, before its idle timeout %v", after, idle)
	}
	waitClosed(t, ctx, s.Instance.Done(), "the reaped instance's process to exit")
}

// Case B23: HTTP/2 PINGs are not activity. grpc-go will not ping more often than
// every 10s, so a raw HTTP/2 client pings every 20ms after one real call.
func TestConnectionWithOnlyPingsDoesNotKeepItsInstanceAlive(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := startGateway(t, options{idle: idle})
	ctx := testCtx(t, time.Minute)
	r := dialRaw(t, h.addr)

	callStart := time.Now()
	st := r.call(1, grpcHeaders("/tether.example.v1.Session/Increment"), &examplepb.IncrementRequest{Delta: 1}).wait(t, ctx)
	if code, msg := st.status(); code != "0" {
		t.Fatalf("the real call: grpc-status %q %q: %v", code, msg, st)
	}
	if _, ok := field(st.headers[0], "x-tether-session"); !ok {
		t.Errorf("first response has no x-tether-session: %v", st)
	}
	s := h.onlySession(t)

	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			select {
			case <-tick.C:
				if r.ping(n) != nil {
					return
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-pinged }()

	waitClosed(t, ctx, s.Done(), "the session with only PINGs to be reaped")
	if after := time.Since(callStart); after < idle {
		t.Errorf("reaped %v after its only call began, before its idle timeout %v", after, idle)
	}
	select {
	case ga := <-r.goAway:
		if !strings.Contains(ga.debug, "idle") {
			t.Errorf("GOAWAY debug data %q does not say why", ga.debug)
		}
	case <-ctx.Done():
		t.Fatal("no GOAWAY on the pinging connection after its instance was reaped")
	}
	if n := r.pingAcks.Load(); n < 5 {
		t.Errorf("only %d PINGs were acknowledged: the connection was not kept busy with PINGs", n)
	}
	waitClosed(t, ctx, s.Instance.Done(), "the reaped instance's process to exit")
}

// Case B23 (health-check variant): with health checks configured as not being
// activity, a client that only probes does not keep its instance alive.
func TestHealthChecksAloneDoNotKeepAnInstanceAlive(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := startGateway(t, options{idle: idle, idleIgnore: []string{"/grpc.health.v1.Health/Check"}})
	ctx := testCtx(t, time.Minute)
	cc := h.dial(t)

	callStart := time.Now()
	if _, err := examplepb.NewSessionClient(cc).Increment(ctx, &examplepb.IncrementRequest{}); err != nil {
		t.Fatal(err)
	}
	s := h.onlySession(t)

	stop := make(chan struct{})
	probed := make(chan int)
	go func() {
		ok := 0
		defer func() { probed <- ok }()
		hc := healthpb.NewHealthClient(cc)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			select {
			case <-s.Done():
				return // after the reap, a probe would open a new session
			default:
			}
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
				ok++
			}
		}
	}()
	waitClosed(t, ctx, s.Done(), "the session with only health checks to be reaped")
	close(stop)
	if n := <-probed; n < 5 {
		t.Errorf("only %d health checks succeeded: the session was not kept busy with them", n)
	}
	if after := time.Since(callStart); after < idle {
		t.Errorf("reaped %v after its only real call began, before its idle timeout %v", after, idle)
	}
	waitClosed(t, ctx, s.Instance.Done(), "the reaped instance's process to exit")
}

// The session token reaches the client even when the first response is an
// error from the instance (a Trailers-Only reply), and it re-attaches.
func TestSessionTokenIsDeliveredWhenTheFirstCallFails(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	cc := h.dial(t)

	var header, trailer metadata.MD
	err := cc.Invoke(ctx, "/tether.example.v1.Session/Nope", &examplepb.InfoRequest{}, new(examplepb.InfoResponse),
		grpc.Header(&header), grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("first call: got %v, want UNIMPLEMENTED from the instance", err)
	}
	tokens := append(header.Get("x-tether-session"), trailer.Get("x-tether-session")...)
	if len(tokens) != 1 {
		t.Fatalf("x-tether-session in headers %v and trailers %v; want it exactly once", header, trailer)
	}
	info, err := examplepb.NewSessionClient(cc).Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	back, _ := h.client(t)
	binfo, err := back.Info(withMD(ctx, "x-tether-session", tokens[0]), &examplepb.InfoRequest{})
	if err != nil || binfo.GetPid() != info.GetPid() {
		t.Fatalf("re-attach with the token from a failed first call: %v, %v; want pid %d", binfo, err, info.GetPid())
	}
}

// A client that sends its token on every call must never reach another
// session's instance through a connection pinned elsewhere: its own token goes
// through, another live session's token is FAILED_PRECONDITION, an unknown one
// NOT_FOUND, and the pinned instance's state is untouched by the refused calls.
func TestTokenOnAPinnedConnectionMustBeItsOwn(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, time.Minute)
	a, _ := h.client(t)
	b, _ := h.client(t)
	var ma, mb metadata.MD
	if _, err := a.Increment(ctx, &examplepb.IncrementRequest{Delta: 1}, grpc.Header(&ma)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Increment(ctx, &examplepb.IncrementRequest{Delta: 100}, grpc.Header(&mb)); err != nil {
		t.Fatal(err)
	}
	tokenA, tokenB := one(t, ma, "x-tether-session"), one(t, mb, "x-tether-session")

	v, err := a.Increment(withMD(ctx, "x-tether-session", tokenA), &examplepb.IncrementRequest{Delta: 1})
	if err != nil || v.GetValue() != 2 {
		t.Fatalf("own token on the pinned connection: %v, %v; want 2", v, err)
	}
	_, err = a.Increment(withMD(ctx, "x-tether-session", tokenB), &examplepb.IncrementRequest{Delta: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "pinned to another session") {
		t.Errorf("another session's token on a pinned connection: got %v, want FAILED_PRECONDITION", err)
	}
	_, err = a.Increment(withMD(ctx, "x-tether-session", "aaaaaaaaaaaaaaaa.bogus"), &examplepb.IncrementRequest{Delta: 1})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown token on a pinned connection: got %v, want NOT_FOUND", err)
	}
	if v, err := a.Increment(ctx, &examplepb.IncrementRequest{Delta: 1}); err != nil || v.GetValue() != 3 {
		t.Errorf("pinned instance after refused calls: %v, %v; want 3", v, err)
	}
	if v, err := b.Increment(ctx, &examplepb.IncrementRequest{Delta: 1}); err != nil || v.GetValue() != 101 {
		t.Errorf("the other session's instance: %v, %v; want 101 (untouched until now)", v, err)
	}
}
