// Command testserver is the smallest backend the e2e harness can run as a pod: a
// gRPC server with the standard health service, so that a readinessProbe of type
// grpc has something to ask.
//
//	testserver -listen 127.0.0.5:8080      serve, SERVING at once
//	testserver -ready-after 2s             NOT_SERVING for the first two seconds
//	testserver -exit 3                     exit at once with status 3
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve gRPC on")
	exitCode := flag.Int("exit", -1, "exit at once with this status instead of serving")
	readyAfter := flag.Duration("ready-after", 0, "report NOT_SERVING for this long after start")
	flag.Parse()
	if *exitCode >= 0 {
		fmt.Fprintf(os.Stderr, "testserver: exiting with %d as asked\n", *exitCode)
		os.Exit(*exitCode)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	if *readyAfter > 0 {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		time.AfterFunc(*readyAfter, func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) })
	}
	fmt.Fprintf(os.Stderr, "testserver: serving on %s (pod %s)\n", lis.Addr(), os.Getenv("POD_NAME"))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		hs.Shutdown()
		srv.GracefulStop()
		return nil
	}
}
