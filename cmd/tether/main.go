// Command tether is the gateway: one address that gives every gRPC client
// connection its own right-sized instance.
//
//	tether            run the gateway, configured by TETHER_* environment variables
//	tether sessions   list the live sessions of a running gateway
//
// This package only wires the parts together: config, logger, runtime, session
// table, reaper, gateway and admin listener, and the order in which they stop.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/gateway"
	"github.com/tetherhq/tether/gateway/admin"
	"github.com/tetherhq/tether/gateway/metrics"
	"github.com/tetherhq/tether/gateway/relay"
	"github.com/tetherhq/tether/reaper"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], environMap(os.Environ()), os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tether:", err)
		os.Exit(1)
	}
}

// run dispatches to the gateway or a subcommand.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer, ready chan<- addrs) error {
	if len(args) == 0 {
		return serve(ctx, environ, stderr, ready)
	}
	switch args[0] {
	case "sessions":
		return sessionsCommand(ctx, args[1:], environ, stdout)
	case "-h", "-help", "--help", "help":
		_, err := io.WriteString(stdout, usage)
		return err
	default:
		return fmt.Errorf("unknown command %q: run tether with no arguments (configured by TETHER_* variables), or `tether sessions`", args[0])
	}
}

const usage = `tether: one gRPC address that gives every client connection its own instance.

Usage:
  tether            run the gateway, configured by TETHER_* environment variables
                    (TETHER_LISTEN, TETHER_RUNTIME, TETHER_IDLE_TIMEOUT, ...: see the README)
  tether sessions   list the live sessions of a running gateway (-addr, -json)
`

// addrs are where a started gateway listens.
type addrs struct {
	gateway, admin net.Addr
}

// serve runs the gateway until ctx ends, then drains.
func serve(ctx context.Context, environ map[string]string, stderr io.Writer, ready chan<- addrs) error {
	cfg, err := loadConfig(environ)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, stderr)
	for _, name := range unknownVars(environ) {
		log.Warn("unknown variable, ignored", "name", name)
	}

	// The backend lives until the gateway has drained; so does the pod informer,
	// if any, so a drain never waits on a dead watch.
	bctx, stopBackend := context.WithCancel(context.Background())
	defer stopBackend()
	be, err := newBackend(bctx, cfg, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	sessions := session.New(be.rt, session.Config{
		ActivationTimeout: cfg.ActivationTime,
		MaxInstances:      cfg.MaxInstances,
		StopTimeout:       cfg.StopGrace + 5*time.Second,
		Log:               log.With("component", "session"),
	})
	m := metrics.New(reg, sessions)
	sessions.SetObserver(m)
	for _, sv := range be.survivors {
		sessions.Adopt(sv)
	}

	gcfg := gateway.Config{
		HandshakeTimeout: cfg.HandshakeTimeout,
		KeepaliveIdle:    cfg.KeepaliveIdle,
		KeepaliveTimeout: cfg.KeepaliveTimeout,
		Bounds:           cfg.bounds,
		IdleIgnore:       setOf(cfg.IdleIgnore),
		Observer:         m,
		Log:              log.With("component", "gateway"),
		Relay: relay.Config{
			StreamWindow:         cfg.streamWindow,
			ConnWindow:           cfg.connWindow,
			MaxConcurrentStreams: cfg.MaxConcurrentStreams,
			DialTimeout:          cfg.DialTimeout,
			OnFail:               m.Failed,
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
	m.SetGateway(gw)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("TETHER_LISTEN: %w", err)
	}
	var draining atomic.Bool
	adminSrv, adminAddr, err := startAdmin(cfg.MetricsListen, admin.Config{
		Gatherer: reg,
		Sessions: sessions,
		Ready: func() error {
			switch {
			case draining.Load():
				return errors.New("draining")
			case !be.ready():
				return errors.New("the pod cache has not synced")
			}
			return nil
		},
	}, log)
	if err != nil {
		lis.Close()
		return err
	}

	scheme := "h2c"
	if gcfg.TLS != nil {
		scheme = "TLS"
	}
	log.Info("tether listening", "addr", lis.Addr().String(), "admin", addrString(adminAddr), "protocol", scheme,
		"runtime", cfg.Runtime, "instances", be.describe, "idle_timeout", cfg.IdleTimeout)
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
		ready <- addrs{gateway: lis.Addr(), admin: adminAddr}
	}

	var serveErr error
	select {
	case <-ctx.Done():
		// Drain: readiness fails at once, load balancers get TETHER_DRAIN_DELAY
		// to notice, then clients get GOAWAY and open streams get
		// TETHER_SHUTDOWN_GRACE to finish.
		draining.Store(true)
		log.Info("draining", "delay", cfg.DrainDelay, "grace", cfg.ShutdownGrace)
		select {
		case <-time.After(cfg.DrainDelay):
		case err := <-served:
			serveErr = err
		}
	case err := <-served:
		serveErr = err
	}
	gw.StopAccepting()
	log.Info("refusing new connections; open streams may finish", "grace", cfg.ShutdownGrace)
	gctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := gw.Shutdown(gctx); err != nil {
		log.Warn("streams still open after the grace period were ended", "err", err)
	}
	stopReaper()
	<-reaped
	sctx, cancelStop := context.WithTimeout(context.Background(), cfg.StopGrace+5*time.Second)
	defer cancelStop()
	errs := []error{be.stop(sctx, sessions)}
	if adminSrv != nil {
		errs = append(errs, adminSrv.Shutdown(sctx))
	}
	if serveErr != nil {
		errs = append(errs, fmt.Errorf("serving: %w", serveErr))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// startAdmin serves the admin endpoints on addr, or nothing if addr is "off".
func startAdmin(addr string, cfg admin.Config, log *slog.Logger) (*http.Server, net.Addr, error) {
	if addr == "off" {
		return nil, nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("TETHER_METRICS_LISTEN: %w", err)
	}
	srv := &http.Server{
		Handler: admin.Handler(cfg),
		// Scrapes and probes are short requests; these bound a stuck client.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go srv.Serve(lis)
	return srv, lis.Addr(), nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
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
