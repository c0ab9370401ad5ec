package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// WaitForPod watches one pod until cond accepts it, and returns that version. cond
// is called with nil once the pod is deleted (or when it does not exist yet), so a
// test can wait for a pod to go. ctx bounds the wait; there is no polling.
func WaitForPod(ctx context.Context, client kubernetes.Interface, namespace, name string, cond func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return client.CoreV1().Pods(namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return client.CoreV1().Pods(namespace).Watch(ctx, o)
		},
	}
	precondition := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(namespace + "/" + name)
		if err != nil || exists {
			return false, err
		}
		return cond(nil)
	}
	var last *corev1.Pod
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, precondition, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Deleted:
			last = nil
			return cond(nil)
		case watch.Added, watch.Modified:
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return false, nil
			}
			last = pod
			return cond(pod)
		}
		return false, nil
	})
	if err != nil {
		if last != nil {
			return nil, fmt.Errorf("pod %s/%s: %w; last seen: phase %s, conditions %v, containers %v",
				namespace, name, err, last.Status.Phase, last.Status.Conditions, last.Status.ContainerStatuses)
		}
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	if ev == nil || ev.Type == watch.Deleted {
		return nil, nil
	}
	pod, _ := ev.Object.(*corev1.Pod)
	return pod, nil
}
