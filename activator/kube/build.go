package kube

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tetherhq/tether/activator"
)

// Labels and annotations on every pod tether starts. The annotations are the
// session's record in the cluster: a restarted gateway re-attaches tokens from
// them, so they hold the token's hash, never the token.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedBy        = "tether"
	LabelSession     = "tether.dev/session"
	AnnoTokenHash    = "tether.dev/token-sha256"
	AnnoCPURequest   = "tether.dev/cpu-request"
	AnnoCPULimit     = "tether.dev/cpu-limit"
	AnnoMemRequest   = "tether.dev/memory-request"
	AnnoMemLimit     = "tether.dev/memory-limit"
	AnnoIdleTimeout  = "tether.dev/idle-timeout"
	defaultGenerate  = "tether-"
	servingPortName  = "grpc"
	managedSelector  = LabelManagedBy + "=" + ManagedBy
	templateVariable = "TETHER_POD_TEMPLATE"
)

// Template is the operator's pod template with its serving container found.
type Template struct {
	Spec      corev1.PodTemplateSpec
	Container int   // index of the container that serves gRPC
	Port      int32 // its gRPC port
}

// serving is the name of the container that serves gRPC.
func (t *Template) serving() string { return t.Spec.Spec.Containers[t.Container].Name }

// LoadTemplate reads a YAML file holding a Pod, a PodTemplate or a bare
// PodTemplateSpec (TETHER_POD_TEMPLATE). port, if not 0, is TETHER_POD_PORT.
func LoadTemplate(path string, port int32) (*Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", templateVariable, err)
	}
	t, err := ParseTemplate(b, port)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", templateVariable, path, err)
	}
	return t, nil
}

// ParseTemplate is LoadTemplate for bytes in hand.
func ParseTemplate(b []byte, port int32) (*Template, error) {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &head); err != nil {
		return nil, err
	}
	var spec corev1.PodTemplateSpec
	switch head.Kind {
	case "Pod":
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			return nil, err
		}
		spec = corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	case "PodTemplate":
		var p corev1.PodTemplate
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			return nil, err
		}
		spec = p.Template
	case "", "PodTemplateSpec":
		var raw map[string]any
		if err := yaml.Unmarshal(b, &raw); err != nil {
			return nil, err
		}
		delete(raw, "kind")
		delete(raw, "apiVersion")
		clean, _ := yaml.Marshal(raw)
		if err := yaml.UnmarshalStrict(clean, &spec); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("kind %q: want Pod, PodTemplate or PodTemplateSpec", head.Kind)
	}
	return newTemplate(spec, port)
}

func newTemplate(spec corev1.PodTemplateSpec, port int32) (*Template, error) {
	if len(spec.Spec.Containers) == 0 {
		return nil, errors.New("the template has no containers")
	}
	// The serving container is the one with a port named grpc, else the first,
	// which then serves on TETHER_POD_PORT.
	t := &Template{Spec: spec, Container: 0, Port: port}
	for i, c := range spec.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == servingPortName {
				t.Container = i
				if port == 0 {
					t.Port = p.ContainerPort
				}
			}
		}
	}
	if t.Port == 0 {
		return nil, errors.New("no container port is named grpc and TETHER_POD_PORT is not set: the gateway does not know where instances listen")
	}
	return t, nil
}

// Build turns the template and a session's spec into the pod to create. It is pure:
// the same inputs give the same pod, which the golden files pin.
//
// The serving container gets the requests and limits from the hints and the
// TETHER_* size variables (replacing any the template set); the pod gets the
// managed-by and session labels and the session's annotations. The name is left
// to the API server (generateName), so two gateways never collide.
func Build(t *Template, namespace string, spec activator.Spec) *corev1.Pod {
	tmpl := t.Spec.DeepCopy()
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		// Only what an author writes is kept: a template saved from a live pod
		// (kubectl get -o yaml) also carries a resourceVersion, a uid and the
		// like, and the API server refuses to create a pod with a resourceVersion.
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: tmpl.GenerateName,
			Namespace:    namespace,
			Labels:       tmpl.Labels,
			Annotations:  tmpl.Annotations,
		},
		Spec: tmpl.Spec,
	}
	prefix := pod.GenerateName
	if prefix == "" {
		prefix = defaultGenerate
	}
	pod.GenerateName = prefix + spec.Session + "-"
	pod.Labels = merge(pod.Labels, map[string]string{LabelManagedBy: ManagedBy, LabelSession: spec.Session})
	s := spec.Size
	pod.Annotations = merge(pod.Annotations, map[string]string{
		AnnoTokenHash:   spec.TokenHash,
		AnnoCPURequest:  s.CPURequest.String(),
		AnnoCPULimit:    s.CPULimit.String(),
		AnnoMemRequest:  s.MemoryRequest.String(),
		AnnoMemLimit:    s.MemoryLimit.String(),
		AnnoIdleTimeout: spec.IdleTimeout.String(),
	})
	if pod.Spec.RestartPolicy == "" {
		// A session's state lives in its process: a restarted container is a new,
		// empty instance, so by default the pod is not restarted but ended.
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	if pod.Spec.AutomountServiceAccountToken == nil {
		// An instance runs the client's workload; it gets no API credentials
		// unless the operator's template asks for them.
		no := false
		pod.Spec.AutomountServiceAccountToken = &no
	}
	c := &pod.Spec.Containers[t.Container]
	c.Resources.Requests = merge(c.Resources.Requests, corev1.ResourceList{
		corev1.ResourceCPU: s.CPURequest, corev1.ResourceMemory: s.MemoryRequest,
	})
	c.Resources.Limits = merge(c.Resources.Limits, corev1.ResourceList{
		corev1.ResourceCPU: s.CPULimit, corev1.ResourceMemory: s.MemoryLimit,
	})
	ours := map[string]string{
		"PORT":                     strconv.Itoa(int(t.Port)),
		activator.EnvSession:       spec.Session,
		activator.EnvCPURequest:    s.CPURequest.String(),
		activator.EnvCPULimit:      s.CPULimit.String(),
		activator.EnvMemoryRequest: s.MemoryRequest.String(),
		activator.EnvMemoryLimit:   s.MemoryLimit.String(),
	}
	// Ours go first, so the template's own variables and args may refer to them
	// as $(TETHER_CPU_LIMIT): Kubernetes expands only from earlier entries.
	env := make([]corev1.EnvVar, 0, len(c.Env)+len(ours))
	for _, name := range []string{"PORT", activator.EnvSession, activator.EnvCPURequest, activator.EnvCPULimit, activator.EnvMemoryRequest, activator.EnvMemoryLimit} {
		env = append(env, corev1.EnvVar{Name: name, Value: ours[name]})
	}
	for _, e := range c.Env {
		if _, taken := ours[e.Name]; !taken {
			env = append(env, e)
		}
	}
	c.Env = env
	return pod
}

func merge[M ~map[K]V, K comparable, V any](base, over M) M {
	out := make(M, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// Recorded is a session as the pod that serves it records it.
type Recorded struct {
	Session     string
	TokenHash   string
	Size        activator.Size
	IdleTimeout time.Duration
}

// ReadRecord reads the session a managed pod serves from its labels and annotations.
func ReadRecord(p *corev1.Pod) (Recorded, error) {
	r := Recorded{Session: p.Labels[LabelSession], TokenHash: p.Annotations[AnnoTokenHash]}
	if r.Session == "" || r.TokenHash == "" {
		return r, errors.New("missing session label or token annotation")
	}
	var errs []string
	q := func(key string) resource.Quantity {
		v, err := resource.ParseQuantity(p.Annotations[key])
		if err != nil {
			errs = append(errs, key)
		}
		return v
	}
	r.Size = activator.Size{CPURequest: q(AnnoCPURequest), CPULimit: q(AnnoCPULimit), MemoryRequest: q(AnnoMemRequest), MemoryLimit: q(AnnoMemLimit)}
	d, err := time.ParseDuration(p.Annotations[AnnoIdleTimeout])
	if err != nil {
		errs = append(errs, AnnoIdleTimeout)
	}
	r.IdleTimeout = d
	if len(errs) > 0 {
		return r, fmt.Errorf("bad annotations: %s", strings.Join(errs, ", "))
	}
	return r, nil
}
