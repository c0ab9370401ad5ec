package kube_test

// The harness: one control plane and node agent for the package, a gateway
// process per scenario, a watch on each scenario's pods, and gRPC clients.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
	"github.com/tetherhq/tether/e2e/cluster"
	"github.com/tetherhq/tether/e2e/nodeagent"
)

const (
	exampleImage    = "tether-example:dev"
	testserverImage = "tether-testserver:dev"
	podPort         = 50051
	managedSelector = "app.kubernetes.io/managed-by=tether"
	labelSession    = "tether.dev/session"
	annoTokenHash   = "tether.dev/token-sha256"

	// gatewayStart bounds a gateway's start: build done, cluster up.
	gatewayStart = 30 * time.Second
	// gatewayIdle is the idle timeout of every scenario's gateway unless it says
	// otherwise. Short, because each scenario waits for its gateway to reap
	// every pod it made before it ends.
	gatewayIdle = 3 * time.Second
)

// env is what every scenario shares: the cluster, the agent, and the gateway's
// binary.
type env struct {
	cluster *cluster.Cluster
	agent   *nodeagent.Agent
	client  kubernetes.Interface
	tether  string
}

// podTemplate is the session pod every gateway starts unless a scenario says
// otherwise: the example server on the pod's own loopback address, probed over
// gRPC health, as a chart would configure it.
func podTemplate(image string, args ...string) string {
	if len(args) == 0 {
		args = []string{"-listen", fmt.Sprintf("$(POD_IP):%d", podPort)}
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: session
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: example
    image: %s
    args: [%s]
    env:
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    ports:
    - name: grpc
      containerPort: %d
    readinessProbe:
      grpc:
        port: %d
      periodSeconds: 1
`, image, strings.Join(quoted, ", "), podPort, podPort)
}

// gatewayOptions configure one gateway process.
type gatewayOptions struct {
	// template is the pod template's YAML; empty is podTemplate(exampleImage).
	template string
	// vars are TETHER_* settings on top of the scenario defaults.
	vars map[string]string
	// listen is TETHER_LISTEN; empty picks a free loopback port.
	listen string
}

// gateway is a tether process under test.
type gateway struct {
	t      *testing.T
	name   string
	ns     string
	addr   string // where it listens
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *logStream
}

// startGateway creates namespace ns if needed and runs the tether binary in it
// with TETHER_RUNTIME=kubernetes. It returns once the gateway logs that it
// listens. Cleanup stops it with SIGTERM, as a Deployment would.
func (e *env) startGateway(t *testing.T, ns string, o gatewayOptions) *gateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gatewayStart)
	defer cancel()
	if err := e.cluster.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	tmpl := o.template
	if tmpl == "" {
		tmpl = podTemplate(exampleImage)
	}
	dir := t.TempDir()
	tmplPath := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(tmplPath, []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := o.listen
	if listen == "" {
		listen = freeAddr(t)
	}
	vars := map[string]string{
		"TETHER_RUNTIME":          "kubernetes",
		"TETHER_NAMESPACE":        ns,
		"TETHER_POD_TEMPLATE":     tmplPath,
		"TETHER_LISTEN":           listen,
		"TETHER_LOG_FORMAT":       "json",
		"TETHER_IDLE_TIMEOUT":     gatewayIdle.String(),
		"TETHER_MIN_IDLE_TIMEOUT": "100ms",
		"TETHER_REAP_INTERVAL":    "100ms",
		"TETHER_DEFAULT_CPU":      "10m",
		"TETHER_DEFAULT_MEMORY":   "16Mi",
		"TETHER_SHUTDOWN_GRACE":   "2s",
		"TETHER_STOP_GRACE":       "2s",
		// Scenarios run side by side: each gateway's admin listener gets a port of
		// its own.
		"TETHER_METRICS_LISTEN": "127.0.0.1:0",
	}
	for k, v := range o.vars {
		vars[k] = v
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "KUBECONFIG=" + e.cluster.Kubeconfig()}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}

	g := &gateway{t: t, name: ns, ns: ns, exited: make(chan struct{}), logs: newLogStream()}
	logFile, err := os.Create(filepath.Join(dir, "tether.log"))
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(e.tether)
	g.cmd.Env = environ
	g.cmd.Stdout = logFile
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Its own process group, and SIGKILL should the test binary die first.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		g.logs.read(io.TeeReader(stderr, logFile))
	}()
	go func() {
		<-copied
		g.cmd.Wait()
		logFile.Close()
		close(g.exited)
	}()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			kept := filepath.Join(os.TempDir(), "tether-e2e-kube-"+g.name+".log")
			_ = os.WriteFile(kept, []byte(g.logs.tail(1<<30)+"\n"), 0o644)
			t.Logf("gateway %s log (last 60 lines; all of it in %s):\n%s", g.name, kept, g.logs.tail(60))
		}
	})

	line, err := g.logs.wait(ctx, g.exited, func(l logLine) bool { return l.msg() == "tether listening" })
	if err != nil {
		t.Fatalf("gateway %s did not start: %v\n%s", g.name, err, g.logs.tail(30))
	}
	g.addr = line.str("addr")
	return g
}

// kill ends the gateway with SIGKILL, as a node failure or an OOM kill would: it
// gets no chance to clean anything up.
func (g *gateway) kill() {
	g.t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		g.t.Fatal(err)
	}
	<-g.exited
}

// stop sends SIGTERM and waits, then SIGKILL if the gateway is still there after
// its drain. It signals only the gateway's own PID.
func (g *gateway) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-g.exited:
	case <-t.C:
		g.t.Errorf("gateway %s did not stop within 15s of SIGTERM", g.name)
		_ = g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.exited
	}
}

// waitLog waits for a log line that match accepts.
func (g *gateway) waitLog(ctx context.Context, match func(logLine) bool) logLine {
	g.t.Helper()
	l, err := g.logs.wait(ctx, g.exited, match)
	if err != nil {
		g.t.Fatalf("gateway %s: %v", g.name, err)
	}
	return l
}

// logLine is one JSON log line of the gateway.
type logLine map[string]any

func (l logLine) str(key string) string { s, _ := l[key].(string); return s }

// msg is the line's message.
func (l logLine) msg() string { return l.str("msg") }

// time is when the line was logged.
func (l logLine) time() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, l.str("time"))
	return t
}

// logStream collects a gateway's log lines and wakes whoever waits for one.
type logStream struct {
	mu      sync.Mutex
	lines   []logLine
	raw     []string
	changed chan struct{} // closed and replaced on every new line
}

func newLogStream() *logStream { return &logStream{changed: make(chan struct{})} }

func (s *logStream) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			l = logLine{"msg": sc.Text()}
		}
		s.mu.Lock()
		s.lines = append(s.lines, l)
		s.raw = append(s.raw, sc.Text())
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// wait returns the first line, past or future, that match accepts.
func (s *logStream) wait(ctx context.Context, exited <-chan struct{}, match func(logLine) bool) (logLine, error) {
	seen := 0
	for {
		s.mu.Lock()
		lines, changed := s.lines[seen:], s.changed
		seen = len(s.lines)
		s.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-exited:
			// Lines written before the exit may still be on their way.
			s.mu.Lock()
			rest := s.lines[seen:]
			s.mu.Unlock()
			for _, l := range rest {
				if match(l) {
					return l, nil
				}
			}
			return nil, errors.New("the gateway exited")
		case <-ctx.Done():
			return nil, fmt.Errorf("no such log line: %w", ctx.Err())
		}
	}
}

// all returns every line logged so far that match accepts.
func (s *logStream) all(match func(logLine) bool) []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logLine
	for _, l := range s.lines {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

func (s *logStream) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw := s.raw
	if len(raw) > n {
		raw = raw[len(raw)-n:]
	}
	return strings.Join(raw, "\n")
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// pods watches the managed pods of one namespace, as the test's own view of the
// cluster: which exist now, and every one that ever existed.
type pods struct {
	ns       string
	informer cache.SharedIndexInformer

	mu      sync.Mutex
	ever    map[string]*corev1.Pod // by UID, the last version seen
	changed chan struct{}          // closed and replaced on every event
}

// watchPods starts watching ns's managed pods until the test ends.
func (e *env) watchPods(t *testing.T, ns string) *pods {
	t.Helper()
	factory := informers.NewSharedInformerFactoryWithOptions(e.client, 0,
		informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managedSelector }))
	p := &pods{ns: ns, informer: factory.Core().V1().Pods().Informer(), ever: map[string]*corev1.Pod{}, changed: make(chan struct{})}
	record := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		p.mu.Lock()
		p.ever[string(pod.UID)] = pod
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	p.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
		DeleteFunc: record,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.informer.RunWithContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if !cache.WaitForCacheSync(sctx.Done(), p.informer.HasSynced) {
		t.Fatalf("watching pods in %s: %v", ns, sctx.Err())
	}
	return p
}

// current returns the pods that exist now, by name.
func (p *pods) current() map[string]*corev1.Pod {
	out := map[string]*corev1.Pod{}
	for _, obj := range p.informer.GetStore().List() {
		pod := obj.(*corev1.Pod)
		out[pod.Name] = pod
	}
	return out
}

// everSeen returns every pod seen since the watch started, by UID.
func (p *pods) everSeen() map[string]*corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*corev1.Pod, len(p.ever))
	for k, v := range p.ever {
		out[k] = v
	}
	return out
}

// wait blocks until cond accepts the pods that exist, checking after every
// event, and fails the test when ctx ends first.
func (p *pods) wait(t *testing.T, ctx context.Context, what string, cond func(cur map[string]*corev1.Pod) bool) {
	t.Helper()
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		cur := p.current()
		if cond(cur) {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			names := make([]string, 0, len(cur))
			for n, pod := range cur {
				names = append(names, fmt.Sprintf("%s (%s, deleting=%v)", n, pod.Status.Phase, pod.DeletionTimestamp != nil))
			}
			t.Fatalf("namespace %s: waiting for %s: %v; pods now: %v", p.ns, what, ctx.Err(), names)
		}
	}
}

// waitGone waits until the pod named name no longer exists.
func (p *pods) waitGone(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	p.wait(t, ctx, "pod "+name+" to be gone", func(cur map[string]*corev1.Pod) bool { return cur[name] == nil })
}

// waitEmpty waits until no managed pod is left in the namespace.
func (p *pods) waitEmpty(t *testing.T, ctx context.Context) {
	t.Helper()
	p.wait(t, ctx, "no managed pod to be left", func(cur map[string]*corev1.Pod) bool { return len(cur) == 0 })
}

// client is one gRPC client connection through the gateway: one HTTP/2
// connection, so one session.
type client struct {
	t    *testing.T
	conn *grpc.ClientConn
	svc  examplepb.SessionClient
	md   metadata.MD // sent with every call: hints, or a session token
}

func dial(t *testing.T, addr string, kv ...string) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, svc: examplepb.NewSessionClient(conn), md: metadata.Pairs(kv...)}
}

func (c *client) ctx(ctx context.Context) context.Context {
	return metadata.NewOutgoingContext(ctx, c.md)
}

// info calls Info and returns the answer and the response headers.
func (c *client) info(ctx context.Context) (*examplepb.InfoResponse, metadata.MD, error) {
	var hdr metadata.MD
	r, err := c.svc.Info(c.ctx(ctx), &examplepb.InfoRequest{}, grpc.Header(&hdr))
	return r, hdr, err
}

func (c *client) mustInfo(ctx context.Context) (*examplepb.InfoResponse, metadata.MD) {
	c.t.Helper()
	r, hdr, err := c.info(ctx)
	if err != nil {
		c.t.Fatalf("Info: %v", err)
	}
	return r, hdr
}

func (c *client) increment(ctx context.Context) int64 {
	c.t.Helper()
	r, err := c.svc.Increment(c.ctx(ctx), &examplepb.IncrementRequest{Delta: 1})
	if err != nil {
		c.t.Fatalf("Increment: %v", err)
	}
	return r.GetValue()
}

// wantStatus fails unless err is a gRPC status with code whose message
// contains every one of parts.
func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Errorf("%s message %q does not contain %q", code, st.Message(), p)
		}
	}
	return st
}

func header(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func bounded(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
