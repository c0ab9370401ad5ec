package kube_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
	"github.com/tetherhq/tether/e2e/cluster"
	"github.com/tetherhq/tether/e2e/internal/gobuild"
	"github.com/tetherhq/tether/e2e/nodeagent"
)

// TestKubernetes runs issue 3's scenarios against one control plane. The ones
// that share the cluster peacefully run in parallel; the 50-client burst and the
// API server outage run alone, since one loads the machine and the other takes
// the API server away from everyone.
func TestKubernetes(t *testing.T) {
	product := gobuild.ProductForTest(t, "./cmd/tether", "./cmd/tether-example")
	helpers := gobuild.ForTest(t, "github.com/tetherhq/tether/e2e/internal/testserver")
	c := cluster.ForTest(t, cluster.Options{})
	agent := nodeagent.ForTest(t, nodeagent.Options{
		Client: c.Client(),
		// Room for 50 small pods at once, and still smaller than a pod that asks
		// for 100Gi.
		Nodes: []nodeagent.Node{
			{Name: "node-1", CPU: "64", Memory: "64Gi", Pods: 110},
			{Name: "node-2", CPU: "64", Memory: "64Gi", Pods: 110},
		},
		Images: map[string]string{
			exampleImage:    product["tether-example"],
			testserverImage: helpers["testserver"],
		},
		ProbePeriod:    100 * time.Millisecond,
		BackOff:        time.Second,
		MaxGracePeriod: 5 * time.Second,
	})
	e := &env{cluster: c, agent: agent, client: c.Client(), tether: product["tether"]}

	t.Run("shared", func(t *testing.T) {
		t.Run("1_HintsSizeEachPod", func(t *testing.T) { t.Parallel(); testHintsSizeEachPod(t, e) })
		t.Run("2_TooBigForAnyNode", func(t *testing.T) { t.Parallel(); testTooBig(t, e) })
		t.Run("3_UnknownImage", func(t *testing.T) { t.Parallel(); testUnknownImage(t, e) })
		t.Run("3_ExitsAtOnce", func(t *testing.T) { t.Parallel(); testExitsAtOnce(t, e) })
		t.Run("4_PodDeletedMidStream", func(t *testing.T) {
			t.Parallel()
			t.Run("graceful", func(t *testing.T) { t.Parallel(); testPodDeletedMidStream(t, e, "graceful", nil) })
			t.Run("grace0", func(t *testing.T) { t.Parallel(); testPodDeletedMidStream(t, e, "grace0", new(int64)) })
		})
		t.Run("5_IdleReaped_QuietStreamKept", func(t *testing.T) { t.Parallel(); testIdleReaping(t, e) })
		t.Run("6_GatewayKilledAndRestarted", func(t *testing.T) { t.Parallel(); testRestart(t, e) })
	})
	t.Run("8_FiftyAtOnce", func(t *testing.T) { testFiftyAtOnce(t, e) })
	t.Run("7_APIServerDown", func(t *testing.T) { testAPIServerDown(t, e) })

	// Every scenario waited for its own gateway to delete its pods; nothing may be
	// left anywhere.
	ctx := bounded(t, 30*time.Second)
	left, err := e.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: managedSelector})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range left.Items {
		t.Errorf("managed pod left at the end of the suite: %s/%s (%s)", p.Namespace, p.Name, p.Status.Phase)
	}
}

// 1. Two clients with different hints get two pods whose spec holds exactly
// those requests and limits; each client's calls stay on its own pod; a token
// reconnect re-attaches (case B21).
func testHintsSizeEachPod(t *testing.T, e *env) {
	const ns = "hints"
	pods := e.watchPods(t, ns)
	gw := e.startGateway(t, ns, gatewayOptions{})
	ctx := bounded(t, 60*time.Second)

	type want struct{ cpu, mem, cpuLimit, memLimit string }
	clients := []struct {
		name string
		c    *client
		want want
	}{
		{"a", dial(t, gw.addr, "x-tether-cpu", "100m", "x-tether-memory", "64Mi", "x-tether-cpu-limit", "200m", "x-tether-memory-limit", "128Mi"),
			want{"100m", "64Mi", "200m", "128Mi"}},
		// Limits default to the requests.
		{"b", dial(t, gw.addr, "x-tether-cpu", "0.25", "x-tether-memory", "96Mi"), want{"250m", "96Mi", "250m", "96Mi"}},
	}
	type got struct {
		info  *examplepb.InfoResponse
		token string
		pod   *corev1.Pod
	}
	var sessions []got
	for _, cl := range clients {
		info, hdr := cl.c.mustInfo(ctx)
		token, podName := header(hdr, "x-tether-session"), header(hdr, "x-tether-instance")
		if token == "" || podName == "" {
			t.Fatalf("client %s: response headers %v lack x-tether-session or x-tether-instance", cl.name, hdr)
		}
		t.Logf("client %s: pod %s, x-tether-phases: %s", cl.name, podName, header(hdr, "x-tether-phases"))
		pod, err := e.client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}

		// The spec as the API server holds it: exactly the hints, on the serving
		// container.
		r := pod.Spec.Containers[0].Resources
		for _, q := range []struct {
			what string
			got  resource.Quantity
			want string
		}{
			{"requests.cpu", r.Requests[corev1.ResourceCPU], cl.want.cpu},
			{"requests.memory", r.Requests[corev1.ResourceMemory], cl.want.mem},
			{"limits.cpu", r.Limits[corev1.ResourceCPU], cl.want.cpuLimit},
			{"limits.memory", r.Limits[corev1.ResourceMemory], cl.want.memLimit},
		} {
			if q.got.Cmp(resource.MustParse(q.want)) != 0 {
				t.Errorf("client %s: pod %s %s = %s, want %s", cl.name, podName, q.what, q.got.String(), q.want)
			}
		}
		if len(r.Requests) != 2 || len(r.Limits) != 2 {
			t.Errorf("client %s: resources %+v, want only cpu and memory", cl.name, r)
		}
		// The instance sees the same size, and the pod records the session: its
		// id as a label, the token's hash (never the token) as an annotation.
		if info.GetCpuRequest() != cl.want.cpu || info.GetMemoryRequest() != cl.want.mem ||
			info.GetCpuLimit() != cl.want.cpuLimit || info.GetMemoryLimit() != cl.want.memLimit {
			t.Errorf("client %s: instance env cpu %s/%s memory %s/%s, want %+v", cl.name,
				info.GetCpuRequest(), info.GetCpuLimit(), info.GetMemoryRequest(), info.GetMemoryLimit(), cl.want)
		}
		sum := sha256.Sum256([]byte(token))
		if pod.Labels[labelSession] != info.GetSession() || pod.Annotations[annoTokenHash] != hex.EncodeToString(sum[:]) {
			t.Errorf("client %s: pod labels %v annotations %v, want session %s and the token's hash", cl.name, pod.Labels, pod.Annotations, info.GetSession())
		}
		for k, v := range pod.Annotations {
			if strings.Contains(v, token) {
				t.Errorf("annotation %s holds the session token", k)
			}
		}
		if pid, ok := e.agent.PID(pod.UID, "example"); !ok || int64(pid) != info.GetPid() {
			t.Errorf("client %s: Info.pid %d, agent's pid for pod %s %d (%v)", cl.name, info.GetPid(), podName, pid, ok)
		}
		sessions = append(sessions, got{info, token, pod})
	}
	a, b := clients[0].c, clients[1].c
	if sessions[0].pod.Name == sessions[1].pod.Name || sessions[0].info.GetInstance() == sessions[1].info.GetInstance() {
		t.Fatalf("both clients got the same instance: %s", sessions[0].pod.Name)
	}

	// Calls stay on their own pod: the counters are separate, and so is Info.
	for i := int64(1); i <= 3; i++ {
		if v := a.increment(ctx); v != i {
			t.Errorf("a: Increment = %d, want %d", v, i)
		}
	}
	if v := b.increment(ctx); v != 1 {
		t.Errorf("b: Increment = %d, want 1: it shares state with a", v)
	}
	for i, cl := range []*client{a, b} {
		info, _ := cl.mustInfo(ctx)
		if info.GetInstance() != sessions[i].info.GetInstance() {
			t.Errorf("client %s moved from %s to %s", clients[i].name, sessions[i].info.GetInstance(), info.GetInstance())
		}
	}

	// a's connection drops; a new one that brings the token lands on the same pod,
	// with its state.
	a.conn.Close()
	a2 := dial(t, gw.addr, "x-tether-session", sessions[0].token)
	if v := a2.increment(ctx); v != 4 {
		t.Errorf("a after reconnecting: Increment = %d, want 4 (its old state)", v)
	}
	if info, _ := a2.mustInfo(ctx); info.GetInstance() != sessions[0].info.GetInstance() {
		t.Errorf("a re-attached to %s, want %s", info.GetInstance(), sessions[0].info.GetInstance())
	}
	if n := len(pods.everSeen()); n != 2 {
		t.Errorf("%d pods were created, want 2", n)
	}

	a2.conn.Close()
	b.conn.Close()
	pods.waitEmpty(t, ctx)
}

// 2. A request bigger than any node gets RESOURCE_EXHAUSTED with the scheduler's
// message within 5s, its pod is gone afterwards, and the same client then gets
// an instance with hints that fit (cases B16, B25).
func testTooBig(t *testing.T, e *env) {
	const ns = "too-big"
	pods := e.watchPods(t, ns)
	gw := e.startGateway(t, ns, gatewayOptions{vars: map[string]string{"TETHER_MAX_MEMORY": "128Gi"}})
	ctx := bounded(t, 60*time.Second)

	c := dial(t, gw.addr, "x-tether-memory", "100Gi")
	start := time.Now()
	_, _, err := c.info(bounded(t, 30*time.Second))
	took := time.Since(start)
	wantStatus(t, err, codes.ResourceExhausted, "0/2 nodes are available", "2 Insufficient memory")
	t.Logf("RESOURCE_EXHAUSTED after %v: %v", took.Round(time.Millisecond), err)
	if took > 5*time.Second {
		t.Errorf("RESOURCE_EXHAUSTED came after %v, want within 5s", took)
	}
	pods.wait(t, ctx, "the doomed pod to be created and deleted", func(cur map[string]*corev1.Pod) bool {
		return len(pods.everSeen()) == 1 && len(cur) == 0
	})

	// The client retries with hints that fit, on the same connection.
	c.md.Set("x-tether-memory", "64Mi")
	info, hdr := c.mustInfo(ctx)
	if info.GetMemoryRequest() != "64Mi" {
		t.Errorf("retry: instance memory %s, want 64Mi", info.GetMemoryRequest())
	}
	t.Logf("retry: pod %s", header(hdr, "x-tether-instance"))
	c.conn.Close()
	pods.waitEmpty(t, ctx)
}

// 3a. An image nobody can pull: UNAVAILABLE naming ErrImagePull within 5s, and
// the pod is gone afterwards (cases B16, B25).
func testUnknownImage(t *testing.T, e *env) {
	testStartFails(t, e, "unknown-image", podTemplate("registry.invalid/nothing:1"), "ErrImagePull", "registry.invalid/nothing:1")
}

// 3b. A container that exits at once: UNAVAILABLE with its exit code within 5s,
// and the pod is gone afterwards.
func testExitsAtOnce(t *testing.T, e *env) {
	testStartFails(t, e, "exits-at-once", podTemplate(testserverImage, "-exit", "3"), "exit code 3")
}

func testStartFails(t *testing.T, e *env, ns, template string, want ...string) {
	pods := e.watchPods(t, ns)
	gw := e.startGateway(t, ns, gatewayOptions{template: template})
	ctx := bounded(t, 60*time.Second)
	c := dial(t, gw.addr)
	start := time.Now()
	_, _, err := c.info(bounded(t, 30*time.Second))
	took := time.Since(start)
	wantStatus(t, err, codes.Unavailable, want...)
	t.Logf("UNAVAILABLE after %v: %v", took.Round(time.Millisecond), err)
	if took > 5*time.Second {
		t.Errorf("UNAVAILABLE came after %v, want within 5s", took)
	}
	pods.wait(t, ctx, "the failed pod to be deleted", func(cur map[string]*corev1.Pod) bool {
		return len(pods.everSeen()) == 1 && len(cur) == 0
	})
}

// 4. A pod deleted by someone else mid-stream: its open streams get UNAVAILABLE,
// the token afterwards gets NOT_FOUND, and the client's next call cold-starts a
// fresh pod rather than reach the dead one (cases B27, B28). grace nil is a plain
// kubectl delete; 0 is what kubectl delete --force --grace-period=0 sends.
func testPodDeletedMidStream(t *testing.T, e *env, ns string, grace *int64) {
	ns = "deleted-" + ns
	pods := e.watchPods(t, ns)
	gw := e.startGateway(t, ns, gatewayOptions{})
	ctx := bounded(t, 60*time.Second)

	c := dial(t, gw.addr)
	info, hdr := c.mustInfo(ctx)
	token, podName := header(hdr, "x-tether-session"), header(hdr, "x-tether-instance")
	sctx, cancel := context.WithCancel(c.ctx(ctx))
	defer cancel()
	var streams []examplepb.Session_WatchClient
	for range 2 {
		stream, err := c.svc.Watch(sctx, &examplepb.WatchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Watch: %v", err)
		}
		streams = append(streams, stream)
	}

	if err := e.client.CoreV1().Pods(ns).Delete(ctx, podName, metav1.DeleteOptions{GracePeriodSeconds: grace}); err != nil {
		t.Fatal(err)
	}
	for i, stream := range streams {
		var err error
		for err == nil {
			_, err = stream.Recv()
		}
		st := wantStatus(t, err, codes.Unavailable)
		t.Logf("open stream %d ended with %s: %s", i, st.Code(), st.Message())
	}

	// The gateway ended the session because of the pod, and says so.
	ended := gw.waitLog(ctx, func(l logLine) bool { return l.msg() == "session ended" && l.str("session") == info.GetSession() })
	if r := ended.str("reason"); !strings.Contains(r, podName) || !strings.Contains(r, "delete") {
		t.Errorf("session ended with reason %q, want it to say pod %s was deleted", r, podName)
	}
	_, _, err := dial(t, gw.addr, "x-tether-session", token).info(ctx)
	wantStatus(t, err, codes.NotFound)
	pods.waitGone(t, ctx, podName)
	if n := len(pods.everSeen()); n != 1 {
		t.Errorf("%d pods were created, want 1: the token must not have started a new one", n)
	}

	// The client was sent GOAWAY; its next call starts a new session on a new pod.
	again, ahdr := c.mustInfo(ctx)
	if p := header(ahdr, "x-tether-instance"); p == podName || again.GetSession() == info.GetSession() {
		t.Errorf("the next call went to pod %s, session %s: the dead pod's", p, again.GetSession())
	}
	cancel()
	c.conn.Close()
	pods.waitEmpty(t, ctx)
}

// 5. An idle pod is deleted by the reaper; a pod with a quiet open stream is not
// (cases B22, B23).
func testIdleReaping(t *testing.T, e *env) {
	const ns = "idle"
	pods := e.watchPods(t, ns)
	gw := e.startGateway(t, ns, gatewayOptions{})
	ctx := bounded(t, 60*time.Second)

	// busy opens a stream and then says nothing.
	busy := dial(t, gw.addr)
	sctx, cancel := context.WithCancel(busy.ctx(ctx))
	defer cancel()
	stream, err := busy.svc.Watch(sctx, &examplepb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	hdr, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	busyPod := header(hdr, "x-tether-instance")

	// idle makes one call and leaves its connection open, with nothing on it.
	idle := dial(t, gw.addr)
	_, ihdr := idle.mustInfo(ctx)
	idleSince := time.Now()
	idlePod := header(ihdr, "x-tether-instance")

	pods.waitGone(t, ctx, idlePod)
	if d := time.Since(idleSince); d < gatewayIdle-100*time.Millisecond {
		t.Errorf("the idle pod was deleted %v after its last call, before the idle timeout of %v", d, gatewayIdle)
	}
	// `kubectl describe pod` tells the story: Activated, then Reaped with why.
	waitEvents(t, ctx, e, ns, idlePod, map[string]string{"Activated": "serving session", "Reaped": "idle for"})
	// The busy pod's stream has been quiet for longer than the idle timeout.
	if p := pods.current()[busyPod]; p == nil || p.DeletionTimestamp != nil {
		t.Fatalf("the pod with a quiet open stream was reaped")
	}
	if v := busy.increment(ctx); v != 1 {
		t.Errorf("Increment = %d, want 1", v)
	}
	if got, err := stream.Recv(); err != nil || got.GetValue() != 1 {
		t.Errorf("the quiet stream: Recv = %v, %v, want 1", got, err)
	}
	// The reaped session's client was sent GOAWAY; its next call is a new
	// connection, hence a new session on a new pod, never the reaped one.
	_, nhdr := idle.mustInfo(ctx)
	if p := header(nhdr, "x-tether-instance"); p == "" || p == idlePod {
		t.Errorf("the idle client's next call went to pod %q, want a new one (the old one was %s)", p, idlePod)
	}

	cancel()
	busy.conn.Close()
	idle.conn.Close()
	pods.waitEmpty(t, ctx)
}

// 6. The gateway is killed and restarted: a client with its token re-attaches to
// its old pod and state; an unclaimed pod is reaped after the idle timeout (case
// B21).
func testRestart(t *testing.T, e *env) {
	const ns = "restart"
	pods := e.watchPods(t, ns)
	listen := freeAddr(t)
	gw := e.startGateway(t, ns, gatewayOptions{listen: listen})
	ctx := bounded(t, 60*time.Second)

	claimed := dial(t, listen)
	before, hdr := claimed.mustInfo(ctx)
	token := header(hdr, "x-tether-session")
	for i := int64(1); i <= 3; i++ {
		claimed.increment(ctx)
	}
	unclaimed := dial(t, listen)
	_, uhdr := unclaimed.mustInfo(ctx)
	unclaimedPod := header(uhdr, "x-tether-instance")
	claimed.conn.Close()
	unclaimed.conn.Close()

	gw.kill()
	if n := len(pods.current()); n != 2 {
		t.Fatalf("%d pods after the gateway was killed, want both sessions' pods to live on", n)
	}
	gw2 := e.startGateway(t, ns, gatewayOptions{listen: listen})
	adopted := time.Now()
	// A gateway adopts what survived before it listens.
	if n := len(gw2.logs.all(func(l logLine) bool { return l.msg() == "session adopted" })); n != 2 {
		t.Errorf("the restarted gateway adopted %d sessions, want 2", n)
	}

	back := dial(t, listen, "x-tether-session", token)
	if v := back.increment(ctx); v != 4 {
		t.Errorf("after the restart: Increment = %d, want 4 (the state from before)", v)
	}
	after, _ := back.mustInfo(ctx)
	if after.GetInstance() != before.GetInstance() || after.GetSession() != before.GetSession() {
		t.Errorf("re-attached to %s (session %s), want %s (session %s)", after.GetInstance(), after.GetSession(), before.GetInstance(), before.GetSession())
	}

	pods.waitGone(t, ctx, unclaimedPod)
	if d := time.Since(adopted); d < gatewayIdle-100*time.Millisecond {
		t.Errorf("the unclaimed pod was reaped %v after adoption, before the idle timeout of %v", d, gatewayIdle)
	}
	back.conn.Close()
	pods.waitEmpty(t, ctx)
	if n := len(pods.everSeen()); n != 2 {
		t.Errorf("%d pods were created, want 2: a restart must not start new ones", n)
	}
}

// 8. 50 clients activating at once get 50 distinct pods, with no duplicates and
// no leaks. Reports the latency from pod Ready (as the node agent wrote it) to
// the first request reaching the pod (as the pod recorded it).
func testFiftyAtOnce(t *testing.T, e *env) {
	const (
		ns = "fifty"
		n  = 50
	)
	pods := e.watchPods(t, ns)
	// At debug level the gateway logs when it saw each pod Ready, which splits
	// the latency into the watch's part and the forward's.
	gw := e.startGateway(t, ns, gatewayOptions{vars: map[string]string{"TETHER_LOG_LEVEL": "debug"}})
	ctx := bounded(t, 3*time.Minute)

	type result struct {
		info   *examplepb.InfoResponse
		pod    string
		phases string
		err    error
	}
	results := make([]result, n)
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, gw.addr, "x-tether-cpu", "10m", "x-tether-memory", "16Mi")
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			<-start
			info, hdr, err := c.info(ctx)
			results[i] = result{info, header(hdr, "x-tether-instance"), header(hdr, "x-tether-phases"), err}
		})
	}
	begin := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d activations took %v in all", n, time.Since(begin).Round(time.Millisecond))

	// When the gateway saw each pod Ready, by pod IP (the ready phase's detail).
	sawReady := map[string]time.Time{}
	for _, l := range gw.logs.all(func(l logLine) bool { return l.msg() == "activation phase" && l.str("phase") == "ready" }) {
		sawReady[l.str("detail")] = l.time()
	}
	byName := map[string]*corev1.Pod{}
	for _, p := range pods.everSeen() {
		byName[p.Name] = p
	}

	instances, names := map[string]int{}, map[string]int{}
	var total, watch, forward []time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Errorf("client %d: %v", i, r.err)
			continue
		}
		instances[r.info.GetInstance()]++
		names[r.pod]++
		pod := byName[r.pod]
		if pod == nil {
			t.Errorf("client %d: pod %s was never seen", i, r.pod)
			continue
		}
		readyAt, ok := e.agent.ReadyAt(pod.UID)
		if !ok {
			t.Errorf("client %d: the agent never set pod %s Ready; last seen: %+v", i, r.pod, pod.Status)
			continue
		}
		first := time.Unix(0, r.info.GetFirstCallUnixNano())
		total = append(total, first.Sub(readyAt))
		line := fmt.Sprintf("client %2d: pod %s Ready → first request %v", i, r.pod, first.Sub(readyAt).Round(time.Microsecond))
		if saw, ok := sawReady[pod.Status.PodIP]; ok {
			watch, forward = append(watch, saw.Sub(readyAt)), append(forward, first.Sub(saw))
			line += fmt.Sprintf(" (watch %v + forward %v)", saw.Sub(readyAt).Round(time.Microsecond), first.Sub(saw).Round(time.Microsecond))
		}
		t.Logf("%s; x-tether-phases: %s", line, r.phases)
	}
	if len(instances) != n || len(names) != n {
		t.Errorf("%d clients got %d distinct instances in %d distinct pods, want %d of each", n, len(instances), len(names), n)
	}
	for name, k := range names {
		if k > 1 {
			t.Errorf("pod %s served %d clients", name, k)
		}
	}
	if got := len(pods.everSeen()); got != n {
		t.Errorf("%d pods were created for %d clients", got, n)
	}
	t.Logf("activation latency over %d pods, pod Ready (the agent's status write) → first request at the pod: %s", len(total), percentiles(total))
	t.Logf("  of which pod Ready → the gateway saw it (watch): %s", percentiles(watch))
	t.Logf("  and the gateway saw it → first request at the pod (forward): %s", percentiles(forward))

	for _, c := range clients {
		c.conn.Close()
	}
	pods.waitEmpty(t, ctx)
}

// 7. With kube-apiserver stopped, an open stream keeps flowing; a new activation
// gets UNAVAILABLE naming the API error; once the server is back, activation
// works again without restarting the gateway. An activation whose pod became
// ready while the API server was away completes once it is back: the gateway's
// watch reconnects and does not miss it (case B25).
func testAPIServerDown(t *testing.T, e *env) {
	const ns, slowNS = "api-down", "api-down-slow"
	pods, slowPods := e.watchPods(t, ns), e.watchPods(t, slowNS)
	gw := e.startGateway(t, ns, gatewayOptions{})
	slow := e.startGateway(t, slowNS, gatewayOptions{
		template: podTemplate(exampleImage, "-listen", fmt.Sprintf("$(POD_IP):%d", podPort), "-startup-delay", "2s"),
	})
	ctx := bounded(t, 3*time.Minute)

	// A cold start that will become ready while the API server is down.
	type result struct {
		info *examplepb.InfoResponse
		err  error
	}
	slowClient := dial(t, slow.addr)
	slowDone := make(chan result, 1)
	go func() {
		info, _, err := slowClient.info(ctx)
		slowDone <- result{info, err}
	}()
	slowPods.wait(t, ctx, "the slow pod's container to run", func(cur map[string]*corev1.Pod) bool {
		for _, p := range cur {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.State.Running != nil {
					return true
				}
			}
		}
		return false
	})

	pinned := dial(t, gw.addr)
	sctx, cancel := context.WithCancel(pinned.ctx(ctx))
	defer cancel()
	stream, err := pinned.svc.Exchange(sctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(want int64) {
		t.Helper()
		if err := stream.Send(&examplepb.IncrementRequest{Delta: 1}); err != nil {
			t.Fatalf("Exchange send: %v", err)
		}
		got, err := stream.Recv()
		if err != nil || got.GetValue() != want {
			t.Fatalf("Exchange: %v, %v, want %d", got, err, want)
		}
	}
	exchange(1)

	if err := e.cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			e.cluster.StartAPIServer(bounded(t, time.Minute))
		}
	}()

	// The data path does not touch the API: the stream and new calls on the
	// pinned connection work.
	exchange(2)
	if v := pinned.increment(ctx); v != 3 {
		t.Errorf("Increment = %d, want 3", v)
	}
	exchange(4)

	// A new activation needs the API: it fails at once, and says why.
	start := time.Now()
	_, _, err = dial(t, gw.addr).info(bounded(t, 30*time.Second))
	took := time.Since(start)
	st := wantStatus(t, err, codes.Unavailable, "creating a pod")
	t.Logf("activation with the API server down: UNAVAILABLE after %v: %s", took.Round(time.Millisecond), st.Message())
	if took > 5*time.Second {
		t.Errorf("the failed activation took %v, want it within 5s", took)
	}
	exchange(5)

	if err := e.cluster.StartAPIServer(bounded(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	t.Logf("API server down for %v", back.Sub(down).Round(time.Millisecond))
	select {
	case r := <-slowDone:
		switch {
		case r.err != nil:
			t.Errorf("the activation under way while the API server was down: %v", r.err)
		case !time.Unix(0, r.info.GetReadyUnixNano()).Before(back):
			t.Errorf("the slow pod listened only after the API server was back; the scenario proves nothing")
		default:
			t.Logf("the activation under way while the API server was down completed %v after it came back",
				time.Since(back).Round(time.Millisecond))
		}
	case <-ctx.Done():
		t.Fatal("the activation under way while the API server was down never completed")
	}
	slowClient.conn.Close()
	start = time.Now()
	again := dial(t, gw.addr)
	info, _ := again.mustInfo(ctx)
	t.Logf("first activation after the API server came back took %v (pod %s)", time.Since(start).Round(time.Millisecond), info.GetSession())
	exchange(6)

	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("Exchange after CloseSend: %v, want EOF", err)
	}
	pinned.conn.Close()
	again.conn.Close()
	pods.waitEmpty(t, ctx)
	slowPods.waitEmpty(t, ctx)
	if n := len(pods.everSeen()); n != 2 {
		t.Errorf("%d pods were created, want 2 (none for the activation that failed)", n)
	}
}

// percentiles summarizes durations as p50, p99 and max.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	p := func(q float64) time.Duration {
		return ds[min(len(ds)-1, int(q*float64(len(ds))))].Round(time.Microsecond)
	}
	return fmt.Sprintf("p50 %v, p99 %v, max %v", p(0.50), p(0.99), ds[len(ds)-1].Round(time.Microsecond))
}

// waitEvents waits, on a watch, for Events on a pod with each reason, whose
// message contains the given text.
func waitEvents(t *testing.T, ctx context.Context, e *env, ns, pod string, want map[string]string) {
	t.Helper()
	opts := metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod}
	left := maps.Clone(want)
	seen := func(e *corev1.Event) {
		if text, wanted := left[e.Reason]; wanted && strings.Contains(e.Message, text) {
			delete(left, e.Reason)
		}
	}
	list, err := e.client.CoreV1().Events(ns).List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		seen(&list.Items[i])
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := e.client.CoreV1().Events(ns).Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for len(left) > 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("event watch ended with %v still missing on pod %s", left, pod)
			}
			if e, isEvent := ev.Object.(*corev1.Event); isEvent {
				seen(e)
			}
		case <-ctx.Done():
			t.Fatalf("no %v events on pod %s", left, pod)
		}
	}
}
