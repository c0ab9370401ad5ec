// Package kube is the runtime that gives each session its own pod
// (TETHER_RUNTIME=kubernetes).
//
// # The pod
//
// Build turns the operator's template (TETHER_POD_TEMPLATE: a Pod, a PodTemplate or
// a bare PodTemplateSpec) and a session's spec into the pod to create. It is pure,
// and golden files in testdata/ pin its output. The serving container is the one
// with a port named grpc, else the first, serving on TETHER_POD_PORT. It gets the
// requests and limits from the client's hints and the TETHER_* size variables,
// which win over any the template set. The pod gets the managed-by and session
// labels, and annotations that record the session: the token's SHA-256 (never the
// token), the size and the idle timeout. The API server names the pod
// (generateName).
//
// # Readiness and failure
//
// One shared informer, filtered by the managed-by label, watches every pod of the
// runtime. Start creates the pod and waits on its watch events: there is no Get
// and no sleep. A pod is ready when its Ready condition is True and it has an IP.
// What can never get better fails at once, and the pod is deleted:
//
//   - PodScheduled=False with reason Unschedulable is an *activator.CapacityError
//     quoting the scheduler ("0/3 nodes are available: 3 Insufficient memory.");
//   - a container waiting in ErrImagePull, ImagePullBackOff, InvalidImageName,
//     CreateContainerConfigError, CrashLoopBackOff and the like, a container that
//     ended or restarted before the pod was ready, a pod that failed, and a pod
//     deleted meanwhile are each an *activator.StartError naming the reason and
//     the exit code.
//
// # Serving
//
// An instance is pinned by pod UID and IP. It ends, and its session with it, when
// its pod is deleted or is being deleted, fails, is evicted, or its serving
// container ends or restarts (the session's state lived in that process). Deletes
// seen only on a relist arrive as cache.DeletedFinalStateUnknown tombstones and
// are handled like any other (case B27).
//
// Every delete carries a UID precondition, so a pod that replaced one under the
// same name is never touched. Deletes that fail are retried in the background
// until they land, so an API outage delays a delete but never leaks a pod.
// Nothing on the data path waits on the API server: a session that is pinned keeps
// working while the API server is down.
//
// # Restarts
//
// Pods outlive the gateway on purpose. A gateway that starts calls Survivors
// after Sync: the pods that serve a session are adopted, so that their tokens
// re-attach, and the ones that were still starting, have failed, or carry no
// readable record are deleted, since nobody holds a token for them.
package kube
