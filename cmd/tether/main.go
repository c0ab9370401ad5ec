// Command tether is the gateway: one address that gives every gRPC client
// connection its own right-sized instance.
//
// It is configured entirely by TETHER_* environment variables (see the README).
// This file only wires the parts together: config, logger, runtime, session
// table, reaper and gateway, and the order in which they stop.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/gateway/relay"
	"github.com/tetherhq/tether/reaper"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], environMap(os.Environ()), os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tether:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then drains. ready, if not nil, receives the
// listening address once the gateway accepts connections.
func run(ctx context.Context, args []string, environ map[string]string, stderr io.Writer, ready chan<- net.Addr) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown arguments %q: tether is configured with TETHER_* environment variables", args)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, stderr)
	for _, name := range unknownVars(environ) {
		log.Warn("unknown variable, ignored", "name", name)
	}

	// Everything below lives until the gateway has drained; the informer, if any,
	// too, so a drain never waits on a dead watch.
	bctx, stopBackend := context.WithCancel(context.Background())
	defer stopBackend()
	be, err := newBackend(bctx, cfg, log)
	if err != nil {
		return err
	}
	sessions := session.New(be.rt, session.Config{
		ActivationTimeout: cfg.ActivationTime,
		MaxInstances:      cfg.MaxInstances,
		StopTimeout:       cfg.StopGrace + 5*time.Second,
		Log:               log.With("component", "session"),
	})
	for _, sv := range be.survivors {
		sessions.Adopt(sv)
	}

	gcfg := gateway.Config{
		HandshakeTimeout: cfg.HandshakeTimeout,
		Bounds:           cfg.bounds,
		IdleIgnore:       setOf(cfg.IdleIgnore),
		Log:              log.With("component", "gateway"),
		Relay: relay.Config{
			StreamWindow:         cfg.streamWindow,
			ConnWindow:           cfg.connWindow,
			MaxConcurrentStreams: cfg.MaxConcurrentStreams,
			DialTimeout:          cfg.DialTimeout,
			Log:                  log.With("component", "relay"),
		}.WithDefaults(),
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("TETHER_TLS_CERT/TETHER_TLS_KEY: %w", err)
		}
		gcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	gw := gateway.New(gcfg, sessions)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("TETHER_LISTEN: %w", err)
	}
	scheme := "h2c"
	if gcfg.TLS != nil {
		scheme = "TLS"
	}
	log.Info("tether listening", "addr", lis.Addr().String(), "protocol", scheme, "runtime", cfg.Runtime,
		"instances", be.describe, "idle_timeout", cfg.IdleTimeout)
	log.Info("call it with: grpcurl " + grpcurlFlags(gcfg.TLS != nil) + " -H 'x-tether-cpu: 1' " + dialAddr(lis.Addr()) + " list")

	rctx, stopReaper := context.WithCancel(context.Background())
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		reaper.New(sessions, reaper.Config{
			Interval:    cfg.ReapInterval,
			MaxLifetime: cfg.MaxLifetime,
			Log:         log.With("component", "reaper"),
		}).Run(rctx)
	}()
	served := make(chan error, 1)
	go func() { served <- gw.Serve(lis) }()
	if ready != nil {
		ready <- lis.Addr()
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		stopReaper()
		<-reaped
		be.stop(context.Background(), sessions)
		return fmt.Errorf("serving: %w", err)
	}

	// Drain: new connections are refused at once, open streams get the grace
	// period to finish, then every instance stops.
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	gctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := gw.Shutdown(gctx); err != nil {
		log.Warn("streams still open after the grace period were ended", "err", err)
	}
	stopReaper()
	<-reaped
	sctx, cancelStop := context.WithTimeout(context.Background(), cfg.StopGrace+5*time.Second)
	defer cancelStop()
	if err := be.stop(sctx, sessions); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func grpcurlFlags(tls bool) string {
	if tls {
		return "-insecure"
	}
	return "-plaintext"
}

// dialAddr turns a listening address into one a local client can dial.
func dialAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func setOf(items []string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		if it != "" {
			m[it] = true
		}
	}
	return m
}

func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

