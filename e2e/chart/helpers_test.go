package chart_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tetherhq/tether/e2e/chart"
)

const (
	// The release every scenario is rendered as. Its namespaces exist in the test
	// cluster; the sessions-namespace scenario puts session pods in sessionsNS.
	releaseName = "demo"
	releaseNS   = "tether"
	sessionsNS  = "tether-sessions"
	fullname    = "demo-tether"

	renderTimeout = 2 * time.Minute
)

// requiredScenarios are the value scenarios of charts/tether/ci that the issue
// asks for; more may exist, and each is checked.
var requiredScenarios = []string{"default", "tls", "custom-pod", "sessions-namespace"}

var (
	helmOnce sync.Once
	helmBin  string
	helmErr  error
)

// repoRoot is the product repository, which holds charts/tether.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := chart.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "tether") }

// newHelm returns a helm for the chart, with state in a directory of the test.
func newHelm(t testing.TB) *chart.Helm {
	t.Helper()
	helmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		helmBin, helmErr = chart.HelmBinary(ctx)
	})
	if helmErr != nil {
		t.Fatalf("helm %s: %v", chart.HelmVersion, helmErr)
	}
	return chart.NewHelm(helmBin, chartDir(t), t.TempDir())
}

// scenarios lists charts/tether/ci/<name>-values.yaml by name.
func scenarios(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), "-values.yaml"))
	}
	for _, want := range requiredScenarios {
		if !slices.Contains(names, want) {
			t.Errorf("charts/tether/ci has no %s-values.yaml", want)
		}
	}
	return names
}

func scenarioRelease(t testing.TB, name string, setJSON ...string) chart.Release {
	return chart.Release{
		Name:      releaseName,
		Namespace: releaseNS,
		Values:    []string{filepath.Join(chartDir(t), "ci", name+"-values.yaml")},
		SetJSON:   setJSON,
	}
}

// render renders a scenario, with --set-json overrides after its values file.
func render(t testing.TB, h *chart.Helm, name string, setJSON ...string) *chart.Manifest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	m, err := h.Template(ctx, scenarioRelease(t, name, setJSON...))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// renderErr renders the default values with overrides and returns helm's error.
func renderErr(t testing.TB, h *chart.Helm, setJSON ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	_, err := h.Template(ctx, scenarioRelease(t, "default", setJSON...))
	return err
}

// scenarioValues reads a scenario's values file.
func scenarioValues(t testing.TB, name string) map[string]any {
	t.Helper()
	return readYAML(t, filepath.Join(chartDir(t), "ci", name+"-values.yaml"))
}

func readYAML(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// sessionsNamespaceOf is where a scenario puts session pods.
func sessionsNamespaceOf(t testing.TB, name string) string {
	if ns, _ := scenarioValues(t, name)["sessionsNamespace"].(string); ns != "" {
		return ns
	}
	return releaseNS
}
