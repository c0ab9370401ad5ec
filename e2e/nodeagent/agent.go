package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// Defaults, chosen to match the kubelet where it has an opinion.
const (
	defaultPods             = 110
	defaultBackOff          = 10 * time.Second
	defaultMaxBackOff       = 5 * time.Minute
	defaultImagePullBackOff = time.Second
	defaultStopGrace        = 5 * time.Second
	// backOffReset is how long a container must run before a crash counts as the
	// first again, as in the kubelet.
	backOffReset = 10 * time.Minute
	apiTimeout   = 10 * time.Second
	// minGracePeriod is the kubelet's minimum time between SIGTERM and SIGKILL.
	minGracePeriod = 2 * time.Second
	notReadyTaint  = "node.kubernetes.io/not-ready"
)

// Options configure an Agent.
type Options struct {
	// Client talks to the API server. The agent needs to read and write nodes,
	// pods, pods/status, configmaps and secrets; the admin client is enough.
	Client kubernetes.Interface
	// Nodes to register and serve. At least one.
	Nodes []Node
	// Images maps a container image, exactly as written in the pod, to the local
	// executable that stands in for it. A container whose image is not here
	// reports ErrImagePull and then ImagePullBackOff.
	Images map[string]string
	// ProbePeriod, when positive, replaces every readinessProbe's periodSeconds, so
	// that tests need not wait ten seconds for a failing probe to count.
	ProbePeriod time.Duration
	// BackOff is the first crash-loop delay (default 10s, as the kubelet); it
	// doubles per crash up to MaxBackOff (default 5m).
	BackOff, MaxBackOff time.Duration
	// ImagePullBackOff is how long a container shows ErrImagePull before it shows
	// ImagePullBackOff (default 1s).
	ImagePullBackOff time.Duration
	// MaxGracePeriod, when positive, caps the grace period given to a process
	// between SIGTERM and SIGKILL when its pod is deleted.
	MaxGracePeriod time.Duration
	// StopGrace is the grace period given to every process when the agent stops
	// (default 5s).
	StopGrace time.Duration
	// IPPrefix is the first two octets of pod IPs, such as "127.42". Each pod gets
	// the next address of that /16. Empty picks a random 127.x, so that agents of
	// test packages running in parallel do not hand out the same address.
	IPPrefix string
	// LogDir receives one log file per container. Empty means a temporary
	// directory removed by Stop.
	LogDir string
	// Logger receives the agent's own log. Nil discards it.
	Logger *slog.Logger
}

// Node is one node the agent registers and serves.
type Node struct {
	Name string
	// CPU and Memory are the node's capacity and allocatable, as quantities
	// ("2", "4Gi").
	CPU, Memory string
	// Pods is the maximum number of pods (default 110).
	Pods   int
	Labels map[string]string
}

// Agent registers nodes and runs the pods bound to them as local processes.
type Agent struct {
	client kubernetes.Interface
	opts   Options
	log    *slog.Logger
	nodes  map[string]corev1.ResourceList // allocatable, by node name
	logDir string
	ownDir bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	stopping bool
	workers  map[types.UID]*podWorker
	finished map[types.UID]bool // pods whose worker ended; a stale event must not revive them
	ipPrefix string
	ipSeq    int
	pids     map[string]int // "uid/container" -> pid of the running process
	readyAt  map[types.UID]readyMark
}

// readyMark is when a pod was reported Ready; final once the write landed.
type readyMark struct {
	at    time.Time
	final bool
}

// Start registers the nodes, marks them Ready without the not-ready taint, and
// starts serving the pods bound to them. It returns once the pod watches are
// synced. Stop must be called when done.
func Start(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Client == nil {
		return nil, errors.New("nodeagent: Options.Client is nil")
	}
	if len(opts.Nodes) == 0 {
		return nil, errors.New("nodeagent: Options.Nodes is empty")
	}
	if opts.BackOff <= 0 {
		opts.BackOff = defaultBackOff
	}
	if opts.MaxBackOff <= 0 {
		opts.MaxBackOff = defaultMaxBackOff
	}
	if opts.ImagePullBackOff <= 0 {
		opts.ImagePullBackOff = defaultImagePullBackOff
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = defaultStopGrace
	}
	if opts.IPPrefix == "" {
		opts.IPPrefix = fmt.Sprintf("127.%d", 1+rand.IntN(254))
	}
	if ip, err := netip.ParseAddr(opts.IPPrefix + ".0.1"); err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("nodeagent: IPPrefix %q does not make a loopback address", opts.IPPrefix)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		client:   opts.Client,
		opts:     opts,
		log:      log,
		nodes:    map[string]corev1.ResourceList{},
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]bool{},
		ipPrefix: opts.IPPrefix,
		pids:     map[string]int{},
		readyAt:  map[types.UID]readyMark{},
		logDir:   opts.LogDir,
	}
	if a.logDir == "" {
		var err error
		if a.logDir, err = os.MkdirTemp("", "tether-nodeagent-"); err != nil {
			return nil, err
		}
		a.ownDir = true
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())

	for _, n := range opts.Nodes {
		alloc, err := n.resources()
		if err != nil {
			a.Stop()
			return nil, err
		}
		a.nodes[n.Name] = alloc
		if err := a.register(ctx, n, alloc); err != nil {
			a.Stop()
			return nil, fmt.Errorf("nodeagent: register node %s: %w", n.Name, err)
		}
	}

	var synced []cache.InformerSynced
	for _, n := range opts.Nodes {
		lw := cache.NewListWatchFromClient(a.client.CoreV1().RESTClient(), "pods", metav1.NamespaceAll,
			fields.OneTermEqualSelector("spec.nodeName", n.Name))
		inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { a.dispatch(obj) },
			UpdateFunc: func(_, obj any) { a.dispatch(obj) },
			DeleteFunc: func(obj any) { a.deleted(obj) },
		}); err != nil {
			a.Stop()
			return nil, err
		}
		a.wg.Go(func() { inf.RunWithContext(a.ctx) })
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		a.Stop()
		return nil, fmt.Errorf("nodeagent: pod watch did not sync: %w", context.Cause(ctx))
	}
	return a, nil
}

// Stop kills every process (SIGTERM, then SIGKILL after StopGrace) and stops
// watching. It leaves the nodes and pods in the API as they are, as a kubelet that
// goes away does. It may be called more than once.
func (a *Agent) Stop() {
	a.mu.Lock()
	a.stopping = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	if a.ownDir {
		_ = os.RemoveAll(a.logDir)
	}
}

// LogDir is where the container logs are written.
func (a *Agent) LogDir() string { return a.logDir }

// ContainerLog is the path of a container's log file; every run of the container
// appends to it.
func (a *Agent) ContainerLog(pod *corev1.Pod, container string) string {
	return filepath.Join(a.logDir, fmt.Sprintf("%s_%s_%s_%s.log", pod.Namespace, pod.Name, pod.UID, container))
}

// PID returns the process id of a pod's running container, if it runs.
func (a *Agent) PID(uid types.UID, container string) (int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pid, ok := a.pids[string(uid)+"/"+container]
	return pid, ok
}

// ReadyAt returns when the agent reported the pod Ready: the time it sent the
// status write that first set the Ready condition to True. Later readiness flaps
// do not move it. It is on this machine's clock, so a test can compare it with
// what the pod's process recorded.
func (a *Agent) ReadyAt(uid types.UID) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.readyAt[uid]
	return m.at, ok
}

// markReady records a status write that sets the pod Ready: before it is sent
// (final false, replaced by the next attempt if it fails), and once it landed.
func (a *Agent) markReady(uid types.UID, t time.Time, final bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.readyAt[uid].final {
		return
	}
	a.readyAt[uid] = readyMark{at: t, final: final}
}

func (a *Agent) setPID(uid types.UID, container string, pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pid == 0 {
		delete(a.pids, string(uid)+"/"+container)
	} else {
		a.pids[string(uid)+"/"+container] = pid
	}
}

// dispatch hands a pod to its worker, starting one for a pod seen the first time.
// It runs in an informer callback and never blocks.
func (a *Agent) dispatch(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	if w == nil {
		if a.stopping || a.finished[pod.UID] {
			a.mu.Unlock()
			return
		}
		w = newPodWorker(a, pod)
		a.workers[pod.UID] = w
		a.wg.Go(w.run)
	}
	a.mu.Unlock()
	w.offer(pod, false)
}

// deleted tells a pod's worker that the pod is gone from the API, which happens
// after the worker finalized it or when someone deleted it with grace period 0.
func (a *Agent) deleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	a.mu.Unlock()
	if w != nil {
		w.offer(pod, true)
	}
}

// workerDone forgets a worker; its pod is not served again.
func (a *Agent) workerDone(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.workers, uid)
	a.finished[uid] = true
}

// allocateIP returns the next unused loopback address. Addresses are not reused,
// so a new pod never meets the lingering socket of a dead one.
func (a *Agent) allocateIP() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.ipSeq
	a.ipSeq++
	return fmt.Sprintf("%s.%d.%d", a.ipPrefix, n/254%256, n%254+1)
}

func (n Node) resources() (corev1.ResourceList, error) {
	cpu, err := resource.ParseQuantity(n.CPU)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: node %s: cpu %q: %w", n.Name, n.CPU, err)
	}
	mem, err := resource.ParseQuantity(n.Memory)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: node %s: memory %q: %w", n.Name, n.Memory, err)
	}
	pods := n.Pods
	if pods <= 0 {
		pods = defaultPods
	}
	return corev1.ResourceList{
		corev1.ResourceCPU:              cpu,
		corev1.ResourceMemory:           mem,
		corev1.ResourcePods:             *resource.NewQuantity(int64(pods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}, nil
}

// register creates the node (or takes over an existing one), reports it Ready with
// the given capacity, and removes the not-ready taint that the TaintNodesByCondition
// admission plugin puts on every new node. Without a node lifecycle controller
// nothing puts it back.
func (a *Agent) register(ctx context.Context, n Node, alloc corev1.ResourceList) error {
	nodes := a.client.CoreV1().Nodes()
	labels := map[string]string{
		corev1.LabelHostname:   n.Name,
		corev1.LabelOSStable:   runtime.GOOS,
		corev1.LabelArchStable: runtime.GOARCH,
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status = corev1.NodeStatus{
			Capacity:    alloc,
			Allocatable: alloc,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "node agent is posting ready status"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "node agent has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "node agent has sufficient PID available"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem: runtime.GOOS,
				Architecture:    runtime.GOARCH,
				KubeletVersion:  "tether-e2e-nodeagent",
			},
		}
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		taints := node.Spec.Taints[:0]
		for _, t := range node.Spec.Taints {
			if t.Key != notReadyTaint && t.Key != corev1.TaintNodeUnreachable {
				taints = append(taints, t)
			}
		}
		if len(taints) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = taints
		_, err = nodes.Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
}
