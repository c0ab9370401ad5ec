package kube

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherhq/tether/activator"
)

// podState builds a pod named p1 with a serving container named server, shaped
// by the options, the way the kubelet and the scheduler would report it.
func podState(opts ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "ns", UID: "uid-1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func onNode(p *corev1.Pod) { p.Spec.NodeName = "node-1" }

func withIP(p *corev1.Pod) { p.Status.PodIP = "10.0.0.7" }

func phase(ph corev1.PodPhase) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func cond(t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg})
	}
}

var ready = cond(corev1.PodReady, corev1.ConditionTrue, "", "")

func container(name string, st corev1.ContainerState, opts ...func(*corev1.ContainerStatus)) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		cs := corev1.ContainerStatus{Name: name, State: st}
		for _, o := range opts {
			o(&cs)
		}
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, cs)
	}
}

func initContainer(name string, st corev1.ContainerState) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: name, State: st})
	}
}

func waitingIn(reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

func terminated(code int32, reason string) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}
}

var running = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}

func restarted(n int32, last corev1.ContainerState) func(*corev1.ContainerStatus) {
	return func(cs *corev1.ContainerStatus) { cs.RestartCount, cs.LastTerminationState = n, last }
}

func deleting(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }

func TestClassifyStartProgress(t *testing.T) {
	cases := []struct {
		name   string
		pod    *corev1.Pod
		phase  activator.Phase
		detail string
		ready  bool
	}{
		{"created", podState(), activator.PhaseRequested, "Pending", false},
		{"not yet seen by anyone", podState(phase("")), activator.PhaseRequested, "", false},
		{"bound", podState(onNode), activator.PhaseScheduled, "node node-1", false},
		{"container creating", podState(onNode, container("server", waitingIn("ContainerCreating", ""))),
			activator.PhaseScheduled, "ContainerCreating", false},
		{"started", podState(onNode, phase(corev1.PodRunning), withIP, container("server", running)),
			activator.PhaseStarted, "container server running", false},
		{"Ready but no IP yet", podState(onNode, phase(corev1.PodRunning), ready, container("server", running)),
			activator.PhaseStarted, "container server running", false},
		{"IP but not Ready", podState(onNode, phase(corev1.PodRunning), withIP, cond(corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", ""),
			container("server", running)), activator.PhaseStarted, "container server running", false},
		{"ready", podState(onNode, phase(corev1.PodRunning), withIP, ready, container("server", running)),
			activator.PhaseReady, "10.0.0.7", true},
		{"after its init containers completed", podState(onNode, phase(corev1.PodRunning), withIP, ready,
			initContainer("migrate", terminated(0, "Completed")), container("server", running)),
			activator.PhaseReady, "10.0.0.7", true},
		{"waiting for a scheduling gate", podState(cond(corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonSchedulingGated, "gated")),
			activator.PhaseRequested, "Pending", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := classifyStart(tc.pod)
			if st.failed != nil {
				t.Fatalf("failed = %v, want progress", st.failed)
			}
			if st.phase != tc.phase || st.detail != tc.detail || st.ready != tc.ready {
				t.Errorf("= %s (%q) ready=%v, want %s (%q) ready=%v", st.phase, st.detail, st.ready, tc.phase, tc.detail, tc.ready)
			}
		})
	}
}

func TestClassifyStartFailures(t *testing.T) {
	type want struct {
		capacity bool     // a *activator.CapacityError, else a *activator.StartError
		contains []string // in the error's message
	}
	cases := []struct {
		name string
		pod  *corev1.Pod
		want want
	}{
		{"unschedulable", podState(cond(corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonUnschedulable,
			"0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")),
			want{true, []string{"0/3 nodes are available: 3 Insufficient memory."}}},
		{"terminated before ready", podState(onNode, phase(corev1.PodRunning), withIP, container("server", terminated(3, "Error"))),
			want{false, []string{"container server", "exit code 3", "before it was ready"}}},
		{"killed before ready", podState(onNode, phase(corev1.PodRunning), container("server", corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Signal: 9, Reason: "OOMKilled"}})),
			want{false, []string{"killed by signal 9", "OOMKilled"}}},
		{"crash loop", podState(onNode, phase(corev1.PodRunning), container("server", waitingIn("CrashLoopBackOff", "back-off 10s restarting failed container"),
			restarted(2, terminated(2, "Error")))),
			want{false, []string{"CrashLoopBackOff", "back-off 10s", "exit code 2"}}},
		{"restarted before ready", podState(onNode, phase(corev1.PodRunning), container("server", running, restarted(1, terminated(1, "Error")))),
			want{false, []string{"restarted before it was ready", "exit code 1"}}},
		{"failed", podState(onNode, phase(corev1.PodFailed), container("server", terminated(1, "Error"))),
			want{false, []string{"pod failed", "container server ended: exit code 1 (Error)"}}},
		{"evicted", podState(onNode, phase(corev1.PodFailed), func(p *corev1.Pod) {
			p.Status.Reason, p.Status.Message = "Evicted", "The node was low on resource: ephemeral-storage."
		}, container("server", terminated(137, "Error"))),
			want{false, []string{"pod failed: Evicted: The node was low on resource: ephemeral-storage.", "exit code 137"}}},
		{"succeeded", podState(onNode, phase(corev1.PodSucceeded), container("server", terminated(0, "Completed"))),
			want{false, []string{"pod succeeded", "exit code 0"}}},
		{"deleting", podState(onNode, deleting), want{false, []string{"being deleted"}}},
		{"init container failed", podState(onNode, initContainer("migrate", terminated(1, "Error")), container("server", waitingIn("PodInitializing", ""))),
			want{false, []string{"container migrate", "exit code 1"}}},
		{"init container crash loop", podState(onNode, initContainer("migrate", waitingIn("CrashLoopBackOff", "back-off")),
			container("server", waitingIn("PodInitializing", ""))),
			want{false, []string{"container migrate", "CrashLoopBackOff"}}},
		{"sidecar cannot pull", podState(onNode, container("shipper", waitingIn("ErrImagePull", "not found")), container("server", running)),
			want{false, []string{"container shipper", "ErrImagePull: not found"}}},
	}
	for reason := range waitingFatal {
		cases = append(cases, struct {
			name string
			pod  *corev1.Pod
			want want
		}{"waiting " + reason, podState(onNode, container("server", waitingIn(reason, "because "+reason))),
			want{false, []string{"container server", reason + ": because " + reason}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := classifyStart(tc.pod)
			if st.failed == nil {
				t.Fatalf("= %s (%q), want a failure", st.phase, st.detail)
			}
			var ce *activator.CapacityError
			var se *activator.StartError
			switch {
			case tc.want.capacity && !errors.As(st.failed, &ce):
				t.Errorf("failed = %T %v, want a *activator.CapacityError", st.failed, st.failed)
			case !tc.want.capacity && !errors.As(st.failed, &se):
				t.Errorf("failed = %T %v, want a *activator.StartError", st.failed, st.failed)
			case se != nil && se.Instance != "p1":
				t.Errorf("StartError.Instance = %q, want the pod's name", se.Instance)
			}
			if ce != nil && ce.Reason != tc.pod.Status.Conditions[0].Message {
				t.Errorf("CapacityError.Reason = %q, want the scheduler's message as it is", ce.Reason)
			}
			for _, s := range tc.want.contains {
				if !strings.Contains(st.failed.Error(), s) {
					t.Errorf("message %q does not contain %q", st.failed.Error(), s)
				}
			}
		})
	}
}

func TestClassifyStartWaitingIsNotFatal(t *testing.T) {
	for _, reason := range []string{"ContainerCreating", "PodInitializing", ""} {
		if st := classifyStart(podState(onNode, container("server", waitingIn(reason, "")))); st.failed != nil {
			t.Errorf("waiting %q: failed = %v, want progress", reason, st.failed)
		}
	}
}

func TestGoneReason(t *testing.T) {
	serving := func(opts ...func(*corev1.Pod)) *corev1.Pod {
		return podState(append([]func(*corev1.Pod){onNode, phase(corev1.PodRunning), withIP, ready}, opts...)...)
	}
	cases := []struct {
		name     string
		pod      *corev1.Pod
		contains []string // empty: still serving
	}{
		{"serving", serving(container("server", running)), nil},
		{"not ready for a moment", podState(onNode, phase(corev1.PodRunning), withIP,
			cond(corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", ""), container("server", running)), nil},
		{"with completed init containers", serving(initContainer("migrate", terminated(0, "Completed")), container("server", running)), nil},
		{"a sidecar restarted", serving(container("shipper", running, restarted(3, terminated(1, "Error"))), container("server", running)), nil},
		{"a sidecar ended", serving(container("shipper", terminated(0, "Completed")), container("server", running)), nil},
		{"being deleted", serving(deleting, container("server", running)), []string{"pod p1 is being deleted"}},
		{"evicted", serving(phase(corev1.PodFailed), func(p *corev1.Pod) {
			p.Status.Reason, p.Status.Message = "Evicted", "The node was low on resource: memory."
		}), []string{"pod p1 failed: Evicted: The node was low on resource: memory."}},
		{"node lost", serving(phase(corev1.PodFailed), func(p *corev1.Pod) { p.Status.Reason = "NodeLost" }), []string{"NodeLost"}},
		{"succeeded", serving(phase(corev1.PodSucceeded), container("server", terminated(0, "Completed"))), []string{"pod p1 succeeded", "exit code 0"}},
		{"serving container ended", serving(container("server", terminated(2, "Error"))), []string{"container server ended: exit code 2 (Error)"}},
		{"serving container restarted", serving(container("server", running, restarted(1, terminated(139, "Error")))),
			[]string{"container server was restarted after exit code 139", "state is lost"}},
		{"serving container restarted, a sidecar more often", serving(container("shipper", running, restarted(5, terminated(1, "Error"))),
			container("server", running, restarted(1, terminated(1, "Error")))), []string{"container server was restarted"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := goneReason(tc.pod, "server")
			if len(tc.contains) == 0 {
				if got != "" {
					t.Errorf("goneReason = %q, want the pod still serving", got)
				}
				return
			}
			if got == "" {
				t.Fatal("goneReason = \"\", want the pod gone")
			}
			for _, s := range tc.contains {
				if !strings.Contains(got, s) {
					t.Errorf("goneReason = %q, want it to contain %q", got, s)
				}
			}
		})
	}
}
