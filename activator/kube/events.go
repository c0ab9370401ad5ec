package kube

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Event reasons recorded on session pods, so that `kubectl describe pod` tells
// how a pod came to serve a session and why it went.
const (
	ReasonActivated = "Activated"
	ReasonReaped    = "Reaped"
)

// record writes one Event on a pod in the background. Events are best effort: an
// API that refuses or is down costs a log line, never a delay on a request. One
// plain create per event keeps the gateway's RBAC to events: create.
func (r *Runtime) record(name string, uid types.UID, reason, message string) {
	if !r.begin() {
		return
	}
	go func() {
		defer r.deletes.Done()
		now := metav1.NewTime(time.Now())
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: name + ".", Namespace: r.cfg.Namespace},
			InvolvedObject: corev1.ObjectReference{
				APIVersion: "v1", Kind: "Pod", Namespace: r.cfg.Namespace, Name: name, UID: uid,
			},
			Reason:         reason,
			Message:        message,
			Type:           corev1.EventTypeNormal,
			Source:         corev1.EventSource{Component: "tether"},
			FirstTimestamp: now,
			LastTimestamp:  now,
			Count:          1,
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DeleteTimeout)
		defer cancel()
		if _, err := r.client.CoreV1().Events(r.cfg.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			r.log.Debug("recording an event failed", "pod", name, "reason", reason, "err", err)
		}
	}()
}
