package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// drainTimeout bounds a graceful stop: a client that holds a stream open must not keep
// the process alive past its pod's termination grace period.
const drainTimeout = 10 * time.Second

// The environment an instance is started with (see activator.EnvSession and its
// neighbours). They are spelled out rather than imported because this program stands
// for a user's backend, which knows the gateway only through this contract.
const (
	envSession       = "TETHER_SESSION"
	envCPURequest    = "TETHER_CPU_REQUEST"
	envCPULimit      = "TETHER_CPU_LIMIT"
	envMemoryRequest = "TETHER_MEMORY_REQUEST"
	envMemoryLimit   = "TETHER_MEMORY_LIMIT"
)

// processStart is taken at package initialisation, the earliest point the program
// controls, so that Info's started time includes the runtime's own start-up.
var processStart = time.Now()

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tether-example:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then drains. It returns nil after a clean stop.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("tether-example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := getenv("PORT")
	if port == "" {
		port = "50051"
	}
	listen := fs.String("listen", ":"+port, "`address` to serve gRPC on (h2c)")
	delay := fs.Duration("startup-delay", 0, "wait this long before listening, to simulate a slow cold start")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	info := infoFromEnv(getenv)
	if info.session != "" {
		log = log.With("session", info.session)
	}

	if *delay > 0 {
		t := time.NewTimer(*delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}

	lis, err := new(net.ListenConfig).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	info.ready = time.Now()

	sess := newSession(info)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(sess.countUnary),
		grpc.ChainStreamInterceptor(sess.countStream),
	)
	examplepb.RegisterSessionServer(srv, sess)
	// health.NewServer already reports SERVING for "", the name probes ask about.
	hs := health.NewServer()
	hs.SetServingStatus(examplepb.Session_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("serving", "addr", lis.Addr().String())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}

	log.Info("stopping", "drain_timeout", drainTimeout)
	// Probes see NOT_SERVING while calls drain. Watch streams end on their own, since
	// they would otherwise hold GracefulStop until the timer; other streams are the
	// client's to finish.
	hs.Shutdown()
	sess.close()
	drained := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(drained)
	}()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		log.Warn("drain timed out, closing remaining calls")
		srv.Stop()
		<-drained
	}
	return <-served
}

// infoFromEnv reads the identity and size the instance was started with, once.
func infoFromEnv(getenv func(string) string) instanceInfo {
	host, _ := os.Hostname() // best effort: the pid still tells instances apart on one host
	return instanceInfo{
		hostname:      host,
		pid:           os.Getpid(),
		session:       getenv(envSession),
		cpuRequest:    getenv(envCPURequest),
		cpuLimit:      getenv(envCPULimit),
		memoryRequest: getenv(envMemoryRequest),
		memoryLimit:   getenv(envMemoryLimit),
		started:       processStart,
	}
}
