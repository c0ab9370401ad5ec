// Package smoke proves the e2e harness itself: a real control plane, the node
// agent, and pods that become Ready, stay Pending, fail to pull, crash and die the
// way they would on a kubelet.
package smoke
