package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tetherhq/tether/activator"
)

const testNS = "sessions"

// testTimeout bounds every wait in these tests; nothing in them takes more than
// milliseconds when it works.
const testTimeout = 10 * time.Second

// fakeCluster is a fake clientset with what the real API server does and the
// fake does not: names from generateName and UIDs. It reports each pod created
// and each delete.
type fakeCluster struct {
	*fake.Clientset
	created chan *corev1.Pod
	deletes chan k8stesting.DeleteActionImpl
}

func newFakeCluster(t *testing.T, objs ...runtime.Object) *fakeCluster {
	t.Helper()
	fc := &fakeCluster{
		Clientset: fake.NewClientset(objs...),
		created:   make(chan *corev1.Pod, 16),
		deletes:   make(chan k8stesting.DeleteActionImpl, 16),
	}
	var seq atomic.Int64
	fc.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		n := seq.Add(1)
		if pod.Name == "" {
			pod.Name = pod.GenerateName + fmt.Sprintf("x%04d", n)
		}
		pod.UID = types.UID(fmt.Sprintf("uid-%d", n))
		fc.created <- pod.DeepCopy()
		return false, nil, nil // the tracker stores it
	})
	fc.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		fc.deletes <- a.(k8stesting.DeleteActionImpl)
		return false, nil, nil
	})
	return fc
}

// TestMain checks that the runtimes the tests started left no goroutine
// behind: Close stops the informer and every delete still retrying.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// setStatus writes a pod's status as the kubelet would.
func (fc *fakeCluster) setStatus(t *testing.T, pod *corev1.Pod, opts ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	cur, err := fc.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(cur)
	}
	if err := fc.Tracker().Update(podsGVR, cur, cur.Namespace); err != nil {
		t.Fatal(err)
	}
	return cur
}

func (fc *fakeCluster) nextCreated(t *testing.T) *corev1.Pod {
	t.Helper()
	select {
	case p := <-fc.created:
		return p
	case <-time.After(testTimeout):
		t.Fatal("no pod was created")
		return nil
	}
}

func (fc *fakeCluster) nextDelete(t *testing.T) k8stesting.DeleteActionImpl {
	t.Helper()
	select {
	case d := <-fc.deletes:
		return d
	case <-time.After(testTimeout):
		t.Fatal("no pod was deleted")
		return k8stesting.DeleteActionImpl{}
	}
}

// wantDelete checks that the next delete is of pod, with its UID as a
// precondition, and with grace period grace (nil: the pod's own).
func (fc *fakeCluster) wantDelete(t *testing.T, pod *corev1.Pod, grace *int64) {
	t.Helper()
	d := fc.nextDelete(t)
	if d.Name != pod.Name {
		t.Errorf("deleted %s, want %s", d.Name, pod.Name)
	}
	pre := d.DeleteOptions.Preconditions
	if pre == nil || pre.UID == nil || *pre.UID != pod.UID {
		t.Errorf("delete of %s: preconditions %+v, want UID %s", d.Name, pre, pod.UID)
	}
	g := d.DeleteOptions.GracePeriodSeconds
	if (g == nil) != (grace == nil) || (g != nil && *g != *grace) {
		t.Errorf("delete of %s: grace period %v, want %v", d.Name, ptrString(g), ptrString(grace))
	}
}

func ptrString(p *int64) string {
	if p == nil {
		return "<pod's own>"
	}
	return fmt.Sprint(*p)
}

var zeroGrace = new(int64)

// startRuntime returns a runtime over fc whose informer is synced and watching,
// and stopped at the end of the test.
func startRuntime(t *testing.T, fc *fakeCluster) *Runtime {
	t.Helper()
	tmpl, err := ParseTemplate([]byte(`
kind: Pod
spec:
  containers:
  - name: shipper
    image: shipper
  - name: server
    image: server
    ports:
    - name: grpc
      containerPort: 50051
`), 0)
	if err != nil {
		t.Fatal(err)
	}
	rt := New(fc, Config{Namespace: testNS, Template: tmpl, DeleteTimeout: time.Second})
	// Sync is bounded the way the gateway bounds it (TETHER_KUBE_SYNC_TIMEOUT):
	// a context that ends when Sync returns. The informer must outlive it, or no
	// test below would see a single event.
	sctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	err = rt.Sync(sctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return rt
}

var testSpec = activator.Spec{
	Session:     "abcdefghijklmnop",
	TokenHash:   strings.Repeat("ab", 32),
	Size:        goldenSpec.Size,
	IdleTimeout: time.Minute,
}

type startResult struct {
	inst activator.Instance
	err  error
}

// start runs rt.Start in the background.
func start(ctx context.Context, rt *Runtime, spec activator.Spec) <-chan startResult {
	res := make(chan startResult, 1)
	go func() {
		inst, err := rt.Start(ctx, spec)
		res <- startResult{inst, err}
	}()
	return res
}

func result(t *testing.T, res <-chan startResult) startResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(testTimeout):
		t.Fatal("Start did not return")
		return startResult{}
	}
}

func servingPod(p *corev1.Pod) {
	p.Spec.NodeName = "node-1"
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.1.2.3"
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{
		{Name: "shipper", State: running, Ready: true},
		{Name: "server", State: running, Ready: true},
	}
}

// serve starts a session and makes its pod ready.
func serve(t *testing.T, fc *fakeCluster, rt *Runtime) (activator.Instance, *corev1.Pod) {
	t.Helper()
	res := start(context.Background(), rt, testSpec)
	pod := fc.setStatus(t, fc.nextCreated(t), servingPod)
	r := result(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.inst, pod
}

func waitDone(t *testing.T, inst activator.Instance) *activator.GoneError {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(testTimeout):
		t.Fatal("the instance did not end")
	}
	var gone *activator.GoneError
	if !errors.As(inst.Err(), &gone) {
		t.Fatalf("Err() = %v, want a *activator.GoneError", inst.Err())
	}
	return gone
}

func TestStartReady(t *testing.T) {
	fc := newFakeCluster(t)
	rt := startRuntime(t, fc)

	var mu sync.Mutex
	var phases []activator.Phase
	spec := testSpec
	spec.Observe = func(p activator.Phase, _ string) {
		mu.Lock()
		defer mu.Unlock()
		if n := len(phases); n == 0 || phases[n-1] != p {
			phases = append(phases, p)
		}
	}
	res := start(context.Background(), rt, spec)
	pod := fc.nextCreated(t)

	if pod.GenerateName != "tether-"+spec.Session+"-" || pod.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("created pod generateName %q labels %v", pod.GenerateName, pod.Labels)
	}
	fc.setStatus(t, pod, func(p *corev1.Pod) { p.Spec.NodeName = "node-1" })
	fc.setStatus(t, pod, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", State: waitingIn("ContainerCreating", "")}}
	})
	fc.setStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", State: running}}
	})
	// Ready without an IP is not ready yet.
	fc.setStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	})
	fc.setStatus(t, pod, func(p *corev1.Pod) { p.Status.PodIP = "10.1.2.3" })

	r := result(t, res)
	if r.err != nil {
		t.Fatalf("Start: %v", r.err)
	}
	if got, want := r.inst.Addr(), "10.1.2.3:50051"; got != want {
		t.Errorf("Addr = %q, want %q", got, want)
	}
	if r.inst.Name() != pod.Name {
		t.Errorf("Name = %q, want %q", r.inst.Name(), pod.Name)
	}
	if r.inst.Err() != nil {
		t.Errorf("Err = %v before the instance ended", r.inst.Err())
	}
	mu.Lock()
	got := fmt.Sprint(phases)
	mu.Unlock()
	if want := fmt.Sprint([]activator.Phase{activator.PhaseRequested, activator.PhaseScheduled, activator.PhaseStarted, activator.PhaseReady}); got != want {
		t.Errorf("phases = %s, want %s", got, want)
	}
}

func TestStartUnschedulable(t *testing.T) {
	fc := newFakeCluster(t)
	rt := startRuntime(t, fc)
	res := start(context.Background(), rt, testSpec)
	pod := fc.nextCreated(t)
	const msg = "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
	fc.setStatus(t, pod, cond(corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonUnschedulable, msg))

	r := result(t, res)
	var ce *activator.CapacityError
	if !errors.As(r.err, &ce) || ce.Reason != msg {
		t.Fatalf("Start = %v, want a CapacityError quoting %q", r.err, msg)
	}
	fc.wantDelete(t, pod, zeroGrace)
}

func TestStartFailuresDeleteThePod(t *testing.T) {
	cases := []struct {
		name   string
		status func(*corev1.Pod)
		want   string
	}{
		{"image pull", func(p *corev1.Pod) {
			p.Spec.NodeName = "node-1"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", State: waitingIn("ErrImagePull", `pulling "nothing": not found`)}}
		}, "ErrImagePull"},
		{"exit before ready", func(p *corev1.Pod) {
			p.Spec.NodeName = "node-1"
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", State: terminated(3, "Error")}}
		}, "exit code 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeCluster(t)
			rt := startRuntime(t, fc)
			res := start(context.Background(), rt, testSpec)
			pod := fc.nextCreated(t)
			fc.setStatus(t, pod, tc.status)
			r := result(t, res)
			var se *activator.StartError
			if !errors.As(r.err, &se) || !strings.Contains(se.Reason, tc.want) {
				t.Fatalf("Start = %v, want a StartError naming %q", r.err, tc.want)
			}
			fc.wantDelete(t, pod, zeroGrace)
		})
	}
}

func TestStartAbandonedDeletesThePod(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"canceled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Hour)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeCluster(t)
			rt := startRuntime(t, fc)
			ctx, cancel := tc.ctx()
			defer cancel()
			if tc.want == context.DeadlineExceeded {
				// A deadline that passes once the pod exists, without a clock race.
				var dcancel context.CancelFunc
				ctx, dcancel = context.WithDeadline(ctx, time.Now().Add(time.Hour))
				defer dcancel()
				ctx, cancel = withCancelAs(ctx, context.DeadlineExceeded)
			}
			res := start(ctx, rt, testSpec)
			pod := fc.nextCreated(t)
			fc.setStatus(t, pod, func(p *corev1.Pod) { p.Spec.NodeName = "node-1" })
			cancel()
			r := result(t, res)
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("Start = %v, want %v", r.err, tc.want)
			}
			fc.wantDelete(t, pod, zeroGrace)
		})
	}
}

// withCancelAs returns a context whose cancel makes Err() return err, as a
// passed deadline does.
func withCancelAs(parent context.Context, err error) (context.Context, context.CancelFunc) {
	c := &errCtx{Context: parent, done: make(chan struct{})}
	var once sync.Once
	return c, func() { once.Do(func() { c.err.Store(&err); close(c.done) }) }
}

type errCtx struct {
	context.Context
	done chan struct{}
	err  atomic.Pointer[error]
}

func (c *errCtx) Done() <-chan struct{} { return c.done }
func (c *errCtx) Err() error {
	if e := c.err.Load(); e != nil {
		return *e
	}
	return nil
}

func TestStartPodDeletedMeanwhile(t *testing.T) {
	fc := newFakeCluster(t)
	rt := startRuntime(t, fc)
	res := start(context.Background(), rt, testSpec)
	pod := fc.nextCreated(t)
	if err := fc.CoreV1().Pods(testNS).Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	<-fc.deletes // the test's own
	r := result(t, res)
	var se *activator.StartError
	if !errors.As(r.err, &se) || !strings.Contains(se.Reason, "deleted") {
		t.Fatalf("Start = %v, want a StartError saying the pod was deleted", r.err)
	}
}

func TestStartCreateRefused(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		capacity bool
	}{
		{"api down", errors.New(`Post "https://127.0.0.1:6443/api/v1/namespaces/sessions/pods": dial tcp 127.0.0.1:6443: connect: connection refused`), false},
		{"quota", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "",
			errors.New("exceeded quota: sessions, requested: requests.memory=6Gi, used: requests.memory=4Gi, limited: requests.memory=8Gi")), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeCluster(t)
			fc.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.err })
			rt := startRuntime(t, fc)
			_, err := rt.Start(context.Background(), testSpec)
			var ce *activator.CapacityError
			var re *activator.RuntimeError
			switch {
			case tc.capacity && !errors.As(err, &ce):
				t.Fatalf("Start = %v, want a CapacityError", err)
			case !tc.capacity && !errors.As(err, &re):
				t.Fatalf("Start = %v, want a RuntimeError", err)
			}
			if !strings.Contains(err.Error(), tc.err.Error()) {
				t.Errorf("Start = %q, want it to name the API's answer %q", err, tc.err)
			}
		})
	}
}

// A create whose answer was lost because the client gave up may still have
// made a pod: every pod of the session is deleted.
func TestStartCreateInterrupted(t *testing.T) {
	fc := newFakeCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	fc.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		cancel()
		return true, nil, ctx.Err()
	})
	collections := make(chan k8stesting.DeleteCollectionAction, 1)
	fc.PrependReactor("delete-collection", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		collections <- a.(k8stesting.DeleteCollectionAction)
		return true, nil, nil
	})
	rt := startRuntime(t, fc)
	if _, err := rt.Start(ctx, testSpec); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	select {
	case a := <-collections:
		sel := a.GetListRestrictions().Labels.String()
		if !strings.Contains(sel, LabelSession+"="+testSpec.Session) || !strings.Contains(sel, LabelManagedBy+"="+ManagedBy) {
			t.Errorf("delete-collection selector %q, want the session's pods", sel)
		}
	case <-time.After(testTimeout):
		t.Fatal("the session's pods were not deleted")
	}
}

func TestServingPodGoes(t *testing.T) {
	t.Run("deleted", func(t *testing.T) {
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		inst, pod := serve(t, fc, rt)
		if err := fc.CoreV1().Pods(testNS).Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if gone := waitDone(t, inst); !strings.Contains(gone.Reason, "deleted") {
			t.Errorf("Reason = %q, want it to say the pod was deleted", gone.Reason)
		}
	})
	t.Run("being deleted", func(t *testing.T) {
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		inst, pod := serve(t, fc, rt)
		fc.setStatus(t, pod, deleting)
		if gone := waitDone(t, inst); !strings.Contains(gone.Reason, "being deleted") {
			t.Errorf("Reason = %q", gone.Reason)
		}
		select {
		case d := <-fc.deletes:
			t.Errorf("a pod already terminating was deleted again: %+v", d)
		default:
		}
	})
	t.Run("evicted", func(t *testing.T) {
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		inst, pod := serve(t, fc, rt)
		fc.setStatus(t, pod, func(p *corev1.Pod) {
			p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
		})
		if gone := waitDone(t, inst); !strings.Contains(gone.Reason, "Evicted") {
			t.Errorf("Reason = %q", gone.Reason)
		}
		fc.wantDelete(t, pod, zeroGrace)
	})
	t.Run("serving container restarted", func(t *testing.T) {
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		inst, pod := serve(t, fc, rt)
		// A sidecar's restart leaves the session's state alone...
		fc.setStatus(t, pod, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].RestartCount = 1
			p.Status.ContainerStatuses[0].LastTerminationState = terminated(1, "Error")
		})
		// ...the serving container's does not.
		fc.setStatus(t, pod, func(p *corev1.Pod) {
			p.Status.ContainerStatuses[1].RestartCount = 1
			p.Status.ContainerStatuses[1].LastTerminationState = terminated(137, "Error")
		})
		gone := waitDone(t, inst)
		if !strings.Contains(gone.Reason, "container server was restarted") {
			t.Errorf("Reason = %q", gone.Reason)
		}
		fc.wantDelete(t, pod, zeroGrace)
	})
	t.Run("tombstone", func(t *testing.T) {
		// A delete seen only on a relist arrives as a tombstone (case B27).
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		inst, pod := serve(t, fc, rt)
		rt.dispatch(cache.DeletedFinalStateUnknown{Key: "other/x", Obj: "not a pod"}, true)
		rt.dispatch(cache.DeletedFinalStateUnknown{Key: testNS + "/" + pod.Name, Obj: pod}, true)
		if gone := waitDone(t, inst); !strings.Contains(gone.Reason, "deleted") {
			t.Errorf("Reason = %q", gone.Reason)
		}
	})
	t.Run("gone before the watch was set", func(t *testing.T) {
		// The pod was deleted between the event that made it ready and the
		// instance's watch: the cache already knows, and so must the instance.
		fc := newFakeCluster(t)
		rt := startRuntime(t, fc)
		p := podState(servingPod)
		p.Namespace, p.Name, p.UID = testNS, "never-cached", "uid-x"
		p.Labels = map[string]string{LabelManagedBy: ManagedBy, LabelSession: testSpec.Session}
		inst := rt.adopt(p)
		waitDone(t, inst)
	})
}

func TestStop(t *testing.T) {
	fc := newFakeCluster(t)
	rt := startRuntime(t, fc)
	inst, pod := serve(t, fc, rt)
	if err := rt.Stop(context.Background(), inst, "idle"); err != nil {
		t.Fatal(err)
	}
	// The pod's own grace period: a reaped instance may finish what it does.
	fc.wantDelete(t, pod, nil)
	waitDone(t, inst)

	// A pod that was replaced under the same name is not touched.
	if err := rt.Stop(context.Background(), inst, "again"); err != nil {
		t.Errorf("Stop of a pod already gone = %v, want nil", err)
	}
}

// A reap whose delete fails (the API server is down) is retried until it lands,
// still with the pod's own grace period and its UID.
func TestStopRetries(t *testing.T) {
	fc := newFakeCluster(t)
	// Reactors go in before the runtime runs: the fake's reactor chain is not safe
	// to change while the runtime calls it (it records events in the background).
	var calls atomic.Int32
	fc.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) == 1 {
			fc.deletes <- a.(k8stesting.DeleteActionImpl)
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	rt := startRuntime(t, fc)
	inst, pod := serve(t, fc, rt)
	err := rt.Stop(context.Background(), inst, "idle")
	var re *activator.RuntimeError
	if !errors.As(err, &re) {
		t.Fatalf("Stop = %v, want a RuntimeError", err)
	}
	fc.wantDelete(t, pod, nil) // refused
	fc.wantDelete(t, pod, nil) // retried, lands
	waitDone(t, inst)
}

func TestSurvivors(t *testing.T) {
	rec := Build(&Template{Spec: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "shipper"}, {Name: "server"}}}}, Container: 1, Port: 50051},
		testNS, testSpec)
	pod := func(name string, opts ...func(*corev1.Pod)) *corev1.Pod {
		p := rec.DeepCopy()
		p.Name, p.UID, p.GenerateName = name, types.UID("uid-"+name), ""
		if name != "serving" {
			p.Labels[LabelSession] = "session-" + name
		}
		p.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		for _, o := range opts {
			o(p)
		}
		return p
	}
	serving := pod("serving", servingPod)
	pending := pod("pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })
	unrecorded := pod("unrecorded", servingPod, func(p *corev1.Pod) { delete(p.Annotations, AnnoTokenHash) })
	restartedPod := pod("restarted", servingPod, func(p *corev1.Pod) { p.Status.ContainerStatuses[1].RestartCount = 1 })
	terminating := pod("terminating", servingPod, deleting, func(p *corev1.Pod) { p.Finalizers = []string{"example.com/hold"} })
	foreign := pod("foreign", servingPod, func(p *corev1.Pod) { p.Labels = map[string]string{"app": "other"} })

	fc := newFakeCluster(t, serving, pending, unrecorded, restartedPod, terminating, foreign)
	rt := startRuntime(t, fc)
	svs := rt.Survivors()
	if len(svs) != 1 {
		t.Fatalf("Survivors = %d, want 1 (the serving pod): %+v", len(svs), svs)
	}
	sv := svs[0]
	if sv.Instance.Name() != "serving" || sv.Instance.Addr() != "10.1.2.3:50051" {
		t.Errorf("survivor %s at %s, want serving at 10.1.2.3:50051", sv.Instance.Name(), sv.Instance.Addr())
	}
	if sv.Spec.Session != testSpec.Session || sv.Spec.TokenHash != testSpec.TokenHash ||
		sv.Spec.Size.String() != testSpec.Size.String() || sv.Spec.IdleTimeout != testSpec.IdleTimeout {
		t.Errorf("survivor spec %+v, want %+v", sv.Spec, testSpec)
	}
	if !sv.Created.Equal(serving.CreationTimestamp.Time) {
		t.Errorf("Created = %v, want the pod's creation time", sv.Created)
	}

	deleted := map[string]bool{}
	for range 3 {
		d := fc.nextDelete(t)
		deleted[d.Name] = true
		if pre := d.DeleteOptions.Preconditions; pre == nil || pre.UID == nil || string(*pre.UID) != "uid-"+d.Name {
			t.Errorf("delete of %s without its UID as a precondition", d.Name)
		}
	}
	for _, name := range []string{"pending", "unrecorded", "restarted"} {
		if !deleted[name] {
			t.Errorf("pod %s was not deleted (deleted: %v)", name, deleted)
		}
	}
	select {
	case d := <-fc.deletes:
		t.Errorf("unexpected delete of %s", d.Name)
	default:
	}

	// The adopted instance ends with its pod like any other.
	if err := fc.CoreV1().Pods(testNS).Delete(context.Background(), "serving", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sv.Instance)
}
