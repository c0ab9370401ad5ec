package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// serviceCIDR is the service range; the kubernetes Service takes its first IP.
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
	issuer      = "https://kubernetes.default.svc.cluster.local"

	// AdminUser is the user of Kubeconfig and Client. It is in system:masters, so it
	// may impersonate any user or ServiceAccount, which is how a test checks that the
	// gateway's RBAC is enough.
	AdminUser = "tether-e2e-admin"

	// apiServerGrace bounds kube-apiserver's graceful shutdown: after SIGTERM it
	// stops listening at once, but its HTTP server then waits for open watch
	// connections for up to a minute.
	apiServerGrace = 3 * time.Second
	// stopGrace is the grace period when the whole cluster is thrown away.
	stopGrace = time.Second
)

// Options configure a cluster. The zero value starts a working cluster.
type Options struct {
	// BinDir holds etcd, kube-apiserver and kube-scheduler. Empty means the
	// TETHER_CONTROLPLANE_BIN environment variable, or else the directory that
	// e2e/controlplane/build.sh builds or finds in the cache.
	BinDir string
	// Namespaces to create, each with its default ServiceAccount. The default
	// namespace is always prepared.
	Namespaces []string
	// APIServerArgs and SchedulerArgs are appended to the harness's flags; a flag
	// given twice takes its last value.
	APIServerArgs []string
	SchedulerArgs []string
}

// Cluster is a running etcd, kube-apiserver and kube-scheduler on 127.0.0.1, each a
// child process of the test. There is no controller manager: nothing garbage
// collects, and no node lifecycle controller taints or evicts.
type Cluster struct {
	dir        string
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface
	httpClient *http.Client // for /readyz, with the admin credentials
	host       string

	mu        sync.Mutex // serializes StopAPIServer, StartAPIServer and Stop
	stopped   bool
	etcd      *process
	apiserver *process
	scheduler *process
}

// Start launches a control plane and returns once kube-apiserver is ready, the
// scheduler is serving and the namespaces exist with their default ServiceAccounts.
// On error nothing is left running. Stop must be called when done.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	bin, err := BinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tether-e2e-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.logTail(40))
			c.Stop()
		}
	}()

	pki, err := newPKI(dir)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, schedPort := ports[0], ports[1], ports[2], ports[3]
	c.host = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	admin, err := pki.client(AdminUser, "system:masters")
	if err != nil {
		return nil, err
	}
	c.restConfig = &rest.Config{
		Host: c.host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   pki.caPEM,
			CertData: admin.certPEM,
			KeyData:  admin.keyPEM,
		},
		// Tests create many pods at once; client-side throttling would only
		// measure client-go.
		QPS:   1000,
		Burst: 2000,
	}
	c.kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.kubeconfig, c.host, pki.caPEM, AdminUser, admin); err != nil {
		return nil, err
	}
	if c.client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return nil, err
	}
	if c.httpClient, err = rest.HTTPClientFor(c.restConfig); err != nil {
		return nil, err
	}

	c.etcd = &process{
		name:    "etcd",
		path:    filepath.Join(bin, "etcd"),
		logPath: filepath.Join(dir, "etcd.log"),
		args: []string{
			"--name=e2e",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + loopbackURL("http", etcdPort),
			"--advertise-client-urls=" + loopbackURL("http", etcdPort),
			"--listen-peer-urls=" + loopbackURL("http", peerPort),
			"--initial-advertise-peer-urls=" + loopbackURL("http", peerPort),
			"--initial-cluster=e2e=" + loopbackURL("http", peerPort),
			// The data is thrown away with the test; fsync only costs time.
			"--unsafe-no-fsync",
			"--log-level=warn",
		},
	}
	if err := c.etcd.start(); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, http.DefaultClient, loopbackURL("http", etcdPort)+"/health", c.etcd); err != nil {
		return nil, err
	}

	c.apiserver = &process{
		name:    "kube-apiserver",
		path:    filepath.Join(bin, "kube-apiserver"),
		logPath: filepath.Join(dir, "kube-apiserver.log"),
		args: append([]string{
			"--etcd-servers=" + loopbackURL("http", etcdPort),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(apiPort),
			"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
			"--tls-cert-file=" + pki.servingCert,
			"--tls-private-key-file=" + pki.servKey,
			"--client-ca-file=" + pki.caCert,
			"--service-account-issuer=" + issuer,
			"--service-account-key-file=" + pki.saKey,
			"--service-account-signing-key-file=" + pki.saKey,
			"--service-cluster-ip-range=" + serviceCIDR,
			"--authorization-mode=RBAC",
			// On loopback there is no routable address to publish as the
			// kubernetes Service's endpoint.
			"--endpoint-reconciler-type=none",
			"--allow-privileged=true",
			"--profiling=false",
			"--v=1",
		}, opts.APIServerArgs...),
	}
	if err := c.startAPIServer(ctx); err != nil {
		return nil, err
	}

	schedCert, schedKey, err := pki.serving("kube-scheduler", []string{"localhost"}, net.ParseIP("127.0.0.1"))
	if err != nil {
		return nil, err
	}
	schedUser, err := pki.client("system:kube-scheduler")
	if err != nil {
		return nil, err
	}
	schedKubeconfig := filepath.Join(dir, "kube-scheduler.kubeconfig")
	if err := writeKubeconfig(schedKubeconfig, c.host, pki.caPEM, "system:kube-scheduler", schedUser); err != nil {
		return nil, err
	}
	schedCertPath, schedKeyPath := filepath.Join(dir, "kube-scheduler.crt"), filepath.Join(dir, "kube-scheduler.key")
	if err := os.WriteFile(schedCertPath, schedCert, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(schedKeyPath, schedKey, 0o600); err != nil {
		return nil, err
	}
	c.scheduler = &process{
		name:    "kube-scheduler",
		path:    filepath.Join(bin, "kube-scheduler"),
		logPath: filepath.Join(dir, "kube-scheduler.log"),
		args: append([]string{
			"--kubeconfig=" + schedKubeconfig,
			"--authentication-kubeconfig=" + schedKubeconfig,
			"--authorization-kubeconfig=" + schedKubeconfig,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(schedPort),
			"--tls-cert-file=" + schedCertPath,
			"--tls-private-key-file=" + schedKeyPath,
			"--v=2",
		}, opts.SchedulerArgs...),
	}
	if err := c.scheduler.start(); err != nil {
		return nil, err
	}
	schedHTTP, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: pki.caPEM}})
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, schedHTTP, loopbackURL("https", schedPort)+"/healthz", c.scheduler); err != nil {
		return nil, err
	}

	for _, ns := range append([]string{metav1.NamespaceDefault}, opts.Namespaces...) {
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Kubeconfig is the path of a kubeconfig file for the admin user.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RestConfig returns a copy of the admin user's client configuration. Set its
// Impersonate field to act as another user or a ServiceAccount.
func (c *Cluster) RestConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client is a clientset for the admin user.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Host is the API server's URL, https://127.0.0.1:<port>.
func (c *Cluster) Host() string { return c.host }

// Dir is the directory holding the certificates, etcd's data and the logs.
func (c *Cluster) Dir() string { return c.dir }

// EnsureNamespace creates a namespace and its default ServiceAccount if they do not
// exist. Without a controller manager nobody else creates the ServiceAccount, and
// the ServiceAccount admission plugin rejects pods until it exists.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	_, err := c.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	_, err = c.client.CoreV1().ServiceAccounts(name).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create default ServiceAccount in %s: %w", name, err)
	}
	return nil
}

// StopAPIServer stops kube-apiserver and leaves etcd and the scheduler running. It
// sends SIGTERM, which closes the listener at once, and SIGKILL three seconds later,
// which ends the watches still open; it returns when the process is gone.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apiserver.stop(apiServerGrace)
}

// StartAPIServer starts kube-apiserver again, on the same port and with the same
// etcd, and returns once it is ready. Clients made before reconnect by themselves.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("cluster is stopped")
	}
	if c.apiserver.exited() == nil {
		return errors.New("kube-apiserver is already running")
	}
	return c.startAPIServer(ctx)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	if err := c.apiserver.start(); err != nil {
		return err
	}
	return waitHTTP(ctx, c.httpClient, c.host+"/readyz", c.apiserver)
}

// Stop kills the scheduler, kube-apiserver and etcd, and removes the directory. It
// may be called more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	for _, p := range []*process{c.scheduler, c.apiserver, c.etcd} {
		if p != nil {
			_ = p.stop(stopGrace)
		}
	}
	if c.httpClient != nil {
		c.httpClient.CloseIdleConnections()
	}
	_ = os.RemoveAll(c.dir)
}

// PIDs returns the process id of each running component by name.
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[string]int{}
	for _, p := range []*process{c.etcd, c.apiserver, c.scheduler} {
		if p != nil && p.exited() == nil {
			pids[p.name] = p.pid()
		}
	}
	return pids
}

// WriteLogs writes the last lines of each component's log to w, for a failing test.
func (c *Cluster) WriteLogs(w io.Writer, lines int) {
	io.WriteString(w, c.logTail(lines))
}

func (c *Cluster) logTail(lines int) string {
	var b bytes.Buffer
	for _, name := range []string{"etcd", "kube-apiserver", "kube-scheduler"} {
		path := filepath.Join(c.dir, name+".log")
		tail, err := tailFile(path, lines)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "----- %s (last %d lines of %s)\n%s", name, lines, path, tail)
	}
	return b.String()
}

func tailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ring := make([]string, 0, n)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if len(ring) == n {
			ring = ring[1:]
		}
		ring = append(ring, sc.Text()+"\n")
	}
	var b bytes.Buffer
	for _, l := range ring {
		b.WriteString(l)
	}
	return b.String(), sc.Err()
}

// waitHTTP polls url until it answers 200 OK. It fails at once if p exits, and when
// ctx ends. Polling is right here: a process that is starting has nothing to watch.
func waitHTTP(ctx context.Context, client *http.Client, url string, p *process) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s: %s", url, resp.Status, body)
		}
		last = err
		if err := p.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", p.name, ctx.Err(), last)
		case <-p.done:
			return p.exited()
		case <-tick.C:
		}
	}
}

// freePorts reserves n distinct free ports on 127.0.0.1 and releases them for the
// caller to bind. Another process could take one in between; the ports are
// random, so that is rare, and the start fails loudly when it happens.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func loopbackURL(scheme string, port int) string {
	return scheme + "://127.0.0.1:" + strconv.Itoa(port)
}

func writeKubeconfig(path, host string, caPEM []byte, user string, cert clientCert) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert.certPEM, ClientKeyData: cert.keyPEM}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user, Namespace: metav1.NamespaceDefault}
	cfg.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*cfg, path)
}
