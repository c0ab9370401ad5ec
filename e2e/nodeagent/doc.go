// Package nodeagent is a small stand-in for the kubelet, for end-to-end tests
// against a real API server and scheduler on a machine without a container engine.
//
// It registers nodes with a chosen capacity, reports them Ready and removes the
// not-ready taint. It watches the pods bound to its nodes (a field selector on
// spec.nodeName) and runs each container as a local process:
//
//   - the image maps to a local executable through Options.Images; an unknown image
//     reports ErrImagePull, then ImagePullBackOff, and the pod stays Pending;
//   - each pod gets its own loopback address (127.x.y.z) as status.podIP, which its
//     server must bind: pass it with a fieldRef env var and $(VAR) in args;
//   - env, envFrom, fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef
//     resolve as in the kubelet; a missing reference is CreateContainerConfigError;
//   - the readinessProbe (gRPC, TCP, HTTP or exec) sets the container's ready flag
//     and the pod's Ready condition; Options.ProbePeriod shortens periodSeconds;
//   - exits are reported as Terminated with the exit code and Completed or Error,
//     and restarted per restartPolicy: the first at once, then in CrashLoopBackOff
//     with a delay that doubles;
//   - a deleted pod's processes get SIGTERM, its grace period, then SIGKILL, and the
//     agent then finishes the delete with grace period 0 as the kubelet does.
//
// Status goes through the pods/status subresource. Not supported: init containers,
// liveness and startup probes, volumes, resource limits (processes are not
// confined), in-place resize, and node leases (no node lifecycle controller runs).
package nodeagent
