package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/client-go/kubernetes"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/kube"
	"github.com/tetherhq/tether/activator/local"
	"github.com/tetherhq/tether/activator/session"
)

// backend is the runtime the configuration chose, and how it ends.
type backend struct {
	rt        session.Runtime
	survivors []activator.Survivor
	describe  string
	// ready reports whether the runtime can start instances now.
	ready func() bool
	// stop ends the sessions' instances that do not outlive the gateway and
	// closes the runtime.
	stop func(ctx context.Context, sessions *session.Manager) error
}

func newBackend(ctx context.Context, cfg Config, log *slog.Logger) (*backend, error) {
	switch cfg.Runtime {
	case "kubernetes":
		return kubeBackend(ctx, cfg, log.With("component", "kube"))
	default:
		return localBackend(cfg, log.With("component", "local"))
	}
}

func localBackend(cfg Config, log *slog.Logger) (*backend, error) {
	command := cfg.LocalCommand
	if command == "" {
		command = defaultLocalCommand()
	}
	rt, err := local.New(local.Config{Command: command, StopGrace: cfg.StopGrace, Env: os.Environ()}, log, nil)
	if err != nil {
		return nil, err
	}
	return &backend{
		rt:       rt,
		describe: command,
		ready:    func() bool { return true },
		// Local instances are children of the gateway: none may outlive it.
		stop: func(ctx context.Context, sessions *session.Manager) error {
			return errors.Join(sessions.Close(ctx, "gateway is shutting down"), rt.Close(ctx))
		},
	}, nil
}

func kubeBackend(ctx context.Context, cfg Config, log *slog.Logger) (*backend, error) {
	tmpl, err := kube.LoadTemplate(cfg.PodTemplate, cfg.PodPort)
	if err != nil {
		return nil, err
	}
	rc, inCluster, err := kube.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("finding the Kubernetes API (in-cluster, KUBECONFIG or ~/.kube/config): %w", err)
	}
	// client-go's default of 5 requests a second would queue a burst of cold
	// starts behind each other.
	rc.QPS, rc.Burst = cfg.KubeQPS, cfg.KubeBurst
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	ns := cfg.Namespace
	if ns == "" {
		if ns = kube.OwnNamespace(); ns == "" || !inCluster {
			ns = "default"
		}
	}
	rt := kube.New(client, kube.Config{Namespace: ns, Template: tmpl, Log: log})
	sctx, cancel := context.WithTimeout(ctx, cfg.KubeSyncTimeout)
	defer cancel()
	if err := rt.Sync(sctx); err != nil {
		return nil, fmt.Errorf("TETHER_KUBE_SYNC_TIMEOUT: %w", err)
	}
	return &backend{
		rt:        rt,
		survivors: rt.Survivors(),
		describe:  "pods in namespace " + ns,
		ready:     rt.Synced,
		// Pods outlive the gateway on purpose: the next one adopts them.
		stop: func(ctx context.Context, sessions *session.Manager) error {
			return errors.Join(sessions.Leave(ctx), rt.Close(ctx))
		},
	}, nil
}
