package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// instance is one run() serving on a loopback port, with a client connected to it.
type instance struct {
	t      *testing.T
	client examplepb.SessionClient
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	ran    chan error
	logged chan struct{}
	once   sync.Once
}

// start runs the server in-process with env as its whole environment and returns once
// it logs that it is serving. The address comes from that log line, which the gateway
// never needs but an operator reads, so the test pins it too.
func start(t *testing.T, env map[string]string, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	inst := &instance{t: t, cancel: cancel, ran: make(chan error, 1), logged: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		defer close(inst.logged)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			t.Log(sc.Text())
			if addr, ok := servingAddr(sc.Text()); ok {
				addrc <- addr
			}
		}
		// Keep draining so that run never blocks on a log write.
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		args := append([]string{"-listen", "127.0.0.1:0"}, args...)
		err := run(ctx, args, func(k string) string { return env[k] }, pw)
		pw.Close()
		inst.ran <- err
	}()

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-inst.ran:
		<-inst.logged
		t.Fatalf("run returned before serving: %v", err)
	case <-deadline.C:
		inst.stop()
		t.Fatal("server did not log that it is serving")
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		inst.stop()
		t.Fatal(err)
	}
	inst.conn = conn
	inst.client = examplepb.NewSessionClient(conn)
	t.Cleanup(inst.stop)
	return inst
}

// stop closes the client, then stops the server.
func (i *instance) stop() {
	if i.conn != nil {
		i.conn.Close()
	}
	i.stopServer()
}

// stopServer cancels run and checks that it returns nil well before the drain timer,
// which would mean a call held up the drain.
func (i *instance) stopServer() {
	i.once.Do(func() {
		i.cancel()
		timer := time.NewTimer(drainTimeout / 2)
		defer timer.Stop()
		select {
		case err := <-i.ran:
			if err != nil {
				i.t.Errorf("run: %v", err)
			}
		case <-timer.C:
			i.t.Errorf("run did not return within %v of cancel", drainTimeout/2)
			<-i.ran
		}
		<-i.logged
	})
}

func servingAddr(line string) (string, bool) {
	fields := strings.Fields(line)
	if !slices.Contains(fields, "msg=serving") {
		return "", false
	}
	for _, f := range fields {
		if addr, ok := strings.CutPrefix(f, "addr="); ok {
			return addr, true
		}
	}
	return "", false
}

func rpcContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestIncrementCountsFromOne(t *testing.T) {
	t.Parallel()
	c, ctx := start(t, nil).client, rpcContext(t)
	for want := int64(1); want <= 5; want++ {
		got, err := c.Increment(ctx, &examplepb.IncrementRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetValue() != want {
			t.Fatalf("Increment = %d, want %d", got.GetValue(), want)
		}
	}
	got, err := c.Increment(ctx, &examplepb.IncrementRequest{Delta: -7})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetValue() != -2 {
		t.Fatalf("Increment(-7) = %d, want -2", got.GetValue())
	}
}

func TestPutGet(t *testing.T) {
	t.Parallel()
	c, ctx := start(t, nil).client, rpcContext(t)
	get := func(key string) *examplepb.GetResponse {
		t.Helper()
		r, err := c.Get(ctx, &examplepb.GetRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	put := func(key, value string) {
		t.Helper()
		if _, err := c.Put(ctx, &examplepb.PutRequest{Key: key, Value: value}); err != nil {
			t.Fatal(err)
		}
	}

	if r := get("a"); r.GetFound() {
		t.Fatalf("Get(a) before Put = %v, want not found", r)
	}
	put("a", "1")
	put("empty", "")
	if r := get("a"); !r.GetFound() || r.GetValue() != "1" {
		t.Fatalf("Get(a) = %v, want 1", r)
	}
	if r := get("empty"); !r.GetFound() || r.GetValue() != "" {
		t.Fatalf("Get(empty) = %v, want found and empty", r)
	}
	put("a", "2")
	if r := get("a"); r.GetValue() != "2" {
		t.Fatalf("Get(a) after overwrite = %v, want 2", r)
	}
}

func TestInfoReportsEnvAndTimes(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"TETHER_SESSION":        "s-123",
		"TETHER_CPU_REQUEST":    "250m",
		"TETHER_CPU_LIMIT":      "1",
		"TETHER_MEMORY_REQUEST": "256Mi",
		"TETHER_MEMORY_LIMIT":   "1Gi",
	}
	inst := start(t, env)
	ctx := rpcContext(t)

	// A probe first: it must not count as the first call.
	hr, err := healthpb.NewHealthClient(inst.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check = %v, %v", hr, err)
	}
	before := time.Now().UnixNano()
	info, err := inst.client.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixNano()

	host, _ := os.Hostname()
	want := &examplepb.InfoResponse{
		Instance:      fmt.Sprintf("%s/%d", host, os.Getpid()),
		Hostname:      host,
		Pid:           int64(os.Getpid()),
		Session:       "s-123",
		CpuRequest:    "250m",
		CpuLimit:      "1",
		MemoryRequest: "256Mi",
		MemoryLimit:   "1Gi",
		Calls:         1,
	}
	got := &examplepb.InfoResponse{
		Instance: info.GetInstance(), Hostname: info.GetHostname(), Pid: info.GetPid(),
		Session: info.GetSession(), CpuRequest: info.GetCpuRequest(), CpuLimit: info.GetCpuLimit(),
		MemoryRequest: info.GetMemoryRequest(), MemoryLimit: info.GetMemoryLimit(), Calls: info.GetCalls(),
	}
	if got.String() != want.String() {
		t.Errorf("Info = %v\nwant   %v", got, want)
	}
	started, ready, first := info.GetStartedUnixNano(), info.GetReadyUnixNano(), info.GetFirstCallUnixNano()
	if !(started > 0 && started <= ready && ready <= before && before <= first && first <= after) {
		t.Errorf("want started <= ready <= first call within [%d, %d]; got started %d, ready %d, first call %d",
			before, after, started, ready, first)
	}

	if _, err := inst.client.Increment(ctx, &examplepb.IncrementRequest{}); err != nil {
		t.Fatal(err)
	}
	info2, err := inst.client.Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info2.GetCalls() != 3 || info2.GetFirstCallUnixNano() != first {
		t.Errorf("second Info: calls %d, first call %d; want 3, %d", info2.GetCalls(), info2.GetFirstCallUnixNano(), first)
	}
}

func TestStartupDelayPostponesReady(t *testing.T) {
	t.Parallel()
	const delay = 100 * time.Millisecond
	before := time.Now()
	inst := start(t, nil, "-startup-delay", delay.String())
	info, err := inst.client.Info(rpcContext(t), &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Duration(info.GetReadyUnixNano() - before.UnixNano()); waited < delay {
		t.Errorf("ready %v after start, want at least %v", waited, delay)
	}
}

// A stop during the startup delay must not wait the delay out: the gateway may give
// up on a slow instance and stop it at once.
func TestCancelDuringStartupDelay(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var log bytes.Buffer
	if err := run(ctx, []string{"-listen", "127.0.0.1:0", "-startup-delay", "1h"}, func(string) string { return "" }, &log); err != nil {
		t.Fatalf("run = %v, want nil", err)
	}
	if strings.Contains(log.String(), "msg=serving") {
		t.Errorf("served after cancel: %s", log.String())
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	c := start(t, nil).client
	ctx, cancel := context.WithCancel(rpcContext(t))
	defer cancel()
	w, err := c.Watch(ctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func(want int64) {
		t.Helper()
		got, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.GetValue() != want {
			t.Fatalf("Watch sent %d, want %d", got.GetValue(), want)
		}
	}

	recv(0)
	// Calls that leave the counter alone must not wake the stream: if they did, the
	// next message would repeat 0.
	if _, err := c.Put(ctx, &examplepb.PutRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Increment(ctx, &examplepb.IncrementRequest{}); err != nil {
		t.Fatal(err)
	}
	recv(1)
	if _, err := c.Increment(ctx, &examplepb.IncrementRequest{Delta: 4}); err != nil {
		t.Fatal(err)
	}
	recv(5)

	cancel()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v, want Canceled", err)
	}
	// The server side ends too: stop (in cleanup) fails if the handler holds up the
	// drain, and goleak fails if it never returns.
}

func TestWatchEndsWhenServerStops(t *testing.T) {
	t.Parallel()
	inst := start(t, nil)
	w, err := inst.client.Watch(rpcContext(t), &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	// Keep the client connected, so that only the server can end the stream.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		inst.stopServer()
	}()
	_, err = w.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "server is stopping" {
		t.Errorf("Recv during shutdown = %v, want Unavailable: server is stopping", err)
	}
	<-stopped
}

func TestAccumulate(t *testing.T) {
	t.Parallel()
	c, ctx := start(t, nil).client, rpcContext(t)
	s, err := c.Accumulate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []int64{1, 2, 3, 0} {
		if err := s.Send(&examplepb.IncrementRequest{Delta: d}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got.GetValue() != 7 {
		t.Fatalf("Accumulate(1, 2, 3, 0) = %d, want 7", got.GetValue())
	}
}

func TestExchange(t *testing.T) {
	t.Parallel()
	c, ctx := start(t, nil).client, rpcContext(t)
	s, err := c.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ delta, want int64 }{{0, 1}, {2, 3}, {-10, -7}} {
		if err := s.Send(&examplepb.IncrementRequest{Delta: step.delta}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.GetValue() != step.want {
			t.Fatalf("Exchange(%d) = %d, want %d", step.delta, got.GetValue(), step.want)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("Recv after CloseSend = %v, want EOF", err)
	}
}

func TestHealthServing(t *testing.T) {
	t.Parallel()
	inst := start(t, nil)
	h := healthpb.NewHealthClient(inst.conn)
	for _, svc := range []string{"", "tether.example.v1.Session"} {
		r, err := h.Check(rpcContext(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", svc, r.GetStatus())
		}
	}
}

func TestReflectionListsSession(t *testing.T) {
	t.Parallel()
	inst := start(t, nil)
	s, err := reflectionpb.NewServerReflectionClient(inst.conn).ServerReflectionInfo(rpcContext(t))
	if err != nil {
		t.Fatal(err)
	}
	req := &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range r.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	for _, want := range []string{"tether.example.v1.Session", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	env := func(k string) string { return map[string]string{"PORT": "6123"}[k] }
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, env, &out); err != nil {
		t.Errorf("run -h = %v, want nil", err)
	}
	if !strings.Contains(out.String(), `(default ":6123")`) {
		t.Errorf("-listen should default to :$PORT; usage was:\n%s", out.String())
	}
	for _, args := range [][]string{
		{"-bogus"},
		{"-listen", "127.0.0.1:0", "extra"},
		{"-listen", "127.0.0.1:notaport"},
	} {
		if err := run(t.Context(), args, env, io.Discard); err == nil {
			t.Errorf("run %q = nil, want an error", args)
		}
	}
}
