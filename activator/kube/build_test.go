package kube

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/tetherhq/tether/activator"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from Build's output")

// goldenSpec is the session every golden file is built for.
var goldenSpec = activator.Spec{
	Session:   "abcdefghijklmnop",
	TokenHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	Size: activator.Size{
		CPURequest:    resource.MustParse("250m"),
		CPULimit:      resource.MustParse("1.5"),
		MemoryRequest: resource.MustParse("256Mi"),
		MemoryLimit:   resource.MustParse("1Gi"),
	},
	IdleTimeout: 15 * time.Minute,
}

// TestBuildGolden builds the pod for each testdata/<name>.template.yaml and
// compares it with testdata/<name>.golden.yaml. Run with -update to rewrite the
// golden files, then read the diff.
func TestBuildGolden(t *testing.T) {
	cases := []struct {
		name string
		port int32 // TETHER_POD_PORT
	}{
		{"minimal", 0},
		{"sidecar", 0},
		{"env", 0},
		{"podtemplatespec", 0},
		{"restart-always", 0},
		{"pod-port", 8443},
		{"exported", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := LoadTemplate(filepath.Join("testdata", tc.name+".template.yaml"), tc.port)
			if err != nil {
				t.Fatal(err)
			}
			before := tmpl.Spec.DeepCopy()
			pod := Build(tmpl, "sessions", goldenSpec)
			got, err := yaml.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(*before, tmpl.Spec) {
				t.Error("Build changed the template it was given")
			}
			if again, _ := yaml.Marshal(Build(tmpl, "sessions", goldenSpec)); !bytes.Equal(got, again) {
				t.Error("Build is not deterministic: two calls gave different pods")
			}

			golden := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestBuildGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Build(%s) differs from %s (run with -update and review the diff):\n%s",
					tc.name, golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// TestBuildContract checks, on top of the golden files, the rules a reader of
// the golden files could miss.
func TestBuildContract(t *testing.T) {
	load := func(t *testing.T, name string, port int32) *Template {
		t.Helper()
		tmpl, err := LoadTemplate(filepath.Join("testdata", name+".template.yaml"), port)
		if err != nil {
			t.Fatal(err)
		}
		return tmpl
	}
	env := func(c corev1.Container) map[string]string {
		m := map[string]string{}
		for _, e := range c.Env {
			if _, dup := m[e.Name]; dup {
				t.Errorf("container %s: env %s appears twice", c.Name, e.Name)
			}
			m[e.Name] = e.Value
		}
		return m
	}

	t.Run("sidecar: only the grpc container is sized", func(t *testing.T) {
		tmpl := load(t, "sidecar", 0)
		if tmpl.Container != 1 || tmpl.Port != 9000 {
			t.Fatalf("serving container %d port %d, want 1 and 9000", tmpl.Container, tmpl.Port)
		}
		pod := Build(tmpl, "ns", goldenSpec)
		solver, shipper := pod.Spec.Containers[1], pod.Spec.Containers[0]
		wantResources(t, solver, goldenSpec.Size)
		if got := shipper.Resources.Requests.Cpu().String(); got != "10m" || shipper.Resources.Limits != nil {
			t.Errorf("sidecar resources changed: %+v", shipper.Resources)
		}
		if _, ok := env(shipper)[activator.EnvCPURequest]; ok {
			t.Error("the sidecar got the size variables")
		}
	})

	t.Run("env: ours win and come first", func(t *testing.T) {
		pod := Build(load(t, "env", 0), "ns", goldenSpec)
		c := pod.Spec.Containers[0]
		e := env(c)
		if e[activator.EnvCPURequest] != "250m" || e["PORT"] != "50051" || e[activator.EnvCPULimit] != "1500m" {
			t.Errorf("env = %v, want the gateway's TETHER_CPU_REQUEST=250m, TETHER_CPU_LIMIT=1500m and PORT=50051", e)
		}
		if e["SOLVER_THREADS"] != "$(TETHER_CPU_LIMIT)" {
			t.Errorf("SOLVER_THREADS = %q, want the template's value", e["SOLVER_THREADS"])
		}
		idx := map[string]int{}
		for i, v := range c.Env {
			idx[v.Name] = i
		}
		if idx[activator.EnvCPULimit] > idx["SOLVER_THREADS"] {
			t.Error("TETHER_CPU_LIMIT comes after a variable that refers to it: Kubernetes would not expand it")
		}
		wantResources(t, c, goldenSpec.Size)
		if got := c.Resources.Requests[corev1.ResourceEphemeralStorage]; got.String() != "1Gi" {
			t.Errorf("ephemeral-storage request = %s, want the template's 1Gi", got.String())
		}
	})

	t.Run("podtemplatespec: the operator's settings are kept", func(t *testing.T) {
		pod := Build(load(t, "podtemplatespec", 0), "ns", goldenSpec)
		s := pod.Spec
		switch {
		case len(s.Volumes) != 1 || s.Volumes[0].NFS == nil || s.Volumes[0].NFS.Server != "nfs.example.com":
			t.Errorf("volumes = %+v", s.Volumes)
		case len(s.ImagePullSecrets) != 1 || s.ImagePullSecrets[0].Name != "registry-credentials":
			t.Errorf("imagePullSecrets = %+v", s.ImagePullSecrets)
		case s.NodeSelector["node.example.com/pool"] != "solvers":
			t.Errorf("nodeSelector = %v", s.NodeSelector)
		case len(s.Tolerations) != 1 || s.Tolerations[0].Key != "dedicated":
			t.Errorf("tolerations = %+v", s.Tolerations)
		case s.SecurityContext == nil || s.SecurityContext.RunAsUser == nil || *s.SecurityContext.RunAsUser != 10001:
			t.Errorf("securityContext = %+v", s.SecurityContext)
		case s.Containers[0].SecurityContext == nil || *s.Containers[0].SecurityContext.ReadOnlyRootFilesystem != true:
			t.Errorf("container securityContext = %+v", s.Containers[0].SecurityContext)
		case s.AutomountServiceAccountToken == nil || !*s.AutomountServiceAccountToken:
			t.Error("the template's automountServiceAccountToken: true was overridden")
		case s.RestartPolicy != corev1.RestartPolicyNever:
			t.Errorf("restartPolicy = %q, want Never when the template leaves it unset", s.RestartPolicy)
		}
		if pod.Labels[LabelManagedBy] != ManagedBy || pod.Labels["app.kubernetes.io/name"] != "solver" {
			t.Errorf("labels = %v, want ours merged over the template's", pod.Labels)
		}
		if !strings.HasPrefix(pod.GenerateName, "solver-"+goldenSpec.Session+"-") || pod.Name != "" {
			t.Errorf("name %q generateName %q, want generateName solver-<session>-", pod.Name, pod.GenerateName)
		}
	})

	t.Run("restart-always is kept", func(t *testing.T) {
		if got := Build(load(t, "restart-always", 0), "ns", goldenSpec).Spec.RestartPolicy; got != corev1.RestartPolicyAlways {
			t.Errorf("restartPolicy = %q, want the template's Always", got)
		}
	})

	t.Run("exported: server-set metadata is dropped", func(t *testing.T) {
		pod := Build(load(t, "exported", 0), "ns", goldenSpec)
		if pod.ResourceVersion != "" || pod.UID != "" || !pod.CreationTimestamp.IsZero() || pod.Generation != 0 || pod.Name != "" {
			t.Errorf("metadata = %+v, want no name, uid, resourceVersion, generation or creationTimestamp", pod.ObjectMeta)
		}
		if pod.Namespace != "ns" {
			t.Errorf("namespace = %q, want the runtime's", pod.Namespace)
		}
		if pod.Status.Phase != "" || pod.Status.PodIP != "" {
			t.Errorf("status = %+v, want none", pod.Status)
		}
	})

	t.Run("the record reads back", func(t *testing.T) {
		pod := Build(load(t, "minimal", 0), "ns", goldenSpec)
		rec, err := ReadRecord(pod)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Session != goldenSpec.Session || rec.TokenHash != goldenSpec.TokenHash || rec.IdleTimeout != goldenSpec.IdleTimeout ||
			rec.Size.String() != goldenSpec.Size.String() {
			t.Errorf("ReadRecord = %+v, want the spec it was built from", rec)
		}
		for k, v := range pod.Annotations {
			if strings.Contains(v, "token") || (k != AnnoTokenHash && v == goldenSpec.TokenHash) {
				t.Errorf("annotation %s=%q", k, v)
			}
		}
	})
}

func wantResources(t *testing.T, c corev1.Container, s activator.Size) {
	t.Helper()
	r := c.Resources
	if r.Requests.Cpu().Cmp(s.CPURequest) != 0 || r.Limits.Cpu().Cmp(s.CPULimit) != 0 ||
		r.Requests.Memory().Cmp(s.MemoryRequest) != 0 || r.Limits.Memory().Cmp(s.MemoryLimit) != 0 {
		t.Errorf("container %s resources = requests %v limits %v, want %s", c.Name, r.Requests, r.Limits, s)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		port       int32
		want       string
	}{
		{"no containers", "kind: Pod\nspec:\n  containers: []\n", 0, "no containers"},
		{"no containers in a spec", "spec:\n  restartPolicy: Never\n", 0, "no containers"},
		{"no port", "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n    ports:\n    - containerPort: 80\n", 0, "TETHER_POD_PORT"},
		{"unknown kind", "kind: Deployment\nspec: {}\n", 0, `kind "Deployment"`},
		{"unknown field in a Pod", "kind: Pod\nspec:\n  containers:\n  - name: a\n    imag: x\n", 8080, "unknown field"},
		{"unknown field in a PodTemplate", "kind: PodTemplate\ntemplate:\n  spec:\n    containers:\n    - name: a\n      image: x\n    restartPolicyy: Never\n", 8080, "unknown field"},
		{"unknown field in a PodTemplateSpec", "spec:\n  containers:\n  - name: a\n    image: x\n    port: 80\n", 8080, "unknown field"},
		{"not YAML", "kind: [Pod\n", 0, "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := ParseTemplate([]byte(tc.yaml), tc.port)
			if err == nil {
				t.Fatalf("ParseTemplate = %+v, want an error containing %q", tmpl, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}

	t.Run("LoadTemplate names the variable and the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "pod.yaml")
		if err := os.WriteFile(path, []byte("kind: Pod\nspec:\n  containers: []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadTemplate(path, 0)
		if err == nil || !strings.Contains(err.Error(), "TETHER_POD_TEMPLATE") || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadTemplate = %v, want an error naming TETHER_POD_TEMPLATE and %s", err, path)
		}
		_, err = LoadTemplate(filepath.Join(t.TempDir(), "missing.yaml"), 0)
		if err == nil || !strings.Contains(err.Error(), "TETHER_POD_TEMPLATE") {
			t.Errorf("LoadTemplate(missing) = %v, want an error naming TETHER_POD_TEMPLATE", err)
		}
	})
}

// lineDiff is a unified diff from want to got, for a golden mismatch.
func lineDiff(want, got string) string {
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(want), B: difflib.SplitLines(got),
		FromFile: "golden", ToFile: "Build", Context: 2,
	})
	if err != nil {
		return err.Error()
	}
	return d
}
