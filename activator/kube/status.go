package kube

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tetherhq/tether/activator"
)

// startState is where a starting pod stands.
type startState struct {
	ready  bool
	failed error // terminal: a *activator.CapacityError or *activator.StartError
	phase  activator.Phase
	detail string
}

// waitingFatal are container waiting reasons that do not get better by waiting
// longer, so a cold start reports them at once instead of at its timeout
// (cases B16, B25).
var waitingFatal = map[string]bool{
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
	"CrashLoopBackOff":           true,
}

// classifyStart reads a pod that has not been ready yet.
func classifyStart(p *corev1.Pod) startState {
	name := p.Name
	fail := func(reason string) startState {
		return startState{failed: &activator.StartError{Instance: name, Reason: reason}}
	}
	if p.DeletionTimestamp != nil {
		return fail("pod is being deleted")
	}
	if ended := podEnded(p); ended != "" {
		return fail("pod " + ended)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			// The scheduler's own words say what does not fit ("0/3 nodes are
			// available: 3 Insufficient memory."), which is what the client needs.
			return startState{failed: &activator.CapacityError{Reason: c.Message}}
		}
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			// An init container that finished its job is how a pod with init
			// containers starts, not a failure.
			continue
		}
		if r := startFailure(cs); r != "" {
			return fail(r)
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if r := startFailure(cs); r != "" {
			return fail(r)
		}
	}

	st := startState{phase: activator.PhaseRequested, detail: string(p.Status.Phase)}
	if p.Spec.NodeName != "" {
		st.phase, st.detail = activator.PhaseScheduled, "node "+p.Spec.NodeName
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			st.detail = w.Reason // ContainerCreating, PodInitializing
		}
		if cs.State.Running != nil {
			st.phase, st.detail = activator.PhaseStarted, "container "+cs.Name+" running"
		}
	}
	if isReady(p) && p.Status.PodIP != "" {
		st.ready, st.phase, st.detail = true, activator.PhaseReady, p.Status.PodIP
	}
	return st
}

// startFailure says why a container of a pod that has not been ready yet can
// never make it ready, or "" if it still may.
func startFailure(cs corev1.ContainerStatus) string {
	if w := cs.State.Waiting; w != nil && waitingFatal[w.Reason] {
		msg := w.Reason
		if w.Message != "" {
			msg += ": " + w.Message
		}
		if t := cs.LastTerminationState.Terminated; t != nil {
			msg += " (last " + exitText(t) + ")"
		}
		return "container " + cs.Name + ": " + msg
	}
	if t := cs.State.Terminated; t != nil {
		return "container " + cs.Name + " ended before it was ready: " + exitText(t)
	}
	if t := cs.LastTerminationState.Terminated; t != nil && cs.RestartCount > 0 {
		return "container " + cs.Name + " was restarted before it was ready, after " + exitText(t)
	}
	return ""
}

// goneReason says why a pod that was serving no longer is, or "" if it still is.
// serving names the container that serves the session: the session's state lives
// in its process, so its end or restart ends the session, while a sidecar that
// restarts does not. A pod that is merely not ready for a moment (a failing
// readiness probe) still serves: its session's state is intact.
//
// The serving container had not restarted when its pod became ready (a restart
// before that fails the start), so any restart since then lost the state.
func goneReason(p *corev1.Pod, serving string) string {
	if p.DeletionTimestamp != nil {
		return "pod " + p.Name + " is being deleted"
	}
	if ended := podEnded(p); ended != "" {
		return "pod " + p.Name + " " + ended
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != serving {
			continue
		}
		if cs.RestartCount > 0 {
			reason := "container " + cs.Name + " was restarted"
			if t := cs.LastTerminationState.Terminated; t != nil {
				reason += " after " + exitText(t)
			}
			return reason + "; the session's state is lost"
		}
		if t := cs.State.Terminated; t != nil {
			return "container " + cs.Name + " ended: " + exitText(t)
		}
	}
	return ""
}

// podEnded says how a pod in a terminal phase ended ("failed: Evicted: ...;
// container c ended: exit code 137 (Error)"), or "" if it has not.
func podEnded(p *corev1.Pod) string {
	if p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
		return ""
	}
	s := strings.ToLower(string(p.Status.Phase))
	if p.Status.Reason != "" {
		s += ": " + p.Status.Reason // Evicted, NodeLost
	}
	if p.Status.Message != "" {
		s += ": " + p.Status.Message
	}
	if cs := endedContainer(p); cs != nil {
		s += "; container " + cs.Name + " ended: " + exitText(cs.State.Terminated)
	}
	return s
}

// endedContainer picks the container whose end explains a pod's: the first that
// failed, else the first regular container that ended. A completed init
// container explains nothing.
func endedContainer(p *corev1.Pod) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range list {
			if t := list[i].State.Terminated; t != nil && t.ExitCode != 0 {
				return &list[i]
			}
		}
	}
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].State.Terminated != nil {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// exitText is how a container ended, in the words the local runtime uses:
// "exit code 1 (Error): <message>", "killed by signal 9 (OOMKilled)".
func exitText(t *corev1.ContainerStateTerminated) string {
	s := "exit code " + strconv.Itoa(int(t.ExitCode))
	if t.Signal != 0 {
		s = "killed by signal " + strconv.Itoa(int(t.Signal))
	}
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		s += ": " + m
	}
	return s
}
