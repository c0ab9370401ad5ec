package nodeagent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober runs one container's readinessProbe for as long as the container runs.
type prober struct {
	probe  *corev1.Probe
	ip     string
	spec   corev1.Container
	env    map[string]string
	period time.Duration // when positive, replaces periodSeconds
}

// run probes at once after the initial delay, then every period, and calls report
// when the verdict changes: not ready until successThreshold successes in a row,
// ready until failureThreshold failures in a row. The kubelet's defaults apply.
func (p *prober) run(ctx context.Context, report func(ready bool)) {
	pr := p.probe
	period := secondsOr(pr.PeriodSeconds, 10)
	if p.period > 0 {
		period = p.period
	}
	timeout := secondsOr(pr.TimeoutSeconds, 1)
	success, failure := int(max(pr.SuccessThreshold, 1)), int(max(pr.FailureThreshold, 1))
	if pr.FailureThreshold == 0 {
		failure = 3
	}
	if d := time.Duration(pr.InitialDelaySeconds) * time.Second; d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	ready := false
	var okRun, failRun int
	for {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := p.once(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
			if !ready && okRun >= success {
				ready = true
				report(true)
			}
		} else {
			okRun, failRun = 0, failRun+1
			if ready && failRun >= failure {
				ready = false
				report(false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func secondsOr(s int32, def int) time.Duration {
	if s <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(s) * time.Second
}

// once runs the probe a single time; nil means success.
func (p *prober) once(ctx context.Context) error {
	h := p.probe.ProbeHandler
	switch {
	case h.GRPC != nil:
		return p.grpc(ctx, h.GRPC)
	case h.TCPSocket != nil:
		port, err := p.port(h.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(hostOr(h.TCPSocket.Host, p.ip), port))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.HTTPGet != nil:
		port, err := p.port(h.HTTPGet.Port)
		if err != nil {
			return err
		}
		scheme := "http"
		if h.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(hostOr(h.HTTPGet.Host, p.ip), port)+h.HTTPGet.Path, nil)
		if err != nil {
			return err
		}
		for _, hd := range h.HTTPGet.HTTPHeaders {
			req.Header.Add(hd.Name, hd.Value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case h.Exec != nil:
		argv := expandAll(h.Exec.Command, p.env)
		if len(argv) == 0 {
			return fmt.Errorf("exec probe without a command")
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		for k, v := range p.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		return cmd.Run()
	}
	return fmt.Errorf("probe has no handler")
}

func (p *prober) grpc(ctx context.Context, g *corev1.GRPCAction) error {
	conn, err := grpc.NewClient(net.JoinHostPort(p.ip, strconv.Itoa(int(g.Port))),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return nil
}

// port resolves a numeric or named container port.
func (p *prober) port(port intstr.IntOrString) (string, error) {
	if port.Type == intstr.Int {
		return strconv.Itoa(port.IntValue()), nil
	}
	for _, cp := range p.spec.Ports {
		if cp.Name == port.StrVal {
			return strconv.Itoa(int(cp.ContainerPort)), nil
		}
	}
	return "", fmt.Errorf("no container port named %q", port.StrVal)
}

func hostOr(host, def string) string {
	if host == "" {
		return def
	}
	return host
}
