package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator/hints"
)

// Config is every setting of the gateway. It is parsed once from the environment,
// then validated; each error names the variable to fix. The README's environment
// table is the operator's view of this struct, and a test keeps the two in step.
type Config struct {
	Listen  string `env:"TETHER_LISTEN" envDefault:":8080"`
	Runtime string `env:"TETHER_RUNTIME" envDefault:"local"`

	// LocalCommand is run once per session by the local runtime. Its default is
	// the example server found next to the tether binary.
	LocalCommand string        `env:"TETHER_LOCAL_COMMAND"`
	StopGrace    time.Duration `env:"TETHER_STOP_GRACE" envDefault:"10s"`
	MaxInstances int           `env:"TETHER_MAX_INSTANCES" envDefault:"100"`

	// The Kubernetes runtime. Namespace defaults to the gateway's own when it runs
	// in a cluster, else "default".
	Namespace       string        `env:"TETHER_NAMESPACE"`
	PodTemplate     string        `env:"TETHER_POD_TEMPLATE"`
	PodPort         int32         `env:"TETHER_POD_PORT" envDefault:"0"`
	KubeQPS         float32       `env:"TETHER_KUBE_QPS" envDefault:"50"`
	KubeBurst       int           `env:"TETHER_KUBE_BURST" envDefault:"100"`
	KubeSyncTimeout time.Duration `env:"TETHER_KUBE_SYNC_TIMEOUT" envDefault:"1m"`

	ActivationTime time.Duration `env:"TETHER_ACTIVATION_TIMEOUT" envDefault:"2m"`

	IdleTimeout    time.Duration `env:"TETHER_IDLE_TIMEOUT" envDefault:"10m"`
	MinIdleTimeout time.Duration `env:"TETHER_MIN_IDLE_TIMEOUT" envDefault:"1m"`
	MaxIdleTimeout time.Duration `env:"TETHER_MAX_IDLE_TIMEOUT" envDefault:"24h"`
	MaxLifetime    time.Duration `env:"TETHER_MAX_LIFETIME" envDefault:"0"`
	IdleIgnore     []string      `env:"TETHER_IDLE_IGNORE_METHODS" envDefault:"/grpc.health.v1.Health/Check,/grpc.health.v1.Health/Watch"`
	ReapInterval   time.Duration `env:"TETHER_REAP_INTERVAL" envDefault:"1s"`

	DefaultCPU    string `env:"TETHER_DEFAULT_CPU" envDefault:"500m"`
	MinCPU        string `env:"TETHER_MIN_CPU" envDefault:"1m"`
	MaxCPU        string `env:"TETHER_MAX_CPU" envDefault:"4"`
	DefaultMemory string `env:"TETHER_DEFAULT_MEMORY" envDefault:"512Mi"`
	MinMemory     string `env:"TETHER_MIN_MEMORY" envDefault:"1Mi"`
	MaxMemory     string `env:"TETHER_MAX_MEMORY" envDefault:"8Gi"`

	TLSCert          string        `env:"TETHER_TLS_CERT"`
	TLSKey           string        `env:"TETHER_TLS_KEY"`
	HandshakeTimeout time.Duration `env:"TETHER_HANDSHAKE_TIMEOUT" envDefault:"10s"`
	KeepaliveIdle    time.Duration `env:"TETHER_KEEPALIVE_INTERVAL" envDefault:"1m"`
	KeepaliveTimeout time.Duration `env:"TETHER_KEEPALIVE_TIMEOUT" envDefault:"20s"`
	ShutdownGrace    time.Duration `env:"TETHER_SHUTDOWN_GRACE" envDefault:"30s"`
	DrainDelay       time.Duration `env:"TETHER_DRAIN_DELAY" envDefault:"0s"`
	MetricsListen    string        `env:"TETHER_METRICS_LISTEN" envDefault:":9090"`
	DialTimeout      time.Duration `env:"TETHER_DIAL_TIMEOUT" envDefault:"5s"`

	MaxConcurrentStreams uint32 `env:"TETHER_MAX_CONCURRENT_STREAMS" envDefault:"1000"`
	StreamWindow         string `env:"TETHER_STREAM_WINDOW" envDefault:"1Mi"`
	ConnWindow           string `env:"TETHER_CONN_WINDOW" envDefault:"4Mi"`

	LogFormat string `env:"TETHER_LOG_FORMAT" envDefault:"auto"`
	LogLevel  string `env:"TETHER_LOG_LEVEL" envDefault:"info"`

	// Derived by Validate.
	bounds       hints.Bounds
	streamWindow int32
	connWindow   int32
}

// emptyAllowed are the variables whose empty value means "off".
var emptyAllowed = map[string]bool{"TETHER_TLS_CERT": true, "TETHER_TLS_KEY": true}

// loadConfig parses and validates the configuration from environ.
func loadConfig(environ map[string]string) (Config, error) {
	// caarlos0/env treats a variable set to "" as unset and quietly applies the
	// default; an operator who wrote TETHER_IDLE_TIMEOUT= meant something, so say so.
	var errs []error
	for _, name := range configVars() {
		if v, ok := environ[name]; ok && v == "" && !emptyAllowed[name] {
			errs = append(errs, fmt.Errorf("%s is set but empty; unset it to use the default", name))
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: environ})
	if err != nil {
		errs = append(errs, namedParseErrors(err)...)
	}
	if len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}
	return cfg, cfg.Validate()
}

// Validate checks meaning, not just syntax, and fills the derived fields.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf(name+": "+format, args...))
	}
	switch c.Runtime {
	case "local":
	case "kubernetes":
		if c.PodTemplate == "" {
			bad("TETHER_POD_TEMPLATE", "required with TETHER_RUNTIME=kubernetes: a YAML file holding the session Pod or PodTemplateSpec")
		}
	default:
		bad("TETHER_RUNTIME", "%q is not one of local, kubernetes", c.Runtime)
	}
	if c.Listen == "" || !strings.Contains(c.Listen, ":") {
		bad("TETHER_LISTEN", "%q is not host:port", c.Listen)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("TETHER_TLS_CERT", "TETHER_TLS_CERT and TETHER_TLS_KEY must be set together")
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"TETHER_STOP_GRACE", c.StopGrace},
		{"TETHER_ACTIVATION_TIMEOUT", c.ActivationTime},
		{"TETHER_REAP_INTERVAL", c.ReapInterval},
		{"TETHER_HANDSHAKE_TIMEOUT", c.HandshakeTimeout},
		{"TETHER_SHUTDOWN_GRACE", c.ShutdownGrace},
		{"TETHER_DIAL_TIMEOUT", c.DialTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.name, "%s must be greater than zero", p.d)
		}
	}
	for _, m := range c.IdleIgnore {
		if m == "" {
			continue // "," is how an operator says "ignore nothing", since "" means unset
		}
		if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 {
			bad("TETHER_IDLE_IGNORE_METHODS", "%q is not a method path like /grpc.health.v1.Health/Check", m)
		}
	}
	if c.KeepaliveIdle < 0 || c.KeepaliveTimeout < 0 {
		bad("TETHER_KEEPALIVE_INTERVAL", "TETHER_KEEPALIVE_INTERVAL and TETHER_KEEPALIVE_TIMEOUT must not be negative; 0 disables the keepalive")
	}
	if c.DrainDelay < 0 {
		bad("TETHER_DRAIN_DELAY", "%s is negative", c.DrainDelay)
	}
	if c.MetricsListen != "off" && !strings.Contains(c.MetricsListen, ":") {
		bad("TETHER_METRICS_LISTEN", "%q is not host:port (or off)", c.MetricsListen)
	}
	if c.MaxLifetime < 0 {
		bad("TETHER_MAX_LIFETIME", "%s is negative; 0 disables the cap", c.MaxLifetime)
	}
	if c.MaxInstances < 0 {
		bad("TETHER_MAX_INSTANCES", "%d is negative; 0 means no cap", c.MaxInstances)
	}
	if c.PodPort < 0 || c.PodPort > 65535 {
		bad("TETHER_POD_PORT", "%d is not a port", c.PodPort)
	}
	if c.KubeQPS <= 0 || c.KubeBurst <= 0 {
		bad("TETHER_KUBE_QPS", "TETHER_KUBE_QPS and TETHER_KUBE_BURST must be greater than zero")
	}
	if c.KubeSyncTimeout <= 0 {
		bad("TETHER_KUBE_SYNC_TIMEOUT", "%s must be greater than zero", c.KubeSyncTimeout)
	}
	if c.MaxConcurrentStreams == 0 {
		bad("TETHER_MAX_CONCURRENT_STREAMS", "must be at least 1")
	}
	c.streamWindow = window("TETHER_STREAM_WINDOW", c.StreamWindow, bad)
	c.connWindow = window("TETHER_CONN_WINDOW", c.ConnWindow, bad)
	if !slices.Contains([]string{"auto", "text", "json"}, c.LogFormat) {
		bad("TETHER_LOG_FORMAT", "%q is not one of auto, text, json", c.LogFormat)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("TETHER_LOG_LEVEL", "%v", err)
	}

	q := func(name, v string) resource.Quantity {
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			bad(name, "%q is not a Kubernetes quantity", v)
		}
		return qty
	}
	c.bounds = hints.Bounds{
		DefaultCPU: q("TETHER_DEFAULT_CPU", c.DefaultCPU), MinCPU: q("TETHER_MIN_CPU", c.MinCPU), MaxCPU: q("TETHER_MAX_CPU", c.MaxCPU),
		DefaultMemory: q("TETHER_DEFAULT_MEMORY", c.DefaultMemory), MinMemory: q("TETHER_MIN_MEMORY", c.MinMemory), MaxMemory: q("TETHER_MAX_MEMORY", c.MaxMemory),
		DefaultIdle: c.IdleTimeout, MinIdle: c.MinIdleTimeout, MaxIdle: c.MaxIdleTimeout,
	}
	if len(errs) == 0 {
		if err := c.bounds.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// window parses a flow-control window size: a quantity between 64 KiB and 2 GiB.
func window(name, v string, bad func(string, string, ...any)) int32 {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		bad(name, "%q is not a size such as 1Mi", v)
		return 0
	}
	n, ok := q.AsInt64()
	if !ok || n < 65535 || n > 1<<31-1 {
		bad(name, "%s must be between 64Ki and 2Gi", v)
		return 0
	}
	return int32(n)
}

// configVars lists the variables Config reads, in declaration order.
func configVars() []string {
	var out []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("env"); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// namedParseErrors rewrites caarlos0/env's errors, which name Go fields, to name
// the variables an operator sets.
func namedParseErrors(err error) []error {
	byField := map[string]string{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		byField[t.Field(i).Name] = t.Field(i).Tag.Get("env")
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{err}
	}
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) && byField[pe.Name] != "" {
			out = append(out, fmt.Errorf("%s: %v", byField[pe.Name], pe.Err))
			continue
		}
		out = append(out, e)
	}
	return out
}

// unknownVars returns TETHER_* variables that no setting reads, most likely typos.
// The variables tether gives its instances are not settings of the gateway but
// may be inherited, so they are not reported.
func unknownVars(environ map[string]string) []string {
	known := map[string]bool{}
	for _, n := range configVars() {
		known[n] = true
	}
	for _, n := range []string{"TETHER_CPU_REQUEST", "TETHER_CPU_LIMIT", "TETHER_MEMORY_REQUEST", "TETHER_MEMORY_LIMIT", "TETHER_SESSION", "TETHER_CACHE"} {
		known[n] = true
	}
	var out []string
	for k := range environ {
		if strings.HasPrefix(k, "TETHER_") && !known[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// defaultLocalCommand is the example server beside the tether binary, so that a
// fresh build serves something with no configuration at all.
func defaultLocalCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "tether-example -listen 127.0.0.1:{port}"
	}
	// Quoted, because the command is split into words and the path may hold spaces.
	return "'" + strings.ReplaceAll(filepath.Join(filepath.Dir(exe), "tether-example"), "'", `'\''`) + "' -listen 127.0.0.1:{port}"
}
