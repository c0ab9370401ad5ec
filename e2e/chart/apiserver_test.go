package chart_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/tetherhq/tether/e2e/chart"
	"github.com/tetherhq/tether/e2e/cluster"
	"github.com/tetherhq/tether/e2e/internal/gobuild"
)

const (
	fieldManager = "tether-chart-test"
	apiTimeout   = time.Minute
)

// TestOnAPIServer checks the chart against a real kube-apiserver (Kubernetes
// v1.37, from the e2e harness):
//
//   - DryRunApply: every object of every scenario is accepted by server-side
//     apply with strict field validation and no warning, so a field that does not
//     exist, a wrong type or a deprecated API fails here.
//   - SessionPod: the pod the gateway would build from each scenario's template
//     is accepted too (the template is a string in a ConfigMap, so the API server
//     never sees it otherwise).
//   - GatewayStarts: the real gateway, started with exactly the environment each
//     scenario renders (mounted files written where they would be), validates its
//     configuration, syncs its pod cache, reports ready, and drains within the
//     rendered terminationGracePeriodSeconds.
//   - RBAC: see testRBAC.
func TestOnAPIServer(t *testing.T) {
	h := newHelm(t)
	bins := gobuild.ProductForTest(t, "./cmd/tether", "./cmd/tether-example")
	c := cluster.ForTest(t, cluster.Options{Namespaces: []string{releaseNS, sessionsNS}})
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	installCRD(t, ctx, c.RestConfig(), filepath.Join("testdata", "servicemonitor-crd.yaml"))

	manifests := map[string]*chart.Manifest{}
	for _, name := range scenarios(t) {
		manifests[name] = render(t, h, name)
	}
	for name, m := range manifests {
		t.Run("DryRunApply/"+name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			defer cancel()
			a := newApplier(t, c.RestConfig())
			for _, o := range m.Objects {
				if _, err := a.apply(ctx, o, true); err != nil {
					t.Errorf("%s: %v", o, err)
				}
				for _, w := range a.takeWarnings() {
					t.Errorf("%s: the API server warns: %s", o, w)
				}
			}
		})
		t.Run("SessionPod/"+name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			defer cancel()
			_, pod, err := m.SessionPod(testSize)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Client().CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{
				DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict, FieldManager: fieldManager,
			})
			if err != nil {
				t.Fatalf("the pod the gateway would create is refused: %v", err)
			}
			if got.Spec.Containers[0].Resources.Limits.Cpu().Cmp(testSize.CPULimit) != 0 {
				t.Errorf("the API server's pod has CPU limit %v", got.Spec.Containers[0].Resources.Limits.Cpu())
			}
		})
		t.Run("GatewayStarts/"+name, func(t *testing.T) {
			t.Parallel()
			testGatewayStarts(t, c, m, bins["tether"])
		})
	}
	t.Run("RBAC", func(t *testing.T) {
		t.Parallel()
		testRBAC(t, h, c, bins)
	})
}

// testGatewayStarts runs the gateway with the scenario's environment and the
// admin's kubeconfig, then stops it as the kubelet would.
func testGatewayStarts(t *testing.T, c *cluster.Cluster, m *chart.Manifest, bin string) {
	d, _, err := m.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	env := gatewayEnv(t, m, c.Kubeconfig())
	g := startGateway(t, bin, env)
	if warnings := g.logMatching("unknown variable"); len(warnings) > 0 {
		t.Errorf("the gateway ignores variables the chart renders:\n%s", strings.Join(warnings, "\n"))
	}
	if g.admin != "" {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("/readyz: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz = %s, want 200 once started", resp.Status)
		}
	}
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	took, err := g.stop(grace)
	if err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
	t.Logf("drained in %v (terminationGracePeriodSeconds %v)", took.Round(time.Millisecond), grace)
}

// applier applies rendered objects with server-side apply.
type applier struct {
	dyn      dynamic.Interface
	mu       sync.Mutex
	warnings []string
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	a := &applier{}
	cfg.WarningHandlerWithContext = a
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.dyn = dyn
	return a
}

// HandleWarningHeaderWithContext records the API server's warnings.
func (a *applier) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	a.mu.Lock()
	a.warnings = append(a.warnings, text)
	a.mu.Unlock()
}

func (a *applier) takeWarnings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.warnings
	a.warnings = nil
	return w
}

// resources maps the kinds the chart renders to their resources; all are
// namespaced. A new kind fails until it is added here.
var resources = map[string]string{
	"ConfigMap": "configmaps", "Deployment": "deployments", "NetworkPolicy": "networkpolicies",
	"PodDisruptionBudget": "poddisruptionbudgets", "Role": "roles", "RoleBinding": "rolebindings",
	"Service": "services", "ServiceAccount": "serviceaccounts", "ServiceMonitor": "servicemonitors",
}

// apply applies o, as a dry run if dryRun, with strict field validation.
func (a *applier) apply(ctx context.Context, o chart.Object, dryRun bool) (*unstructured.Unstructured, error) {
	gvk := o.GVK()
	res, ok := resources[gvk.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s is new: add its resource to the test's table", gvk.Kind)
	}
	opts := metav1.PatchOptions{FieldManager: fieldManager, FieldValidation: metav1.FieldValidationStrict, Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	ri := a.dyn.Resource(gvk.GroupVersion().WithResource(res)).Namespace(o.GetNamespace())
	return ri.Patch(ctx, o.GetName(), types.ApplyPatchType, o.JSON, opts)
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRD creates a CustomResourceDefinition and waits, on a watch, until it
// is Established.
func installCRD(t *testing.T, ctx context.Context, cfg *rest.Config, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := chart.ParseManifest(b)
	if err != nil || len(m.Objects) != 1 {
		t.Fatalf("%s: %v", path, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	crds := dyn.Resource(crdResource)
	name := m.Objects[0].GetName()
	if _, err := crds.Create(ctx, m.Objects[0].Unstructured, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create CRD %s: %v", name, err)
	}
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return crds.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return crds.Watch(ctx, o)
		},
	}
	_, err = watchtools.UntilWithSync(ctx, lw, &unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("CRD %s not established: %v", name, err)
	}
}
