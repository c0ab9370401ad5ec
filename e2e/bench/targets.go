package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUs: the proxy under test runs alone on proxyCPU; the backend, the load
// generator and the harness share loadCPU.
const (
	proxyCPU = 1
	loadCPU  = 0
)

// bins are the executables the harness runs.
type bins struct {
	tether, example, backend, tetherprof string
	nginx, haproxy, caddy, h2load, ghz   string
}

// target is one thing under test, running: a proxy (or none) in front of a backend.
type target struct {
	name        string
	addr        string
	token       string // x-tether-session, for tether
	proxy       *proc  // nil for direct
	backend     *proc  // nil when the proxy started the backend itself (tether)
	dir         string
	backendAddr string
}

// hdr is what every request to the target carries.
func (t *target) hdr() map[string]string {
	if t.token == "" {
		return nil
	}
	return map[string]string{"x-tether-session": t.token}
}

// proxyPids are the proxy's processes: nginx's master and workers; tether alone,
// not the instances it started.
func (t *target) proxyPids() []int {
	if t.proxy == nil {
		return nil
	}
	pids := []int{t.proxy.pid()}
	if t.name == "nginx" {
		pids = append(pids, children(t.proxy.pid())...)
	}
	return pids
}

func (t *target) backendPids() []int {
	if t.backend != nil {
		return []int{t.backend.pid()}
	}
	if t.proxy != nil {
		return children(t.proxy.pid())
	}
	return nil
}

func (t *target) alive() error {
	for _, p := range []*proc{t.proxy, t.backend} {
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *target) stop() {
	t.proxy.stop(15 * time.Second)
	t.backend.stop(5 * time.Second)
	if t.dir != "" {
		os.RemoveAll(t.dir)
	}
}

// waitListening dials addr until it accepts, p exits, or timeout passes.
func waitListening(addr string, ps []*proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		for _, p := range ps {
			if p != nil {
				if err := p.exited(); err != nil {
					return err
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, timeout, err)
		}
		<-tick.C
	}
}

func startBackend(b bins) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := start("backend", loadCPU, nil, "", b.backend, "-listen", addr)
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(addr, []*proc{p}, 30*time.Second); err != nil {
		p.stop(time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// startTarget starts a fresh target by name.
func startTarget(name string, b bins) (*target, error) {
	t := &target{name: name}
	var err error
	switch name {
	case "direct":
		t.backend, t.addr, err = startBackend(b)
		return t, err
	case "tether":
		err = t.startTether(b.tether, b.backend, true)
	case "nginx":
		err = t.startNginx(b)
	case "haproxy":
		err = t.startHAProxy(b)
	case "caddy":
		err = t.startCaddy(b)
	default:
		err = fmt.Errorf("unknown target %q", name)
	}
	if err != nil {
		t.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// startTether runs the gateway on the proxy CPU with GOMAXPROCS=1 and the local
// runtime, whose instances are the bench backend pinned to the load CPU. It then
// makes the first call, which cold-starts the session, and keeps its token: every
// later load connection presents it, so all of them are pinned to that one
// instance, as the other proxies all reach one backend.
func (t *target) startTether(tetherBin, instanceBin string, first bool) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	t.addr = "127.0.0.1:" + strconv.Itoa(port)
	env := []string{
		"GOMAXPROCS=1",
		"TETHER_LISTEN=" + t.addr,
		"TETHER_RUNTIME=local",
		"TETHER_LOCAL_COMMAND=taskset -c " + strconv.Itoa(loadCPU) + " " + instanceBin + " -listen 127.0.0.1:{port}",
		"TETHER_METRICS_LISTEN=off",
		"TETHER_LOG_FORMAT=text",
		"TETHER_LOG_LEVEL=warn",
		"TETHER_SHUTDOWN_GRACE=2s",
		"TETHER_STOP_GRACE=2s",
	}
	t.proxy, err = start("tether", proxyCPU, env, "", tetherBin)
	if err != nil {
		return err
	}
	if err := waitListening(t.addr, []*proc{t.proxy}, 30*time.Second); err != nil {
		return err
	}
	if first {
		t.token, err = firstCall(t.addr)
		if err != nil {
			return fmt.Errorf("first call: %w\n%s", err, lastLines(t.proxy.log.String(), 10))
		}
	}
	return nil
}

func (t *target) mkdir() (string, error) {
	d, err := os.MkdirTemp("", "tether-bench-"+t.name+"-")
	if err != nil {
		return "", err
	}
	os.Chmod(d, 0o777)
	t.dir = d
	return d, nil
}

// startNginx runs nginx with grpc_pass: one worker on the proxy CPU, keepalive to
// the backend, and keepalive_requests raised so that it never sends GOAWAY after
// 1000 requests.
func (t *target) startNginx(b bins) error {
	dir, err := t.prepareProxy(b)
	if err != nil {
		return err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root root;\n"
	}
	conf := fmt.Sprintf(`%sworker_processes 1;
worker_cpu_affinity %s;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path %[3]s/body;
  proxy_temp_path %[3]s/proxy;
  fastcgi_temp_path %[3]s/fastcgi;
  uwsgi_temp_path %[3]s/uwsgi;
  scgi_temp_path %[3]s/scgi;
  upstream backend {
    server %[4]s;
    keepalive 1024;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }
  server {
    listen %[5]s http2;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 1000;
    client_max_body_size 0;
    client_body_timeout 600s;
    location / {
      grpc_pass grpc://backend;
      grpc_read_timeout 600s;
      grpc_send_timeout 600s;
    }
  }
}
`, user, cpuMask(proxyCPU), dir, t.backendAddr, t.addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	t.proxy, err = start("nginx", proxyCPU, nil, dir, b.nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"))
	if err != nil {
		return err
	}
	return waitListening(t.addr, []*proc{t.proxy}, 30*time.Second)
}

// cpuMask is nginx's worker_cpu_affinity bitmask for one CPU.
func cpuMask(cpu int) string { return "1" + strings.Repeat("0", cpu) }

// startHAProxy runs HAProxy in h2 mode on both sides: one thread, mapped to the
// proxy CPU. It keeps HAProxy's default http-reuse (safe): with "always", HAProxy
// 2.6.12 stalled about one run in ten of two concurrent bidi streams from ghz on
// one connection, which would be an error of HAProxy's, not a measurement.
func (t *target) startHAProxy(b bins) error {
	dir, err := t.prepareProxy(b)
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`global
  nbthread 1
  cpu-map 1/1 %d
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
frontend fe
  bind %s proto h2
  default_backend be
backend be
  server s1 %s proto h2
`, proxyCPU, t.addr, t.backendAddr)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return err
	}
	t.proxy, err = start("haproxy", proxyCPU, nil, dir, b.haproxy, "-db", "-f", cfg)
	if err != nil {
		return err
	}
	return waitListening(t.addr, []*proc{t.proxy}, 30*time.Second)
}

// startCaddy runs Caddy's reverse_proxy to the backend over h2c, GOMAXPROCS=1.
func (t *target) startCaddy(b bins) error {
	dir, err := t.prepareProxy(b)
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"ERROR"}}},
"apps":{"http":{"servers":{"bench":{"listen":["%s"],"protocols":["h1","h2","h2c"],"automatic_https":{"disable":true},
"routes":[{"handle":[{"handler":"reverse_proxy","flush_interval":-1,
"transport":{"protocol":"http","versions":["h2c","2"]},
"upstreams":[{"dial":"%s"}]}]}]}}}}}`, t.addr, t.backendAddr)
	cfg := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return err
	}
	t.proxy, err = start("caddy", proxyCPU, []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}, dir, b.caddy, "run", "--config", cfg)
	if err != nil {
		return err
	}
	return waitListening(t.addr, []*proc{t.proxy}, 30*time.Second)
}

// prepareProxy starts the target's own backend, makes its working directory and
// picks its listen address: what every third-party proxy needs before its config.
func (t *target) prepareProxy(b bins) (dir string, err error) {
	if t.backend, err = t.startOwnBackend(b); err != nil {
		return "", err
	}
	if dir, err = t.mkdir(); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	t.addr = "127.0.0.1:" + strconv.Itoa(port)
	return dir, nil
}

func (t *target) startOwnBackend(b bins) (*proc, error) {
	p, addr, err := startBackend(b)
	if err != nil {
		return nil, err
	}
	t.backendAddr = addr
	return p, nil
}
