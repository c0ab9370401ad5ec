package kube

import (
	"fmt"
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
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		if r := terminatedReason(p); r != "" {
			return fail(r)
		}
		return fail("pod " + strings.ToLower(string(p.Status.Phase)) + podReason(p))
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			// The scheduler's own words say what does not fit ("0/3 nodes are
			// available: 3 Insufficient memory."), which is what the client needs.
			return startState{failed: &activator.CapacityError{Reason: c.Message}}
		}
	}
	for _, cs := range allStatuses(p) {
		if w := cs.State.Waiting; w != nil && waitingFatal[w.Reason] {
			msg := w.Reason
			if w.Message != "" {
				msg += ": " + w.Message
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				msg += " (last " + exitText(t) + ")"
			}
			return fail("container " + cs.Name + ": " + msg)
		}
		if t := cs.State.Terminated; t != nil {
			return fail("container " + cs.Name + " " + exitText(t) + " before it was ready")
		}
		if t := cs.LastTerminationState.Terminated; t != nil && cs.RestartCount > 0 {
			return fail("container " + cs.Name + " " + exitText(t) + " before it was ready and was restarted")
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

// goneReason says why a pod that was serving no longer is, or "" if it still is.
// A pod that is merely not ready for a moment (a failing readiness probe) still is:
// its session's state is intact.
func goneReason(p *corev1.Pod, restarts int32) string {
	if p.DeletionTimestamp != nil {
		return "pod " + p.Name + " is being deleted"
	}
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		if r := terminatedReason(p); r != "" {
			return "pod " + p.Name + ": " + r
		}
		return "pod " + p.Name + " " + strings.ToLower(string(p.Status.Phase)) + podReason(p)
	}
	for _, cs := range allStatuses(p) {
		if cs.RestartCount > restarts {
			reason := "restarted"
			if t := cs.LastTerminationState.Terminated; t != nil {
				reason = exitText(t) + " and was restarted"
			}
			return "container " + cs.Name + " " + reason + "; the session's state is lost"
		}
		if t := cs.State.Terminated; t != nil {
			return "container " + cs.Name + " " + exitText(t)
		}
	}
	return ""
}

func restartCount(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range allStatuses(p) {
		n = max(n, cs.RestartCount)
	}
	return n
}

func allStatuses(p *corev1.Pod) []corev1.ContainerStatus {
	return append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func terminatedReason(p *corev1.Pod) string {
	for _, cs := range allStatuses(p) {
		if t := cs.State.Terminated; t != nil {
			return "container " + cs.Name + " " + exitText(t)
		}
	}
	return ""
}

func podReason(p *corev1.Pod) string {
	s := ""
	if p.Status.Reason != "" {
		s += ": " + p.Status.Reason // Evicted, NodeLost
	}
	if p.Status.Message != "" {
		s += ": " + p.Status.Message
	}
	return s
}

// exitText is how a container ended: "exited with code 1 (Error): <message>".
func exitText(t *corev1.ContainerStateTerminated) string {
	s := "exited with code " + strconv.Itoa(int(t.ExitCode))
	if t.Signal != 0 {
		s = fmt.Sprintf("was killed by signal %d", t.Signal)
	}
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		s += ": " + m
	}
	return s
}
