package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/kube"
)

// Object is one rendered manifest.
type Object struct {
	// Source is the template it came from, such as "tether/templates/role.yaml".
	Source string
	// JSON is the object as JSON, for strict decoding into a typed object.
	JSON []byte
	*unstructured.Unstructured
}

// GVK is the object's group, version and kind.
func (o Object) GVK() schema.GroupVersionKind { return o.GroupVersionKind() }

func (o Object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.GetKind(), o.GetNamespace(), o.GetName(), o.Source)
}

// Decode decodes the object strictly into a typed object: a field the type does
// not have is an error, as it would be for the API server's strict validation.
func (o Object) Decode(into any) error {
	if err := yaml.UnmarshalStrict(o.JSON, into); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	return nil
}

// Manifest is the output of `helm template`: the objects in order.
type Manifest struct {
	Objects []Object
}

// ParseManifest splits helm's multi-document YAML into objects.
func ParseManifest(out []byte) (*Manifest, error) {
	m := &Manifest{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		var source string
		for line := range strings.Lines(string(doc)) {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok {
				source = strings.TrimSpace(s)
				break
			}
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // a template that rendered nothing
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		m.Objects = append(m.Objects, Object{Source: source, JSON: js, Unstructured: u})
	}
}

// Kinds lists "Kind/name" of every object, sorted, for messages and comparisons.
func (m *Manifest) Kinds() []string {
	var out []string
	for _, o := range m.Objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	slices.Sort(out)
	return out
}

// All returns the objects of a kind.
func (m *Manifest) All(kind string) []Object {
	var out []Object
	for _, o := range m.Objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// One decodes the only object of a kind into into, and fails if there is not
// exactly one.
func (m *Manifest) One(kind string, into any) error {
	all := m.All(kind)
	if len(all) != 1 {
		return fmt.Errorf("%d objects of kind %s, want 1: %v", len(all), kind, m.Kinds())
	}
	return all[0].Decode(into)
}

// Named decodes the object of a kind and name into into.
func (m *Manifest) Named(kind, name string, into any) error {
	for _, o := range m.All(kind) {
		if o.GetName() == name {
			return o.Decode(into)
		}
	}
	return fmt.Errorf("no %s named %q: %v", kind, name, m.Kinds())
}

// Has reports whether an object of the kind was rendered.
func (m *Manifest) Has(kind string) bool { return len(m.All(kind)) > 0 }

// Gateway returns the gateway's Deployment and its container.
func (m *Manifest) Gateway() (*appsv1.Deployment, *corev1.Container, error) {
	var d appsv1.Deployment
	if err := m.One("Deployment", &d); err != nil {
		return nil, nil, err
	}
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "gateway" {
			return &d, &d.Spec.Template.Spec.Containers[i], nil
		}
	}
	return nil, nil, errors.New("the Deployment has no container named gateway")
}

// Env returns the literal values of a container's environment, by name. Variables
// that Kubernetes fills in (valueFrom) are left out, except that a TETHER_*
// variable must be literal: the chart renders the gateway's settings as values.
// A repeated name is an error too: the last would win, silently.
func Env(c *corev1.Container) (map[string]string, error) {
	env := map[string]string{}
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			return nil, fmt.Errorf("env %s is set twice", e.Name)
		}
		seen[e.Name] = true
		if e.ValueFrom != nil {
			if strings.HasPrefix(e.Name, "TETHER_") {
				return nil, fmt.Errorf("env %s comes from %v; the gateway's settings are literal values", e.Name, e.ValueFrom)
			}
			continue
		}
		env[e.Name] = e.Value
	}
	return env, nil
}

// FileVars are the gateway's settings that name a file; in a pod, each is a file
// of a mounted ConfigMap or Secret.
var FileVars = []string{"TETHER_POD_TEMPLATE", "TETHER_TLS_CERT", "TETHER_TLS_KEY"}

// MountedFile finds which volume of the pod holds path in container c, and the
// file's name inside it: the ConfigMap or Secret key.
func MountedFile(pod *corev1.PodSpec, c *corev1.Container, path string) (*corev1.Volume, string, error) {
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for i, v := range pod.Volumes {
			if v.Name == vm.Name {
				return &pod.Volumes[i], rel, nil
			}
		}
		return nil, "", fmt.Errorf("volume mount %s has no volume", vm.Name)
	}
	return nil, "", fmt.Errorf("no volume mount holds %s", path)
}

// PodTemplateFile returns the session pod template as the gateway reads it: the
// file TETHER_POD_TEMPLATE names, found in the ConfigMap mounted there.
func (m *Manifest) PodTemplateFile() ([]byte, error) {
	d, c, err := m.Gateway()
	if err != nil {
		return nil, err
	}
	env, err := Env(c)
	if err != nil {
		return nil, err
	}
	path := env["TETHER_POD_TEMPLATE"]
	v, key, err := MountedFile(&d.Spec.Template.Spec, c, path)
	if err != nil {
		return nil, fmt.Errorf("TETHER_POD_TEMPLATE %s: %w", path, err)
	}
	if v.ConfigMap == nil {
		return nil, fmt.Errorf("TETHER_POD_TEMPLATE %s: volume %s is not a ConfigMap", path, v.Name)
	}
	var cm corev1.ConfigMap
	if err := m.Named("ConfigMap", v.ConfigMap.Name, &cm); err != nil {
		return nil, fmt.Errorf("TETHER_POD_TEMPLATE %s: %w", path, err)
	}
	data, ok := cm.Data[key]
	if !ok {
		return nil, fmt.Errorf("TETHER_POD_TEMPLATE %s: ConfigMap %s has no key %s", path, cm.Name, key)
	}
	return []byte(data), nil
}

// SessionPod parses the session pod template as the gateway does (with its
// TETHER_POD_PORT) and builds the pod the gateway would create for a session of
// the given size, in the namespace TETHER_NAMESPACE names.
func (m *Manifest) SessionPod(size activator.Size) (*kube.Template, *corev1.Pod, error) {
	b, err := m.PodTemplateFile()
	if err != nil {
		return nil, nil, err
	}
	_, c, err := m.Gateway()
	if err != nil {
		return nil, nil, err
	}
	env, err := Env(c)
	if err != nil {
		return nil, nil, err
	}
	port, err := strconv.ParseInt(env["TETHER_POD_PORT"], 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("TETHER_POD_PORT: %w", err)
	}
	tmpl, err := kube.ParseTemplate(b, int32(port))
	if err != nil {
		return nil, nil, fmt.Errorf("TETHER_POD_TEMPLATE: %w\n%s", err, b)
	}
	pod := kube.Build(tmpl, env["TETHER_NAMESPACE"], activator.Spec{
		Session:     "chart-test",
		TokenHash:   strings.Repeat("ab", 32),
		Size:        size,
		IdleTimeout: 10 * time.Minute,
	})
	return tmpl, pod, nil
}
