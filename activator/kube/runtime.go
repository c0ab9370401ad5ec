package kube

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tetherhq/tether/activator"
)

// Config tunes the runtime.
type Config struct {
	// Namespace holds the session pods (TETHER_NAMESPACE).
	Namespace string
	Template  *Template
	// DeleteTimeout bounds one delete call. A delete that fails is retried in
	// the background until it lands, so an API outage never leaks a pod.
	DeleteTimeout time.Duration
	Log           *slog.Logger
}

// Runtime starts one pod per session and watches all of them through one shared
// informer, filtered by the managed-by label. It makes no API call per request:
// a session costs one create and one delete, and readiness arrives as watch events.
type Runtime struct {
	client kubernetes.Interface
	cfg    Config
	log    *slog.Logger

	informer cache.SharedIndexInformer
	lister   listers.PodLister

	mu       sync.Mutex
	watch    map[string]func(p *corev1.Pod, deleted bool) // by session id
	closed   bool
	deletes  sync.WaitGroup
	stop     chan struct{} // closed when Close gives up on the deletes still retrying
	stopOnce sync.Once

	stopInformer context.CancelFunc
	informerDone chan struct{} // closed when the informer has stopped
}

// New returns a runtime that creates pods with client.
func New(client kubernetes.Interface, cfg Config) *Runtime {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DeleteTimeout <= 0 {
		cfg.DeleteTimeout = 10 * time.Second
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managedSelector }))
	pods := factory.Core().V1().Pods()
	r := &Runtime{
		client:   client,
		cfg:      cfg,
		log:      cfg.Log,
		informer: pods.Informer(),
		lister:   pods.Lister(),
		watch:    make(map[string]func(*corev1.Pod, bool)),
		stop:     make(chan struct{}),
	}
	r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.dispatch(obj, false) },
		UpdateFunc: func(_, obj any) { r.dispatch(obj, false) },
		DeleteFunc: func(obj any) { r.dispatch(obj, true) },
	})
	return r
}

// Sync starts the informer and returns once its cache holds every managed pod,
// or when ctx ends. ctx bounds only the wait: the informer runs until Close,
// since the runtime is deaf without it. (It used to run until ctx ended, and a
// caller that bounded Sync with a timeout, as the gateway does, stopped every
// watch the moment Sync returned: no activation ever saw its pod become ready.)
// After a failed Sync the runtime is stopped.
func (r *Runtime) Sync(ctx context.Context) error {
	r.mu.Lock()
	if r.informerDone == nil && !r.closed {
		ictx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		r.stopInformer, r.informerDone = cancel, done
		go func() {
			defer close(done)
			r.informer.RunWithContext(ictx)
		}()
	}
	r.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), r.informer.HasSynced) {
		r.haltInformer()
		return &activator.RuntimeError{Op: "watching pods in namespace " + r.cfg.Namespace, Err: ctx.Err()}
	}
	return nil
}

// haltInformer stops the informer and waits for it to return.
func (r *Runtime) haltInformer() {
	r.mu.Lock()
	stop, done := r.stopInformer, r.informerDone
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Synced reports whether the pod cache has synced.
func (r *Runtime) Synced() bool { return r.informer.HasSynced() }

// dispatch hands a pod event to whoever watches that pod's session. It runs on
// the informer's goroutine, so watchers only record and signal; they never block.
func (r *Runtime) dispatch(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		// A delete seen only on relist arrives as a tombstone (case B27).
		tomb, isTomb := obj.(cache.DeletedFinalStateUnknown)
		if !isTomb {
			return
		}
		if p, ok = tomb.Obj.(*corev1.Pod); !ok {
			return
		}
		deleted = true
	}
	r.mu.Lock()
	f := r.watch[p.Labels[LabelSession]]
	r.mu.Unlock()
	if f != nil {
		f(p, deleted)
	}
}

// setWatch sets who hears the events of a session's pods; nil stops them.
// Watches are keyed by session, not by pod name, so that Start can listen
// before the API server has named the pod.
func (r *Runtime) setWatch(session string, f func(*corev1.Pod, bool)) {
	r.mu.Lock()
	if f == nil {
		delete(r.watch, session)
	} else {
		r.watch[session] = f
	}
	r.mu.Unlock()
}

// Start creates the session's pod and waits, on watch events, until it is ready
// or has failed for good. A pod that fails is deleted before Start returns its
// error; so is one whose wait ends with ctx.
func (r *Runtime) Start(ctx context.Context, spec activator.Spec) (activator.Instance, error) {
	began := time.Now()
	// Listen before creating: the pod's first events, even its deletion, may
	// come before the create returns, and a pod that is gone by then leaves no
	// trace in the cache.
	type seen struct {
		pod     *corev1.Pod
		deleted bool
	}
	var (
		mu      sync.Mutex
		pods    = map[types.UID]seen{} // the session's pods as last seen; normally one
		changed = make(chan struct{}, 1)
	)
	r.setWatch(spec.Session, func(p *corev1.Pod, deleted bool) {
		mu.Lock()
		pods[p.UID] = seen{p, deleted || pods[p.UID].deleted}
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	pod := Build(r.cfg.Template, r.cfg.Namespace, spec)
	spec.Report(activator.PhaseRequested, "creating pod")
	created, err := r.client.CoreV1().Pods(r.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		r.setWatch(spec.Session, nil)
		if ctx.Err() != nil {
			// The create may have reached the API server even though its answer did
			// not reach us: remove whatever carries this session's label.
			r.deleteSession(spec.Session)
			return nil, ctx.Err()
		}
		return nil, apiError("creating a pod", err)
	}
	name, uid := created.Name, created.UID
	log := r.log.With("session", spec.Session, "pod", name)
	log.Debug("pod created")

	order := []activator.Phase{activator.PhaseRequested, activator.PhaseScheduled, activator.PhaseStarted, activator.PhaseReady}
	reported, lastDetail := 0, ""
	report := func(st startState) {
		i := slices.Index(order, st.phase)
		if i < reported {
			return
		}
		// One watch event may carry several steps (scheduled and started at
		// once); each phase is still reported, in order.
		for j := reported + 1; j < i; j++ {
			spec.Report(order[j], "")
		}
		if i > reported || st.detail != lastDetail {
			spec.Report(st.phase, st.detail)
		}
		reported, lastDetail = i, st.detail
	}
	for {
		select {
		case <-changed:
			mu.Lock()
			last := pods[uid]
			mu.Unlock()
			if last.deleted {
				r.setWatch(spec.Session, nil)
				return nil, &activator.StartError{Instance: name, Reason: "pod was deleted while it started"}
			}
			if last.pod == nil {
				continue
			}
			st := classifyStart(last.pod)
			if st.failed != nil {
				r.setWatch(spec.Session, nil)
				r.deleteLater(name, uid, noGrace, "failed to start")
				log.Info("pod failed to start", "err", st.failed)
				return nil, st.failed
			}
			report(st)
			if st.ready {
				inst := r.adopt(last.pod)
				r.record(inst.name, inst.uid, ReasonActivated, "serving session "+spec.Session+" ("+spec.Size.String()+
					"), ready "+time.Since(began).Round(time.Millisecond).String()+" after the gateway asked for it")
				return inst, nil
			}
		case <-ctx.Done():
			r.setWatch(spec.Session, nil)
			r.deleteLater(name, uid, noGrace, "activation abandoned")
			return nil, ctx.Err()
		}
	}
}

// instance is a pod serving a session.
type instance struct {
	name    string
	uid     types.UID
	session string
	addr    string

	once sync.Once
	done chan struct{}
	err  error
}

func (i *instance) Name() string          { return i.name }
func (i *instance) Addr() string          { return i.addr }
func (i *instance) Done() <-chan struct{} { return i.done }
func (i *instance) Err() error {
	select {
	case <-i.done:
		return i.err
	default:
		return nil
	}
}

func (i *instance) end(reason string) {
	i.once.Do(func() {
		i.err = &activator.GoneError{Instance: i.name, Reason: reason}
		close(i.done)
	})
}

// adopt turns a serving pod into an instance whose Done closes when the pod goes
// away: deleted, evicted, failed, or its serving container restarted.
func (r *Runtime) adopt(p *corev1.Pod) *instance {
	inst := &instance{
		name:    p.Name,
		uid:     p.UID,
		session: p.Labels[LabelSession],
		addr:    net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(r.cfg.Template.Port))),
		done:    make(chan struct{}),
	}
	r.setWatch(inst.session, func(p *corev1.Pod, deleted bool) {
		if p.UID == inst.uid {
			r.observe(inst, p, deleted)
		}
	})
	// Events that arrived between the one that made the pod ready (or the list
	// that found it) and the watch above went to no one, but the cache has
	// already applied them, so a pod deleted meanwhile is not missed (case B27).
	if cur, err := r.lister.Pods(r.cfg.Namespace).Get(p.Name); err != nil || cur.UID != inst.uid {
		r.observe(inst, p, true)
	} else {
		r.observe(inst, cur, false)
	}
	return inst
}

// observe ends inst if its pod, as last seen, no longer serves. It runs on the
// informer's goroutine (and once in adopt), so it must not block.
func (r *Runtime) observe(inst *instance, p *corev1.Pod, deleted bool) {
	if deleted {
		r.setWatch(inst.session, nil)
		inst.end("pod " + inst.name + " was deleted")
		return
	}
	select {
	case <-inst.done:
		return // already ended; its delete, if any, is under way
	default:
	}
	if reason := goneReason(p, r.cfg.Template.serving()); reason != "" {
		inst.end(reason)
		if p.DeletionTimestamp == nil {
			// A pod that failed or lost its state is of no more use; one already
			// terminating keeps the grace period it was given.
			r.deleteLater(p.Name, p.UID, noGrace, reason)
		}
	}
}

// Stop deletes the instance's pod, with a UID precondition so that a pod that
// replaced it under the same name is never touched. The pod's own grace period
// applies, so the instance can finish what it was doing.
func (r *Runtime) Stop(ctx context.Context, inst activator.Instance, reason string) error {
	i, ok := inst.(*instance)
	if !ok {
		return errors.New("not a pod of this runtime")
	}
	// Close waits for this delete too: a gateway that stops right after ending a
	// session must not exit with its delete still in flight.
	if r.begin() {
		defer r.deletes.Done()
	}
	r.record(i.name, i.uid, ReasonReaped, reason)
	err := r.delete(ctx, i.name, i.uid, nil)
	if err != nil {
		r.deleteLater(i.name, i.uid, nil, reason)
		return apiError("deleting pod "+i.name, err)
	}
	r.log.Info("pod deleted", "pod", i.name, "reason", reason)
	return nil
}

// begin counts a delete that Close must wait for, unless Close has begun.
func (r *Runtime) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.deletes.Add(1)
	return true
}

// noGrace deletes a pod that has nothing left to finish (it failed, was never
// handed out, or lost its state) without a grace period.
var noGrace = new(int64)

func (r *Runtime) delete(ctx context.Context, name string, uid types.UID, grace *int64) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DeleteTimeout)
	defer cancel()
	err := r.client.CoreV1().Pods(r.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions:      &metav1.Preconditions{UID: &uid},
		GracePeriodSeconds: grace,
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or replaced by another pod that is not ours to delete
	}
	return err
}

// deleteLater deletes a pod in the background at once, retrying with backoff until
// the delete lands or the pod is gone, so an API outage delays a delete but
// never loses it. grace nil is the pod's own grace period.
func (r *Runtime) deleteLater(name string, uid types.UID, grace *int64, reason string) {
	r.retry("deleting pod "+name, func(ctx context.Context) error {
		return r.delete(ctx, name, uid, grace)
	}, func() {
		r.log.Debug("pod deleted", "pod", name, "reason", reason)
	})
}

// deleteSession deletes every pod labelled with a session, for a create whose
// outcome is unknown: the request may have reached the API server even though
// its answer did not reach us.
func (r *Runtime) deleteSession(session string) {
	r.retry("deleting the pods of session "+session+" after an interrupted create", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.DeleteTimeout)
		defer cancel()
		return r.client.CoreV1().Pods(r.cfg.Namespace).DeleteCollection(ctx,
			metav1.DeleteOptions{GracePeriodSeconds: noGrace},
			metav1.ListOptions{LabelSelector: managedSelector + "," + LabelSession + "=" + session})
	}, func() {})
}

// retry runs op in the background until it succeeds, with a backoff that
// doubles up to 10s, or until Close gives up on it; then it calls done.
func (r *Runtime) retry(what string, op func(context.Context) error, done func()) {
	if !r.begin() {
		return
	}
	go func() {
		defer r.deletes.Done()
		backoff := 100 * time.Millisecond
		for {
			err := op(context.Background())
			if err == nil {
				done()
				return
			}
			r.log.Warn(what+" failed; will retry", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-r.stop:
				t.Stop()
				return
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}()
}

// Survivors returns the managed pods that serve a session, for a gateway that
// has just started: their sessions are adopted so that tokens re-attach. Pods
// that were still starting, or have failed, or carry no readable record, are
// deleted: nobody holds a token for them. Call after Sync.
func (r *Runtime) Survivors() []activator.Survivor {
	pods, _ := r.lister.Pods(r.cfg.Namespace).List(labels.Everything())
	var out []activator.Survivor
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		rec, err := ReadRecord(p)
		switch {
		case err != nil:
			r.deleteLater(p.Name, p.UID, noGrace, "unreadable session record: "+err.Error())
			continue
		case p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning || goneReason(p, r.cfg.Template.serving()) != "":
			r.deleteLater(p.Name, p.UID, noGrace, "was not serving when the gateway started")
			continue
		}
		out = append(out, activator.Survivor{
			Instance: r.adopt(p),
			Spec:     activator.Spec{Session: rec.Session, TokenHash: rec.TokenHash, Size: rec.Size, IdleTimeout: rec.IdleTimeout},
			Created:  p.CreationTimestamp.Time,
		})
	}
	return out
}

// Close waits up to ctx for the deletes still retrying to land, then gives up on
// them and stops the informer. Pods of live sessions stay: the next gateway
// adopts them.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	defer r.haltInformer()
	done := make(chan struct{})
	go func() { r.deletes.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		r.stopOnce.Do(func() { close(r.stop) })
		<-done
		return errors.New("some pod deletes had not landed when the gateway stopped; the next gateway deletes them")
	}
}

// apiError maps an API failure to the error a client sees: a quota is
// RESOURCE_EXHAUSTED, anything else UNAVAILABLE naming the API's answer.
func apiError(op string, err error) error {
	if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota") {
		return &activator.CapacityError{Reason: err.Error()}
	}
	return &activator.RuntimeError{Op: op, Err: err}
}
