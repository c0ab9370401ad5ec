package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// running is a gateway started in process by run, with its log lines.
type running struct {
	addrs
	stop  context.CancelFunc
	done  chan error
	lines chan string // log messages, in order
}

func start(t *testing.T, extra map[string]string) *running {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &running{stop: stop, done: make(chan error, 1), lines: make(chan string, 1024)}
	ready := make(chan addrs, 1)
	go func() {
		err := run(ctx, nil, testEnv(extra), io.Discard, pw, ready)
		pw.Close()
		r.done <- err
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var rec struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				select {
				case r.lines <- rec.Msg:
				default:
				}
			}
		}
		close(r.lines)
	}()
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := <-r.done; err != nil {
			t.Error(err)
		}
	})
	return r
}

// waitLog waits for a log message.
func (r *running) waitLog(t *testing.T, ctx context.Context, msg string) {
	t.Helper()
	for {
		select {
		case m, ok := <-r.lines:
			if !ok {
				t.Fatalf("the gateway stopped before logging %q", msg)
			}
			if m == msg {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no log %q", msg)
		}
	}
}

func (r *running) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + r.admin.String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (r *running) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := r.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value is a metric's value where its labels match.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestMetricsAfterScriptedRun checks /metrics, parsed with the Prometheus text
// parser, after activations that succeed, fail and get reaped (issue 6, done-when 1).
func TestMetricsAfterScriptedRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := start(t, map[string]string{
		"TETHER_MAX_INSTANCES":    "2",
		"TETHER_IDLE_TIMEOUT":     "300ms",
		"TETHER_MIN_IDLE_TIMEOUT": "100ms",
		"TETHER_REAP_INTERVAL":    "50ms",
	})
	hinted := metadata.AppendToOutgoingContext(ctx, "x-tether-cpu", "100m")

	var conns []*grpc.ClientConn
	for range 2 {
		cc := dialGRPC(t, g.gateway.String())
		if _, err := examplepb.NewSessionClient(cc).Increment(hinted, &examplepb.IncrementRequest{Delta: 1}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cc)
	}
	// A third is over TETHER_MAX_INSTANCES while the two live.
	_, err := examplepb.NewSessionClient(dialGRPC(t, g.gateway.String())).Increment(hinted, &examplepb.IncrementRequest{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the cap: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "x-tether-cpu", "banana")
	if _, err := examplepb.NewSessionClient(dialGRPC(t, g.gateway.String())).Increment(bad, &examplepb.IncrementRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad hint: %v", err)
	}

	mfs := g.metrics(t)
	check := func(want float64, name string, labels ...string) {
		t.Helper()
		if got := value(t, mfs, name, labels...); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
	check(2, "tether_activations_total", "result", "ok")
	check(1, "tether_activations_total", "result", "resource_exhausted")
	check(1, "tether_proxy_errors_total", "code", "resource_exhausted")
	check(1, "tether_proxy_errors_total", "code", "invalid_argument")
	for _, phase := range []string{"requested", "scheduled", "started", "ready", "forwarded"} {
		check(2, "tether_activation_phase_duration_seconds", "phase", phase)
	}
	check(2, "tether_instances", "state", "serving")
	check(2, "tether_sessions", "state", "idle")
	if v := value(t, mfs, "tether_bytes_total", "direction", "to_instance"); v <= 0 {
		t.Errorf("no bytes counted to instances")
	}
	if mfs["go_goroutines"] == nil || mfs["process_resident_memory_bytes"] == nil {
		t.Error("no Go runtime or process metrics")
	}

	// Both sessions are idle: the reaper ends them, and their clients see GOAWAY.
	for _, cc := range conns {
		for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				t.Fatal("session not reaped")
			}
		}
	}
	mfs = g.metrics(t)
	check(2, "tether_sessions_ended_total", "reason", "idle")
	check(0, "tether_instances", "state", "serving")
}

// TestDrain is issue 6's drain order: /readyz fails at once on SIGTERM, a stream
// open during the drain completes within the grace period, and new connections
// are refused once the drain delay has passed.
func TestDrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := start(t, map[string]string{"TETHER_DRAIN_DELAY": "300ms", "TETHER_SHUTDOWN_GRACE": "20s"})
	if code, _ := g.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before drain: %d", code)
	}
	cc := dialGRPC(t, g.gateway.String())
	bidi, err := examplepb.NewSessionClient(cc).Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bidi.Send(&examplepb.IncrementRequest{Delta: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); err != nil {
		t.Fatal(err)
	}

	g.stop() // what SIGTERM does
	g.waitLog(t, ctx, "draining")
	if code, body := g.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "draining") {
		t.Fatalf("/readyz while draining: %d %s", code, body)
	}
	g.waitLog(t, ctx, "refusing new connections; open streams may finish")
	if c, err := net.DialTimeout("tcp", g.gateway.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the drain delay")
	}
	// The stream that was open goes on and ends cleanly.
	if err := bidi.Send(&examplepb.IncrementRequest{Delta: 1}); err != nil {
		t.Fatal(err)
	}
	if r, err := bidi.Recv(); err != nil || r.GetValue() != 2 {
		t.Fatalf("stream during drain: %v %v", r, err)
	}
	bidi.CloseSend()
	if _, err := bidi.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
}

// TestColdStartHeadersAddUp checks the activating call's phase breakdown adds up,
// within 5 ms, to the wait the client measured (issue 6, done-when 3).
func TestColdStartHeadersAddUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := start(t, nil)
	cc := dialGRPC(t, g.gateway.String())
	// The wait is the call's: the connection is up before the clock starts, as
	// the gateway's own clock starts at the request, not at the TCP handshake.
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatal("no connection to the gateway")
		}
	}
	var header metadata.MD
	began := time.Now()
	if _, err := examplepb.NewSessionClient(cc).Info(ctx, &examplepb.InfoRequest{}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	measured := time.Since(began)
	phases := header.Get("x-tether-phases")
	cold := header.Get("x-tether-cold-start")
	if len(phases) != 1 || len(cold) != 1 || len(header.Get("x-tether-instance")) != 1 {
		t.Fatalf("headers %v", header)
	}
	var sum time.Duration
	re := regexp.MustCompile(`(\w+);dur=([0-9.]+)`)
	var names []string
	for _, m := range re.FindAllStringSubmatch(phases[0], -1) {
		ms, _ := strconv.ParseFloat(m[2], 64)
		sum += time.Duration(ms * float64(time.Millisecond))
		names = append(names, m[1])
	}
	if strings.Join(names, ",") != "requested,scheduled,started,ready,forwarded" {
		t.Fatalf("phases %q", phases[0])
	}
	if d := measured - sum; d < 0 || d > 5*time.Millisecond {
		t.Fatalf("phases add up to %s, the client waited %s", sum, measured)
	}
	if c, err := time.ParseDuration(cold[0]); err != nil || (c-sum).Abs() > time.Millisecond {
		t.Fatalf("x-tether-cold-start %s vs phases %s", cold[0], sum)
	}
}

// TestSessionsCommand runs `tether sessions` against a running gateway.
func TestSessionsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := start(t, nil)
	cc := dialGRPC(t, g.gateway.String())
	var header metadata.MD
	hinted := metadata.AppendToOutgoingContext(ctx, "x-tether-cpu", "300m")
	if _, err := examplepb.NewSessionClient(cc).Increment(hinted, &examplepb.IncrementRequest{}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(header.Get("x-tether-session")[0], ".")
	instance := header.Get("x-tether-instance")[0]

	var out bytes.Buffer
	if err := run(ctx, []string{"sessions", "-addr", g.admin.String()}, map[string]string{}, &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"ID", "IDENTITY", id, instance, "300m/300m"} {
		if !strings.Contains(table, want) {
			t.Errorf("`tether sessions` lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, header.Get("x-tether-session")[0]) {
		t.Fatal("`tether sessions` shows a token")
	}
}

// TestREADMEDocumentsMetricsAndEndpoints keeps the README's operations section in
// step with what /metrics serves.
func TestREADMEDocumentsMetricsAndEndpoints(t *testing.T) {
	g := start(t, nil)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range g.metrics(t) {
		if strings.HasPrefix(name, "tether_") && !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("metric %s is not in the README", name)
		}
	}
	for _, ep := range []string{"/metrics", "/healthz", "/readyz", "/sessions", "tether sessions"} {
		if !strings.Contains(string(readme), "`"+ep) {
			t.Errorf("%s is not in the README", ep)
		}
	}
}
