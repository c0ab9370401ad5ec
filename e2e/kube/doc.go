// Package kube tests the gateway's Kubernetes runtime end to end: the real tether
// binary (TETHER_RUNTIME=kubernetes) against a real kube-apiserver, etcd and
// kube-scheduler, with the node agent running each session pod's container as a
// process, and real grpc-go clients calling the example server through the
// gateway.
//
// Each scenario runs its own gateway in its own namespace, and ends only once the
// gateway itself has deleted every pod it made there: the suite proves that
// nothing leaks, not only that things work.
package kube
