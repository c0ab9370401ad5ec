// Command tetherprof is the tether gateway wired as cmd/tether wires it (local
// runtime, session manager, gateway, relay defaults), plus net/http/pprof on a
// second loopback port. It exists only so that `make bench-profile` can take CPU
// and allocation profiles of the gateway under load; the product binary carries no
// profiler. It reads TETHER_LISTEN and TETHER_LOCAL_COMMAND, and serves pprof on
// -pprof.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator/hints"
	"github.com/tetherhq/tether/activator/local"
	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/gateway/relay"
)

func main() {
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "`address` for net/http/pprof")
	memRate := flag.Int("memprofilerate", 4096, "runtime.MemProfileRate: one allocation sampled per this many bytes")
	flag.Parse()
	runtime.MemProfileRate = *memRate
	if err := run(*pprofAddr); err != nil {
		fmt.Fprintln(os.Stderr, "tetherprof:", err)
		os.Exit(1)
	}
}

func run(pprofAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rt, err := local.New(local.Config{Command: os.Getenv("TETHER_LOCAL_COMMAND"), StopGrace: 5 * time.Second, Env: os.Environ()}, nil, nil)
	if err != nil {
		return err
	}
	sessions := session.New(rt, session.Config{ActivationTimeout: 2 * time.Minute, StopTimeout: 10 * time.Second})
	gw := gateway.New(gateway.Config{
		Bounds: hints.Bounds{
			DefaultCPU: resource.MustParse("500m"), MinCPU: resource.MustParse("1m"), MaxCPU: resource.MustParse("4"),
			DefaultMemory: resource.MustParse("512Mi"), MinMemory: resource.MustParse("1Mi"), MaxMemory: resource.MustParse("8Gi"),
			DefaultIdle: 10 * time.Minute, MinIdle: time.Minute, MaxIdle: 24 * time.Hour,
		},
		KeepaliveIdle:    time.Minute,
		KeepaliveTimeout: 20 * time.Second,
		IdleIgnore:       map[string]bool{"/grpc.health.v1.Health/Check": true, "/grpc.health.v1.Health/Watch": true},
		Relay:            relay.Config{}.WithDefaults(),
	}, sessions)
	lis, err := net.Listen("tcp", os.Getenv("TETHER_LISTEN"))
	if err != nil {
		return err
	}
	plis, err := net.Listen("tcp", pprofAddr)
	if err != nil {
		return err
	}
	psrv := &http.Server{Handler: http.DefaultServeMux}
	go psrv.Serve(plis)
	served := make(chan error, 1)
	go func() { served <- gw.Serve(lis) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Shutdown(sctx)
	psrv.Close()
	sessions.Close(sctx, "benchmark over")
	return rt.Close(sctx)
}
