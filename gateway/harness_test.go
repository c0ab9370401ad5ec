package gateway_test

// The end-to-end harness: a real gateway.Server on a loopback port, a real
// session.Manager over a real local.Runtime that runs the example server as one
// process per session, a real reaper when a test asks for one, and real grpc-go
// clients. Every test leaves no process and no goroutine behind.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
	"github.com/tetherhq/tether/activator/local"
	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/reaper"
)

// helperEnv in an instance's environment makes the test binary run a helper
// backend instead of the tests (see helperMain).
const helperEnv = "TETHER_GATEWAY_TEST_HELPER"

// exampleBin is the example server, built once by TestMain.
var exampleBin string

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(helperMain(role, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "tether-gateway-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleBin = filepath.Join(dir, "tether-example")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", exampleBin,
		"github.com/tetherhq/tether/cmd/tether-example").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building tether-example: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// options configure one gateway.
type options struct {
	// args are extra flags for the example server, after -listen.
	args []string
	// command replaces the whole instance command line (TETHER_LOCAL_COMMAND).
	command string
	// helper runs the test binary in this helper role as the instance instead.
	helper string
	// activation is TETHER_ACTIVATION_TIMEOUT; 0 means 30s.
	activation time.Duration
	// idle is the sessions' idle timeout. When set, a reaper runs every 50ms.
	idle time.Duration
	// maxLifetime is TETHER_MAX_LIFETIME. When set, a reaper runs every 50ms.
	maxLifetime time.Duration
	// idleIgnore are methods whose calls are not activity (TETHER_IDLE_IGNORE_METHODS).
	idleIgnore []string
	// tls serves TLS instead of h2c.
	tls *tls.Config
	// handshake is the gateway's HandshakeTimeout; 0 means 5s.
	handshake time.Duration
	// listener, if set, wraps the gateway's listener.
	listener func(net.Listener) net.Listener
}

// harness is one running gateway and everything behind it.
type harness struct {
	t    *testing.T
	addr string
	gw   *gateway.Server
	mgr  *session.Manager
	rt   *countingRuntime
	log  *lockedBuffer
}

const reapInterval = 50 * time.Millisecond

func testBounds(idle time.Duration) hints.Bounds {
	if idle == 0 {
		idle = 10 * time.Minute
	}
	return hints.Bounds{
		DefaultCPU: resource.MustParse("500m"), MinCPU: resource.MustParse("1m"), MaxCPU: resource.MustParse("4"),
		DefaultMemory: resource.MustParse("512Mi"), MinMemory: resource.MustParse("1Mi"), MaxMemory: resource.MustParse("8Gi"),
		DefaultIdle: idle, MinIdle: min(idle, 50*time.Millisecond), MaxIdle: 24 * time.Hour,
	}
}

// shellQuote quotes s as one word for the local runtime's command splitting.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// startGateway starts a gateway as o says. Cleanup shuts it down, closes the
// session table and the runtime, and fails the test if any instance process
// it ever started is still running.
func startGateway(t *testing.T, o options) *harness {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	command := o.command
	env := []string{"PATH=" + os.Getenv("PATH")}
	switch {
	case o.helper != "":
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		command = shellQuote(exe) + " -listen 127.0.0.1:{port} " + strings.Join(o.args, " ")
		env = append(os.Environ(), helperEnv+"="+o.helper)
	case command == "":
		command = shellQuote(exampleBin) + " -listen 127.0.0.1:{port} " + strings.Join(o.args, " ")
	}
	lrt, err := local.New(local.Config{Command: command, StopGrace: 3 * time.Second, Env: env},
		log.With("component", "local"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &countingRuntime{rt: lrt, calls: make(chan *startCall, 256)}
	activation := o.activation
	if activation == 0 {
		activation = 30 * time.Second
	}
	mgr := session.New(rt, session.Config{ActivationTimeout: activation, StopTimeout: 10 * time.Second,
		Log: log.With("component", "session")})
	b := testBounds(o.idle)
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	var ignore map[string]bool
	for _, m := range o.idleIgnore {
		if ignore == nil {
			ignore = map[string]bool{}
		}
		ignore[m] = true
	}
	handshake := o.handshake
	if handshake == 0 {
		handshake = 5 * time.Second
	}
	gw := gateway.New(gateway.Config{TLS: o.tls, Bounds: b, HandshakeTimeout: handshake,
		IdleIgnore: ignore, Log: log.With("component", "gateway")}, mgr)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.listener != nil {
		lis = o.listener(lis)
	}
	served := make(chan error, 1)
	go func() { served <- gw.Serve(lis) }()

	stopReaper := func() {}
	if o.idle > 0 || o.maxLifetime > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		reaped := make(chan struct{})
		go func() {
			defer close(reaped)
			reaper.New(mgr, reaper.Config{Interval: reapInterval, MaxLifetime: o.maxLifetime,
				Log: log.With("component", "reaper")}).Run(rctx)
		}()
		stopReaper = func() { cancel(); <-reaped }
	}

	h := &harness{t: t, addr: lis.Addr().String(), gw: gw, mgr: mgr, rt: rt, log: logs}
	t.Cleanup(func() {
		if err := h.shutdown(3 * time.Second); err != nil {
			t.Errorf("gateway shutdown: %v (streams left open at the end of the test)", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-ctx.Done():
			t.Error("Serve did not return after Shutdown")
		}
		stopReaper()
		// A stuck gateway can block Close before it looks at its context; the
		// runtime is closed regardless, so that no process outlives the test.
		if err := bounded(10*time.Second, func() error { return mgr.Close(ctx, "test over") }); err != nil {
			t.Errorf("closing the session manager: %v", err)
		}
		lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer lcancel()
		if err := lrt.Close(lctx); err != nil {
			t.Errorf("closing the runtime: %v", err)
		}
		if err := rt.waitAll(lctx); err != nil {
			t.Errorf("runtime Start calls still running: %v", err)
		}
		for _, pid := range rt.pids() {
			if alive(pid) {
				t.Errorf("instance process %d is still running after cleanup", pid)
			}
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	return h
}

// shutdown drains the gateway with the given grace. Server.Shutdown waits for
// every connection's goroutine whatever its context says, so a connection that
// never finishes would hang the test: that is reported as an error instead.
func (h *harness) shutdown(grace time.Duration) error {
	err := bounded(grace+10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		return h.gw.Shutdown(ctx)
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("Shutdown with a grace of %v: %w: a client connection is stuck", grace, err)
	}
	return err
}

// bounded runs f, and gives up waiting for it after d.
func bounded(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("still running after %v", d)
	}
}

// dial returns a grpc-go client connection to the gateway, closed at cleanup
// (before the gateway stops).
func (h *harness) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+h.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// client dials a new connection and returns the example client on it.
func (h *harness) client(t *testing.T, opts ...grpc.DialOption) (examplepb.SessionClient, *grpc.ClientConn) {
	cc := h.dial(t, opts...)
	return examplepb.NewSessionClient(cc), cc
}

// onlySession returns the single live session.
func (h *harness) onlySession(t *testing.T) *session.Session {
	t.Helper()
	ss := h.mgr.Sessions()
	if len(ss) != 1 {
		t.Fatalf("want exactly 1 live session, have %d", len(ss))
	}
	return ss[0]
}

// testCtx bounds a test; every wait in it selects on this context.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// noDeadline is a context that gRPC sends without grpc-timeout, cancelled only as
// a backstop so that a hang cannot outlive the test.
func noDeadline(t *testing.T, backstop time.Duration) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	stop := time.AfterFunc(backstop, cancel)
	t.Cleanup(func() { stop.Stop(); cancel() })
	return ctx
}

// waitClosed waits for c to be closed, or fails the test when ctx ends.
func waitClosed(t *testing.T, ctx context.Context, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
	}
}

// withMD returns ctx carrying metadata, such as the x-tether-* hints.
func withMD(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// countingRuntime wraps the real local runtime to count Start calls and to learn
// the pid of every process it starts, including those that never became ready.
type countingRuntime struct {
	rt    *local.Runtime
	calls chan *startCall

	mu  sync.Mutex
	all []*startCall
}

// startCall is one call to Start.
type startCall struct {
	done chan struct{} // closed when Start has returned
	inst activator.Instance
	err  error
	pid  atomic.Int64
}

func (c *countingRuntime) Start(ctx context.Context, spec activator.Spec) (activator.Instance, error) {
	sc := &startCall{done: make(chan struct{})}
	c.mu.Lock()
	c.all = append(c.all, sc)
	c.mu.Unlock()
	select {
	case c.calls <- sc:
	default:
		panic("more Start calls than the test harness can record")
	}
	observe := spec.Observe
	spec.Observe = func(p activator.Phase, detail string) {
		if p == activator.PhaseStarted {
			if s, ok := strings.CutPrefix(detail, "pid "); ok {
				if pid, err := strconv.Atoi(s); err == nil {
					sc.pid.Store(int64(pid))
				}
			}
		}
		if observe != nil {
			observe(p, detail)
		}
	}
	// The local runtime guarantees that a failed Start has reaped its process.
	sc.inst, sc.err = c.rt.Start(ctx, spec)
	close(sc.done)
	return sc.inst, sc.err
}

func (c *countingRuntime) Stop(ctx context.Context, inst activator.Instance, reason string) error {
	return c.rt.Stop(ctx, inst, reason)
}

// starts is how many times Start was called.
func (c *countingRuntime) starts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all)
}

// pids lists every process any Start call started.
func (c *countingRuntime) pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, sc := range c.all {
		if p := sc.pid.Load(); p > 0 {
			out = append(out, int(p))
		}
	}
	return out
}

// waitAll waits until every Start call so far has returned.
func (c *countingRuntime) waitAll(ctx context.Context) error {
	c.mu.Lock()
	all := append([]*startCall(nil), c.all...)
	c.mu.Unlock()
	for _, sc := range all {
		select {
		case <-sc.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// nextStart waits for the next Start call.
func (c *countingRuntime) nextStart(t *testing.T, ctx context.Context) *startCall {
	t.Helper()
	select {
	case sc := <-c.calls:
		return sc
	case <-ctx.Done():
		t.Fatal("timed out waiting for the runtime to be asked for an instance")
		return nil
	}
}

// alive reports whether process pid exists. The local runtime reaps its
// children, so an instance that has gone is not even a zombie.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// lockedBuffer collects log output from any goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether-gateway-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// helperMain runs the test binary as an instance:
//
//	deadline -listen addr [-startup-delay d]
//	    a gRPC server that answers every method with status OK and headers
//	    telling what it was given: x-deadline-unix-nano (or "none") and
//	    x-seen-headers, the names of the request's metadata. It also tries to
//	    set x-tether-instance in its headers and x-tether-session in its
//	    trailers, which only the gateway may set.
func helperMain(role string, args []string) int {
	switch role {
	case "deadline":
		if err := deadlineServer(args); err != nil {
			fmt.Fprintln(os.Stderr, "deadline helper:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

func deadlineServer(args []string) error {
	fs := flag.NewFlagSet("deadline", flag.ContinueOnError)
	listen := fs.String("listen", "", "address")
	delay := fs.Duration("startup-delay", 0, "wait this long before listening")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *delay > 0 {
		t := time.NewTimer(*delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		v := "none"
		if d, ok := ss.Context().Deadline(); ok {
			v = strconv.FormatInt(d.UnixNano(), 10)
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		seen := slices.Sorted(maps.Keys(md))
		ss.SetTrailer(metadata.Pairs("x-tether-session", "set-by-the-instance"))
		return ss.SendHeader(metadata.Pairs("x-deadline-unix-nano", v,
			"x-seen-headers", strings.Join(seen, ","),
			"x-tether-instance", "set-by-the-instance"))
	}))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		srv.Stop()
		<-served
		return nil
	}
}
