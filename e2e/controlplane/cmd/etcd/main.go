// Command etcd is the etcd server at the version k8s.io/kubernetes pins, so the
// API server is tested against the etcd it is built with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
