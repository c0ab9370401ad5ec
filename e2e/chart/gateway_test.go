package chart_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tetherhq/tether/e2e/chart"
)

const gatewayStartTimeout = 90 * time.Second

// gatewayEnv is the environment the chart gives the gateway container, made to
// run on this machine: each file a TETHER_* variable names is written where its
// ConfigMap (from the manifest) or TLS Secret (a certificate made here) would be
// mounted, the listeners move to free loopback ports, and KUBECONFIG stands in for
// the pod's ServiceAccount token. Nothing else changes.
func gatewayEnv(t *testing.T, m *chart.Manifest, kubeconfig string) map[string]string {
	t.Helper()
	d, c, err := m.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	env, err := chart.Env(c)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var tlsFiles map[string][]byte
	for _, v := range chart.FileVars {
		path, ok := env[v]
		if !ok || path == "" {
			continue
		}
		vol, key, err := chart.MountedFile(&d.Spec.Template.Spec, c, path)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var data []byte
		switch {
		case vol.ConfigMap != nil:
			var cm corev1.ConfigMap
			if err := m.Named("ConfigMap", vol.ConfigMap.Name, &cm); err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			data = []byte(cm.Data[key])
		case vol.Secret != nil:
			if tlsFiles == nil {
				tlsFiles = selfSignedTLS(t)
			}
			var ok bool
			if data, ok = tlsFiles[key]; !ok {
				t.Fatalf("%s: Secret %s key %s is not a kubernetes.io/tls key", v, vol.Secret.SecretName, key)
			}
		default:
			t.Fatalf("%s: volume %s is neither a ConfigMap nor a Secret", v, vol.Name)
		}
		file := filepath.Join(root, vol.Name, key)
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		env[v] = file
	}
	env["TETHER_LISTEN"] = "127.0.0.1:0"
	if env["TETHER_METRICS_LISTEN"] != "off" {
		env["TETHER_METRICS_LISTEN"] = "127.0.0.1:0"
	}
	env["KUBECONFIG"] = kubeconfig
	return env
}

// selfSignedTLS returns tls.crt and tls.key for 127.0.0.1, as a kubernetes.io/tls
// Secret holds them.
func selfSignedTLS(t *testing.T) map[string][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tether"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// gatewayProcess is a gateway the test started, by PID.
type gatewayProcess struct {
	cmd         *exec.Cmd
	addr, admin string // where it listens; admin is empty when off

	mu   sync.Mutex
	log  []string
	done chan struct{} // closed once it has exited and its log is read
	err  error         // its exit status, once done
}

var (
	listenAddr = regexp.MustCompile(`\baddr=(\S+)`)
	adminAddr  = regexp.MustCompile(`\badmin=(\S+)`)
)

// startGateway runs the gateway with exactly env and returns once it logs that it
// listens, which it does after its configuration validated and its pod cache
// synced. The cleanup kills it if the test has not stopped it.
func startGateway(t *testing.T, bin string, env map[string]string) *gatewayProcess {
	t.Helper()
	g := &gatewayProcess{done: make(chan struct{})}
	g.cmd = exec.Command(bin)
	for k, v := range env {
		g.cmd.Env = append(g.cmd.Env, k+"="+v)
	}
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.log = append(g.log, line)
			g.mu.Unlock()
			if a, ok := listeningLine(line); ok {
				select {
				case listening <- a:
				default:
				}
			}
		}
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", strings.Join(g.logMatching(""), "\n"))
		}
	})
	timer := time.NewTimer(gatewayStartTimeout)
	defer timer.Stop()
	select {
	case a := <-listening:
		g.addr, g.admin = a[0], a[1]
		if g.admin == "off" {
			g.admin = ""
		}
		return g
	case <-g.done:
		t.Fatalf("the gateway exited before listening: %v\n%s", g.err, strings.Join(g.logMatching(""), "\n"))
	case <-timer.C:
		t.Fatalf("the gateway did not listen within %v\n%s", gatewayStartTimeout, strings.Join(g.logMatching(""), "\n"))
	}
	return nil
}

// listeningLine reads the addresses from the "tether listening" line, in JSON or
// in text, whichever TETHER_LOG_FORMAT chose.
func listeningLine(line string) ([2]string, bool) {
	var rec struct {
		Msg   string `json:"msg"`
		Addr  string `json:"addr"`
		Admin string `json:"admin"`
	}
	if json.Unmarshal([]byte(line), &rec) == nil {
		return [2]string{rec.Addr, rec.Admin}, rec.Msg == "tether listening" && rec.Addr != ""
	}
	if !strings.Contains(line, "tether listening") {
		return [2]string{}, false
	}
	a, b := listenAddr.FindStringSubmatch(line), adminAddr.FindStringSubmatch(line)
	if a == nil || b == nil {
		return [2]string{}, false
	}
	return [2]string{a[1], b[1]}, true
}

// logMatching returns the log lines that contain s.
func (g *gatewayProcess) logMatching(s string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, l := range g.log {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// dumpGoroutines makes the gateway print every goroutine's stack and exit
// (SIGQUIT), so that a test that found it stuck can show where.
func (g *gatewayProcess) dumpGoroutines(t *testing.T) {
	t.Helper()
	select {
	case <-g.done:
		return
	default:
	}
	if err := g.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Logf("SIGQUIT: %v", err)
		return
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-g.done:
	case <-timer.C:
	}
}

// stop sends SIGTERM, as the kubelet does, and waits up to grace (the pod's
// terminationGracePeriodSeconds) for a clean exit.
func (g *gatewayProcess) stop(grace time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	select {
	case <-g.done:
		if g.err != nil {
			return time.Since(start), fmt.Errorf("exit: %w", g.err)
		}
		return time.Since(start), nil
	case <-ctx.Done():
		return grace, errors.New("still running after the grace period: the kubelet would SIGKILL it mid-drain")
	}
}
