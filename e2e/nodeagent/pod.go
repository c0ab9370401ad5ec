package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podWorker owns one pod: its IP, its processes and the status written for it. Only
// run touches that state; informer callbacks, process waiters, probers and timers
// talk to it through the mailbox and the events channel.
type podWorker struct {
	a   *Agent
	uid types.UID
	log *slog.Logger

	// The mailbox keeps only the newest pod, so an informer callback never blocks.
	mu     sync.Mutex
	latest *corev1.Pod
	gone   bool
	notify chan struct{} // capacity 1

	events chan event
	done   chan struct{} // closed when run returns

	// Owned by run.
	pod        *corev1.Pod
	ip         string
	startTime  metav1.Time
	containers []*container
	written    *corev1.PodStatus // the last status the API server accepted
	retry      <-chan time.Time  // set while a status write has to be retried
}

type eventKind int

const (
	evExited      eventKind = iota // the process ended
	evProbe                        // the readiness probe changed its verdict
	evRestart                      // a back-off is over: start the container again
	evPullBackOff                  // ErrImagePull has been shown long enough
)

// event is a message to a pod's worker about one of its containers. gen is the
// container's run it is about; an event for an older run is stale and dropped.
type event struct {
	kind      eventKind
	container int
	gen       int
	ready     bool
	state     *os.ProcessState
	startErr  error
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	return &podWorker{
		a:      a,
		uid:    pod.UID,
		log:    a.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID),
		notify: make(chan struct{}, 1),
		events: make(chan event, 16),
		done:   make(chan struct{}),
	}
}

// offer puts the newest pod in the mailbox; gone means it was deleted from the API.
func (w *podWorker) offer(pod *corev1.Pod, gone bool) {
	w.mu.Lock()
	w.latest = pod
	w.gone = w.gone || gone
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) take() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

// send delivers an event from another goroutine, or drops it once the worker ended.
func (w *podWorker) send(ev event) {
	select {
	case w.events <- ev:
	case <-w.done:
	}
}

// after sends ev once d has passed.
func (w *podWorker) after(d time.Duration, ev event) {
	time.AfterFunc(d, func() { w.send(ev) })
}

func (w *podWorker) run() {
	defer w.a.workerDone(w.uid)
	defer close(w.done)
	for {
		select {
		case <-w.a.ctx.Done():
			w.killAll(w.a.opts.StopGrace)
			return
		case <-w.notify:
			pod, gone := w.take()
			if gone {
				// Deleted without waiting for us (grace period 0, or our own
				// final delete): only the processes are left to stop.
				w.killAll(w.gracePeriod(pod))
				return
			}
			w.pod = pod
			if pod.DeletionTimestamp != nil {
				w.terminate()
				return
			}
			if w.ip == "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
				w.setUp()
			}
		case ev := <-w.events:
			w.handle(ev)
		case <-w.retry:
			w.retry = nil
		}
		w.sync()
	}
}

// setUp gives the pod its address and starts its containers.
func (w *podWorker) setUp() {
	w.ip = w.a.allocateIP()
	w.startTime = metav1.Now()
	w.log.Info("pod bound", "ip", w.ip, "node", w.pod.Spec.NodeName)
	if len(w.pod.Spec.InitContainers) > 0 {
		w.log.Warn("init containers are not supported; ignoring them")
	}
	for i, spec := range w.pod.Spec.Containers {
		c := &container{
			spec: spec,
			status: corev1.ContainerStatus{
				Name:  spec.Name,
				Image: spec.Image,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
			},
		}
		w.containers = append(w.containers, c)
		binary, ok := w.a.opts.Images[spec.Image]
		if !ok {
			c.status.State.Waiting = &corev1.ContainerStateWaiting{
				Reason:  "ErrImagePull",
				Message: fmt.Sprintf("failed to pull image %q: not in the node agent's image map", spec.Image),
			}
			w.after(w.a.opts.ImagePullBackOff, event{kind: evPullBackOff, container: i})
			continue
		}
		c.binary = binary
		c.status.ImageID = "nodeagent://" + binary
		w.start(i)
	}
}

func (w *podWorker) handle(ev event) {
	if ev.container >= len(w.containers) {
		return
	}
	c := w.containers[ev.container]
	switch ev.kind {
	case evPullBackOff:
		c.status.State.Waiting = &corev1.ContainerStateWaiting{
			Reason:  "ImagePullBackOff",
			Message: fmt.Sprintf("Back-off pulling image %q", c.spec.Image),
		}
	case evProbe:
		if ev.gen == c.gen && c.running() {
			c.status.Ready = ev.ready
		}
	case evExited:
		if ev.gen == c.gen {
			w.exited(ev.container, ev.state, ev.startErr)
		}
	case evRestart:
		if ev.gen == c.gen {
			w.start(ev.container)
		}
	}
}

// terminate stops the processes of a pod being deleted, then finishes the delete
// with grace period 0, as the kubelet does: the API server keeps the pod until then.
func (w *podWorker) terminate() {
	grace := w.gracePeriod(w.pod)
	w.log.Info("pod deleted; stopping it", "grace", grace)
	w.killAll(grace)
	zero := int64(0)
	opts := metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: metav1.NewUIDPreconditions(string(w.uid))}
	for {
		ctx, cancel := context.WithTimeout(w.a.ctx, apiTimeout)
		err := w.a.client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, opts)
		cancel()
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return
		}
		w.log.Warn("finishing the delete failed; retrying", "err", err)
		select {
		case <-w.a.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// gracePeriod is the time between SIGTERM and SIGKILL for pod's processes.
func (w *podWorker) gracePeriod(pod *corev1.Pod) time.Duration {
	secs := int64(corev1.DefaultTerminationGracePeriodSeconds)
	switch {
	case pod != nil && pod.DeletionGracePeriodSeconds != nil:
		secs = *pod.DeletionGracePeriodSeconds
	case pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil:
		secs = *pod.Spec.TerminationGracePeriodSeconds
	}
	// As the kubelet: even a pod deleted with grace period 0 gets SIGTERM and two
	// seconds before SIGKILL.
	d := max(time.Duration(secs)*time.Second, minGracePeriod)
	if m := w.a.opts.MaxGracePeriod; m > 0 && d > m {
		d = m
	}
	return d
}

// killAll sends SIGTERM to every running container's process group, waits up to
// grace for them to exit, then sends SIGKILL to what is left.
func (w *podWorker) killAll(grace time.Duration) {
	var running []*container
	for _, c := range w.containers {
		c.stopProbe()
		c.gen++ // whatever the old run still reports is stale now
		if c.running() {
			running = append(running, c)
			_ = syscall.Kill(-c.pid, syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	for _, c := range running {
		select {
		case <-c.exited:
		case <-deadline.C:
			// Grace is over for everyone: kill the rest and wait for them.
			for _, c := range running {
				_ = syscall.Kill(-c.pid, syscall.SIGKILL)
			}
			<-c.exited
		}
	}
	for _, c := range running {
		<-c.exited
		w.a.setPID(w.uid, c.spec.Name, 0)
		c.pid = 0
	}
}

// sync writes the pod's status if it changed since the last write. A failed write
// is retried a second later, so an API server that is down delays reports but
// never blocks the processes.
func (w *podWorker) sync() {
	if w.pod == nil || w.ip == "" {
		return
	}
	pods := w.a.client.CoreV1().Pods(w.pod.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		want := w.status()
		if w.written != nil && equality.Semantic.DeepEqual(*w.written, want) {
			return
		}
		pod := w.pod.DeepCopy()
		pod.Status = want
		// The moment the agent reports the pod Ready, taken just before the write
		// that carries it, for tests that measure what happens after Ready. It is
		// recorded before the write, since a watcher may see the pod Ready before
		// the write's answer reaches the agent, and confirmed once it lands.
		var becameReady time.Time
		if podReady(want) && (w.written == nil || !podReady(*w.written)) {
			becameReady = time.Now()
			w.a.markReady(w.uid, becameReady, false)
		}
		ctx, cancel := context.WithTimeout(w.a.ctx, apiTimeout)
		updated, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			var fresh *corev1.Pod
			fresh, err = pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
			cancel()
			if err == nil && fresh.UID == w.uid {
				w.pod = fresh
				continue
			}
		} else {
			cancel()
		}
		if apierrors.IsNotFound(err) {
			return // the delete event is on its way
		}
		if err != nil {
			if w.a.ctx.Err() == nil {
				w.log.Warn("status update failed; will retry", "err", err)
				w.retry = time.After(time.Second)
			}
			return
		}
		w.pod = updated
		w.written = &want
		if !becameReady.IsZero() {
			w.a.markReady(w.uid, becameReady, true)
		}
		return
	}
	w.retry = time.After(time.Second)
}

func podReady(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// status computes the pod status to report from the containers' state.
func (w *podWorker) status() corev1.PodStatus {
	st := *w.pod.Status.DeepCopy()
	st.ObservedGeneration = w.pod.Generation
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP = w.ip
	st.PodIPs = []corev1.PodIP{{IP: w.ip}}
	st.StartTime = &w.startTime
	st.ContainerStatuses = make([]corev1.ContainerStatus, 0, len(w.containers))
	allReady := true
	var unready []string
	for _, c := range w.containers {
		cs := *c.status.DeepCopy()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			allReady = false
			unready = append(unready, cs.Name)
		}
	}
	st.Phase = w.phase()
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
	}

	prev := w.pod.Status.Conditions
	if w.written != nil {
		prev = w.written.Conditions
	}
	var conds []corev1.PodCondition
	for _, c := range w.pod.Status.Conditions {
		if !ownCondition(c.Type) {
			conds = append(conds, c) // PodScheduled and whatever else is not ours
		}
	}
	notReady := func(t corev1.PodConditionType) corev1.PodCondition {
		if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
			return condition(prev, t, corev1.ConditionFalse, "PodCompleted", "")
		}
		return condition(prev, t, corev1.ConditionFalse, "ContainersNotReady",
			fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " ")))
	}
	conds = append(conds,
		condition(prev, corev1.PodReadyToStartContainers, corev1.ConditionTrue, "", ""),
		condition(prev, corev1.PodInitialized, corev1.ConditionTrue, "", ""))
	if allReady {
		conds = append(conds, condition(prev, corev1.ContainersReady, corev1.ConditionTrue, "", ""))
		if gate := w.unreadyGate(); gate != "" {
			conds = append(conds, condition(prev, corev1.PodReady, corev1.ConditionFalse, "ReadinessGatesNotReady",
				fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", gate)))
		} else {
			conds = append(conds, condition(prev, corev1.PodReady, corev1.ConditionTrue, "", ""))
		}
	} else {
		conds = append(conds, notReady(corev1.ContainersReady), notReady(corev1.PodReady))
	}
	for i := range conds {
		conds[i].ObservedGeneration = w.pod.Generation
	}
	st.Conditions = conds
	return st
}

func ownCondition(t corev1.PodConditionType) bool {
	switch t {
	case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady:
		return true
	}
	return false
}

// condition builds a condition, keeping its transition time from prev when its
// status did not change.
func condition(prev []corev1.PodCondition, t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) corev1.PodCondition {
	c := corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
	for _, p := range prev {
		if p.Type == t && p.Status == s {
			c.LastTransitionTime = p.LastTransitionTime
		}
	}
	return c
}

// unreadyGate returns the first readiness gate whose condition is not True.
func (w *podWorker) unreadyGate() string {
	for _, g := range w.pod.Spec.ReadinessGates {
		ok := false
		for _, c := range w.pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			return string(g.ConditionType)
		}
	}
	return ""
}

// phase follows the kubelet's getPhase for pods without init containers. A
// terminal phase never changes again; the API server would refuse it.
func (w *podWorker) phase() corev1.PodPhase {
	if p := w.pod.Status.Phase; p == corev1.PodSucceeded || p == corev1.PodFailed {
		return p
	}
	var waiting, running, stopped, succeeded int
	for _, c := range w.containers {
		s := c.status
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.LastTerminationState.Terminated != nil:
			stopped++ // waiting to restart after it ran
		default:
			waiting++
		}
	}
	policy := w.pod.Spec.RestartPolicy
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if policy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if stopped == succeeded && w.allFinished() {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever && w.allFinished() {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

func (w *podWorker) allFinished() bool {
	for _, c := range w.containers {
		if !c.finished {
			return false
		}
	}
	return true
}
