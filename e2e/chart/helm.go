// Package chart checks the Helm chart in charts/tether: it renders the chart with a
// pinned helm, decodes every object into its Kubernetes type, and offers what the
// tests in this package need to apply the objects to a real API server and to run
// the gateway with the environment the chart renders.
//
// helm is built from the Go module proxy (helm.sh/helm/v4 at HelmVersion) into the
// tool cache, never taken from the machine: `make chart-test` passes its path in
// TETHER_HELM, and a plain `go test` builds it on first use.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// HelmVersion is the helm the chart is checked with. The Makefile's
	// HELM_VERSION must be the same; TestMakefilePinsTheSameHelm keeps them equal.
	HelmVersion = "v4.3.2"
	// EnvHelm names a helm binary to use instead of the cached one.
	EnvHelm = "TETHER_HELM"

	helmModule       = "helm.sh/helm/v4/cmd/helm"
	helmBuildTimeout = 15 * time.Minute
)

// HelmBinary returns the helm to run: TETHER_HELM if set, else
// ${TETHER_CACHE:-~/.cache/tether}/tools/helm-<version>/helm, which it installs
// with `go install` when missing (about two minutes the first time).
func HelmBinary(ctx context.Context) (string, error) {
	if p := os.Getenv(EnvHelm); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", EnvHelm, err)
		}
		return p, nil
	}
	cache := os.Getenv("TETHER_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "tether")
	}
	dir := filepath.Join(cache, "tools", "helm-"+HelmVersion)
	bin := filepath.Join(dir, "helm")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(ctx, helmBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", helmModule+"@"+HelmVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", helmModule, HelmVersion, err, out)
	}
	return bin, nil
}

// RepoRoot is the product repository's root: the nearest directory above the
// working directory that holds charts/tether.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "charts", "tether", "Chart.yaml")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("charts/tether not found above " + wd)
		}
	}
}

// Helm runs one helm binary on one chart, with its own empty configuration and
// cache directories, so that nothing on the machine (repositories, plugins, a
// kubeconfig) changes what it renders.
type Helm struct {
	Bin   string
	Chart string // the chart's directory
	home  string
}

// NewHelm returns a Helm whose state lives in home, a directory the caller owns.
func NewHelm(bin, chart, home string) *Helm {
	return &Helm{Bin: bin, Chart: chart, home: home}
}

// Run runs helm with args and returns its standard output. A failure's error
// holds helm's standard error, which names what was wrong.
func (h *Helm) Run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Bin, args...)
	cmd.Env = []string{
		"HOME=" + h.home,
		"PATH=" + os.Getenv("PATH"),
		"HELM_CACHE_HOME=" + filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(h.home, "config"),
		"HELM_DATA_HOME=" + filepath.Join(h.home, "data"),
		"KUBECONFIG=" + filepath.Join(h.home, "no-kubeconfig"),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.Bytes(), nil
}

// Release is what to render: a release name and namespace, values files and
// --set-json pairs (key=json), applied in that order.
type Release struct {
	Name      string
	Namespace string
	Values    []string
	SetJSON   []string
}

func (r Release) args() []string {
	args := []string{"--namespace", r.Namespace}
	for _, v := range r.Values {
		args = append(args, "--values", v)
	}
	for _, s := range r.SetJSON {
		args = append(args, "--set-json", s)
	}
	return args
}

// Template renders the chart for r and decodes every object.
func (h *Helm) Template(ctx context.Context, r Release) (*Manifest, error) {
	out, err := h.Run(ctx, append([]string{"template", r.Name, h.Chart}, r.args()...)...)
	if err != nil {
		return nil, err
	}
	return ParseManifest(out)
}

// Lint runs `helm lint --strict` for r.
func (h *Helm) Lint(ctx context.Context, r Release) ([]byte, error) {
	return h.Run(ctx, append([]string{"lint", "--strict", h.Chart}, r.args()...)...)
}

// Notes renders NOTES.txt for r, through a client-side dry-run install, which
// needs no cluster.
func (h *Helm) Notes(ctx context.Context, r Release) (string, error) {
	out, err := h.Run(ctx, append([]string{"install", r.Name, h.Chart, "--dry-run=client"}, r.args()...)...)
	if err != nil {
		return "", err
	}
	_, notes, ok := strings.Cut(string(out), "\nNOTES:\n")
	if !ok {
		return "", fmt.Errorf("no NOTES in the output of a dry-run install:\n%s", out)
	}
	return notes, nil
}
