// Package cluster runs a real Kubernetes control plane for end-to-end tests: etcd,
// kube-apiserver and kube-scheduler, built from the Go module proxy by
// e2e/controlplane/build.sh and started as child processes on 127.0.0.1.
//
// There is no kubelet and no controller manager. Package nodeagent registers nodes
// and runs the pods bound to them; this package creates the default ServiceAccount
// of each namespace, which the controller manager would otherwise do.
//
// A test starts one cluster per package, usually from TestMain or with ForTest:
//
//	c := cluster.ForTest(t, cluster.Options{Namespaces: []string{"tether"}})
//	pods := c.Client().CoreV1().Pods("tether")
//
// Every process is started by PID with Pdeathsig, so nothing survives the test
// binary, and Stop kills them and removes their directory.
package cluster
