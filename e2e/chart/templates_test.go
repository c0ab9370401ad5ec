package chart_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/e2e/chart"
)

// TestLint runs `helm lint --strict` on every scenario.
func TestLint(t *testing.T) {
	h := newHelm(t)
	for _, name := range scenarios(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
			defer cancel()
			if out, err := h.Lint(ctx, scenarioRelease(t, name)); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestTemplates renders every scenario and checks what each object must hold,
// whatever the values: least-privilege RBAC in the sessions namespace, a
// NetworkPolicy that selects the very pods the gateway builds, the gateway's
// hardening and environment, and a grace period that covers its drain.
func TestTemplates(t *testing.T) {
	h := newHelm(t)
	for _, name := range scenarios(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := render(t, h, name)
			s := check(t, m, sessionsNamespaceOf(t, name))
			if extra, ok := scenarioChecks[name]; ok {
				extra(t, m, s)
			}
		})
	}
}

// rendered is what the common checks decoded, for the scenario checks.
type rendered struct {
	deploy  *appsv1.Deployment
	gateway *corev1.Container
	env     map[string]string
	session *corev1.Pod // as the gateway would create it
	service corev1.Service
}

// The session size the checks build pods with.
var testSize = activator.Size{
	CPURequest: resource.MustParse("250m"), CPULimit: resource.MustParse("1"),
	MemoryRequest: resource.MustParse("128Mi"), MemoryLimit: resource.MustParse("256Mi"),
}

func check(t *testing.T, m *chart.Manifest, sessions string) rendered {
	t.Helper()
	var r rendered
	var err error
	r.deploy, r.gateway, err = m.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	if r.env, err = chart.Env(r.gateway); err != nil {
		t.Fatal(err)
	}
	pod := r.deploy.Spec.Template

	t.Run("Namespaces", func(t *testing.T) {
		for _, o := range m.Objects {
			want := releaseNS
			switch o.GetKind() {
			case "Role", "RoleBinding", "NetworkPolicy":
				want = sessions
			}
			if o.GetNamespace() != want {
				t.Errorf("%s: namespace %q, want %q", o, o.GetNamespace(), want)
			}
			l := o.GetLabels()
			for _, k := range []string{"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version"} {
				if l[k] == "" {
					t.Errorf("%s: no label %s", o, k)
				}
			}
			if l["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("%s: app.kubernetes.io/managed-by = %q, want Helm", o, l["app.kubernetes.io/managed-by"])
			}
		}
	})

	t.Run("Deployment", func(t *testing.T) {
		d := r.deploy
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("replicas = %v, want 1", d.Spec.Replicas)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("strategy = %q, want Recreate: a surge would run two gateways, and pods the old one starts would never be adopted", d.Spec.Strategy.Type)
		}
		sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
		if !sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("selector %v does not match the pod's labels %v", sel, pod.Labels)
		}
		if pod.Annotations["checksum/session-pod"] == "" {
			t.Error("no checksum/session-pod annotation: a new pod template would not restart the gateway, which reads it once")
		}
		if pod.Spec.AutomountServiceAccountToken == nil || !*pod.Spec.AutomountServiceAccountToken {
			t.Error("the gateway needs its ServiceAccount token mounted")
		}
		var sa corev1.ServiceAccount
		if m.Has("ServiceAccount") {
			if err := m.One("ServiceAccount", &sa); err != nil {
				t.Fatal(err)
			}
			if pod.Spec.ServiceAccountName != sa.Name {
				t.Errorf("serviceAccountName = %q, want the chart's ServiceAccount %q", pod.Spec.ServiceAccountName, sa.Name)
			}
		}
		checkHardened(t, "gateway", pod.Spec.SecurityContext, r.gateway.SecurityContext)
		if len(r.gateway.Resources.Requests) == 0 {
			t.Error("the gateway container has no resource requests")
		}
		ports := containerPorts(r.gateway)
		for _, p := range []*corev1.Probe{r.gateway.StartupProbe, r.gateway.LivenessProbe, r.gateway.ReadinessProbe} {
			if p == nil {
				t.Error("a probe is missing")
				continue
			}
			if p.TCPSocket != nil {
				if _, ok := ports[p.TCPSocket.Port.String()]; !ok {
					t.Errorf("a probe asks port %s, which the container does not have (%v)", p.TCPSocket.Port.String(), ports)
				}
			}
		}
		if len(pod.Spec.TopologySpreadConstraints) == 0 {
			t.Error("no topologySpreadConstraints")
		}
		for _, c := range pod.Spec.TopologySpreadConstraints {
			s, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
			if err != nil || !s.Matches(labels.Set(pod.Labels)) {
				t.Errorf("topology spread on %s selects %v, not the gateway's pods (%v)", c.TopologyKey, c.LabelSelector, err)
			}
		}
	})

	t.Run("Env", func(t *testing.T) {
		env := r.env
		if env["TETHER_RUNTIME"] != "kubernetes" {
			t.Errorf("TETHER_RUNTIME = %q", env["TETHER_RUNTIME"])
		}
		if env["TETHER_NAMESPACE"] != sessions {
			t.Errorf("TETHER_NAMESPACE = %q, want the sessions namespace %q", env["TETHER_NAMESPACE"], sessions)
		}
		grpc, ok := containerPorts(r.gateway)["grpc"]
		if !ok {
			t.Fatal("the gateway has no container port named grpc")
		}
		if want := ":" + strconv.Itoa(int(grpc)); env["TETHER_LISTEN"] != want {
			t.Errorf("TETHER_LISTEN = %q, want %q (the port named grpc)", env["TETHER_LISTEN"], want)
		}
		if metrics, ok := containerPorts(r.gateway)["metrics"]; ok {
			if want := ":" + strconv.Itoa(int(metrics)); env["TETHER_METRICS_LISTEN"] != want {
				t.Errorf("TETHER_METRICS_LISTEN = %q, want %q (the port named metrics)", env["TETHER_METRICS_LISTEN"], want)
			}
		} else if env["TETHER_METRICS_LISTEN"] != "off" {
			t.Errorf("TETHER_METRICS_LISTEN = %q with no metrics port", env["TETHER_METRICS_LISTEN"])
		}
		for _, v := range chart.FileVars {
			if path := env[v]; path != "" {
				if _, _, err := chart.MountedFile(&pod.Spec, r.gateway, path); err != nil {
					t.Errorf("%s=%s: %v", v, path, err)
				}
			}
		}
	})

	t.Run("GracePeriodCoversTheDrain", func(t *testing.T) {
		var drain time.Duration
		for _, v := range []string{"TETHER_DRAIN_DELAY", "TETHER_SHUTDOWN_GRACE", "TETHER_STOP_GRACE"} {
			d, err := time.ParseDuration(r.env[v])
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			drain += d
		}
		drain += 5 * time.Second // the gateway's own margin on the last deletes (cmd/tether)
		tgps := pod.Spec.TerminationGracePeriodSeconds
		if tgps == nil || time.Duration(*tgps)*time.Second < drain {
			t.Errorf("terminationGracePeriodSeconds = %v, want at least the drain, %v", tgps, drain)
		}
	})

	t.Run("SessionPod", func(t *testing.T) {
		tmpl, p, err := m.SessionPod(testSize)
		if err != nil {
			t.Fatal(err)
		}
		r.session = p
		c := tmpl.Spec.Spec.Containers[tmpl.Container]
		if len(c.Resources.Requests)+len(c.Resources.Limits) != 0 {
			t.Errorf("the template sets resources %v; the gateway sets them from the hints", c.Resources)
		}
		if port, ok := containerPorts(&c)["grpc"]; !ok || port != tmpl.Port {
			t.Errorf("serving container %s: port named grpc %d, gateway dials %d", c.Name, port, tmpl.Port)
		}
		if p.Namespace != sessions {
			t.Errorf("session pods go to %q, want %q", p.Namespace, sessions)
		}
		if rp := c.ReadinessProbe; rp == nil {
			t.Error("the session container has no readinessProbe: the gateway would forward before the server listens")
		} else if rp.GRPC != nil && rp.GRPC.Port != tmpl.Port {
			t.Errorf("readinessProbe asks gRPC port %d, the server serves %d", rp.GRPC.Port, tmpl.Port)
		}
		if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
			t.Error("session pods get an API token; they run clients' workloads")
		}
	})
	if r.session == nil {
		t.FailNow()
	}

	t.Run("Service", func(t *testing.T) {
		if err := m.Named("Service", fullname, &r.service); err != nil {
			t.Fatal(err)
		}
		svc := r.service
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			t.Errorf("Service selector %v does not match the gateway's pods", svc.Spec.Selector)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "grpc" {
			t.Fatalf("Service ports %+v, want one named grpc", svc.Spec.Ports)
		}
		sp := svc.Spec.Ports[0]
		if sp.TargetPort != intstr.FromString("grpc") {
			t.Errorf("targetPort = %v, want the container port named grpc", sp.TargetPort)
		}
		tls := r.env["TETHER_TLS_CERT"] != ""
		got := ""
		if sp.AppProtocol != nil {
			got = *sp.AppProtocol
		}
		if want := map[bool]string{false: "kubernetes.io/h2c", true: ""}[tls]; got != want {
			t.Errorf("appProtocol = %q, want %q (TLS: %v)", got, want, tls)
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		var role rbacv1.Role
		if err := m.One("Role", &role); err != nil {
			t.Fatal(err)
		}
		want := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "delete", "deletecollection"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		}
		if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
			t.Errorf("Role rules:\n got %+v\nwant %+v", role.Rules, want)
		}
		if m.Has("ClusterRole") || m.Has("ClusterRoleBinding") {
			t.Error("the chart grants cluster-wide permissions")
		}
		var rb rbacv1.RoleBinding
		if err := m.One("RoleBinding", &rb); err != nil {
			t.Fatal(err)
		}
		if rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}) {
			t.Errorf("roleRef = %+v, want the Role %s", rb.RoleRef, role.Name)
		}
		wantSubject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: pod.Spec.ServiceAccountName, Namespace: releaseNS}}
		if !slices.Equal(rb.Subjects, wantSubject) {
			t.Errorf("subjects = %+v, want %+v", rb.Subjects, wantSubject)
		}
	})

	t.Run("NetworkPolicy", func(t *testing.T) {
		var np networkingv1.NetworkPolicy
		if err := m.One("NetworkPolicy", &np); err != nil {
			t.Fatal(err)
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || sel.Empty() {
			t.Fatalf("podSelector %v: %v", np.Spec.PodSelector, err)
		}
		if !sel.Matches(labels.Set(r.session.Labels)) {
			t.Errorf("podSelector %v does not select the session pods the gateway builds (labels %v)", sel, r.session.Labels)
		}
		if sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("podSelector %v selects the gateway itself", sel)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("policyTypes = %v, want [Ingress]", np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) == 0 {
			t.Fatal("no ingress rule: the gateway could not reach its pods")
		}
		rule := np.Spec.Ingress[0]
		if len(rule.From) != 1 {
			t.Fatalf("first rule allows %d peers, want exactly the gateway", len(rule.From))
		}
		peer := rule.From[0]
		if peer.IPBlock != nil || peer.PodSelector == nil || peer.NamespaceSelector == nil {
			t.Fatalf("peer %+v, want the gateway's pods in the release namespace", peer)
		}
		ps, _ := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if !ps.Matches(labels.Set(pod.Labels)) || ps.Matches(labels.Set(r.session.Labels)) {
			t.Errorf("peer podSelector %v, want the gateway's pods and not the sessions'", ps)
		}
		ns, _ := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if !ns.Matches(labels.Set{"kubernetes.io/metadata.name": releaseNS}) || ns.Matches(labels.Set{"kubernetes.io/metadata.name": "other"}) {
			t.Errorf("peer namespaceSelector %v, want exactly the release namespace", ns)
		}
		if len(rule.Ports) != 1 || rule.Ports[0].Port == nil {
			t.Fatalf("ports %+v, want the gRPC port only", rule.Ports)
		}
		sessionPorts := containerPorts(&r.session.Spec.Containers[0])
		if p := rule.Ports[0].Port; p.String() != "grpc" {
			t.Errorf("port %v, want the named port grpc", p)
		} else if _, ok := sessionPorts["grpc"]; !ok {
			t.Errorf("session container has no port named grpc (%v)", sessionPorts)
		}
	})
	return r
}

// checkHardened checks the restricted Pod Security Standard's demands and more.
func checkHardened(t *testing.T, what string, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot is not true", what)
	}
	if pod == nil || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", what)
	}
	if c == nil {
		t.Fatalf("%s: no container securityContext", what)
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", what)
	}
	if c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", what)
	}
	if c.RunAsNonRoot == nil || !*c.RunAsNonRoot {
		t.Errorf("%s: container runAsNonRoot is not true", what)
	}
	if c.Capabilities == nil || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities %+v, want drop ALL and add nothing", what, c.Capabilities)
	}
	if c.Privileged != nil && *c.Privileged {
		t.Errorf("%s: privileged", what)
	}
}

func containerPorts(c *corev1.Container) map[string]int32 {
	out := map[string]int32{}
	for _, p := range c.Ports {
		out[p.Name] = p.ContainerPort
	}
	return out
}

func appVersion(t *testing.T) string {
	t.Helper()
	v, _ := readYAML(t, filepath.Join(chartDir(t), "Chart.yaml"))["appVersion"].(string)
	if v == "" {
		t.Fatal("Chart.yaml has no appVersion")
	}
	return v
}

// scenarioChecks are what each scenario is for.
var scenarioChecks = map[string]func(t *testing.T, m *chart.Manifest, r rendered){
	"default": func(t *testing.T, m *chart.Manifest, r rendered) {
		want := []string{"ConfigMap/demo-tether-session-pod", "Deployment/demo-tether", "NetworkPolicy/demo-tether-sessions",
			"Role/demo-tether", "RoleBinding/demo-tether", "Service/demo-tether", "ServiceAccount/demo-tether"}
		if got := m.Kinds(); !slices.Equal(got, want) {
			t.Errorf("objects:\n got %v\nwant %v", got, want)
		}
		v := appVersion(t)
		if r.gateway.Image != "ghcr.io/tetherhq/tether:"+v {
			t.Errorf("gateway image %q", r.gateway.Image)
		}
		c := r.session.Spec.Containers[0]
		if c.Image != "ghcr.io/tetherhq/tether-example:"+v {
			t.Errorf("session image %q, want the example server at appVersion", c.Image)
		}
		if !slices.Equal(c.Args, []string{"-listen=$(POD_IP):$(PORT)"}) {
			t.Errorf("session args %q", c.Args)
		}
		podIP := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
		})
		if podIP < 0 {
			t.Errorf("session env %v has no POD_IP from status.podIP", c.Env)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.GRPC == nil || c.ReadinessProbe.GRPC.Port != 50051 {
			t.Errorf("session readinessProbe %+v, want gRPC on 50051", c.ReadinessProbe)
		}
		checkHardened(t, "session", r.session.Spec.SecurityContext, c.SecurityContext)
		if p := r.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds; *p != 50 {
			t.Errorf("terminationGracePeriodSeconds = %d, want 50 (5s + 30s + 10s + 5s)", *p)
		}
		if r.env["TETHER_TLS_CERT"] != "" || r.env["TETHER_TLS_KEY"] != "" {
			t.Error("TLS is on by default")
		}
		if r.service.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service type %s", r.service.Spec.Type)
		}
	},
	"tls": func(t *testing.T, m *chart.Manifest, r rendered) {
		pod := &r.deploy.Spec.Template.Spec
		for v, key := range map[string]string{"TETHER_TLS_CERT": "tls.crt", "TETHER_TLS_KEY": "tls.key"} {
			vol, k, err := chart.MountedFile(pod, r.gateway, r.env[v])
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			if vol.Secret == nil || vol.Secret.SecretName != "tether-tls" || k != key {
				t.Errorf("%s = %s: volume %+v key %s, want key %s of Secret tether-tls", v, r.env[v], vol.VolumeSource, k, key)
			}
		}
		for _, vm := range r.gateway.VolumeMounts {
			if !vm.ReadOnly {
				t.Errorf("volume %s is mounted writable", vm.Name)
			}
		}
		if r.service.Spec.Type != corev1.ServiceTypeLoadBalancer || !slices.Equal(r.service.Spec.LoadBalancerSourceRanges, []string{"10.20.0.0/16"}) {
			t.Errorf("Service %s, source ranges %v", r.service.Spec.Type, r.service.Spec.LoadBalancerSourceRanges)
		}
	},
	"custom-pod": func(t *testing.T, m *chart.Manifest, r rendered) {
		p := r.session
		var nfs *corev1.NFSVolumeSource
		for _, v := range p.Spec.Volumes {
			if v.Name == "tools" {
				nfs = v.NFS
			}
		}
		if nfs == nil || nfs.Server != "nfs.example.com" || nfs.Path != "/export/tools" || !nfs.ReadOnly {
			t.Errorf("tools volume %+v, want the read-only NFS share", nfs)
		}
		c := p.Spec.Containers[0]
		mounted := slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
			return vm.Name == "tools" && vm.MountPath == "/tools" && vm.ReadOnly
		})
		if !mounted {
			t.Errorf("mounts %+v: no read-only /tools", c.VolumeMounts)
		}
		if !slices.Equal(p.Spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "sim-registry"}}) {
			t.Errorf("imagePullSecrets %v", p.Spec.ImagePullSecrets)
		}
		if p.Spec.NodeSelector["node.example.com/pool"] != "simulation" || len(p.Spec.Tolerations) != 1 || p.Spec.Affinity == nil {
			t.Errorf("placement: nodeSelector %v, tolerations %v, affinity %v", p.Spec.NodeSelector, p.Spec.Tolerations, p.Spec.Affinity)
		}
		if c.Image != "registry.example.com/sim/solver-server:2025.2" || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("image %s (%s)", c.Image, c.ImagePullPolicy)
		}
		if r.env["TETHER_POD_PORT"] != "7000" || containerPorts(&c)["grpc"] != 7000 {
			t.Errorf("TETHER_POD_PORT %s, port grpc %d, want 7000", r.env["TETHER_POD_PORT"], containerPorts(&c)["grpc"])
		}
		if got := c.Resources.Limits.Cpu().String(); got != "1" {
			t.Errorf("the built pod's CPU limit is %s, want the hint's 1", got)
		}
		if p.Labels["team"] != "simulation" || p.Annotations["example.com/cost-center"] != "sim-42" {
			t.Errorf("labels %v, annotations %v", p.Labels, p.Annotations)
		}
		if r.env["TETHER_MAX_CPU"] != "32" || r.env["TETHER_MAX_MEMORY"] != "128Gi" {
			t.Errorf("hint bounds %s, %s", r.env["TETHER_MAX_CPU"], r.env["TETHER_MAX_MEMORY"])
		}
	},
	"sessions-namespace": func(t *testing.T, m *chart.Manifest, r rendered) {
		if r.deploy.Spec.Template.Spec.ServiceAccountName != "tether-gateway" {
			t.Errorf("serviceAccountName %s", r.deploy.Spec.Template.Spec.ServiceAccountName)
		}
		for _, kind := range []string{"Role", "RoleBinding", "NetworkPolicy"} {
			if all := m.All(kind); len(all) != 1 || all[0].GetNamespace() != sessionsNS {
				t.Errorf("%s: %v, want one in %s", kind, all, sessionsNS)
			}
		}
	},
	"everything": func(t *testing.T, m *chart.Manifest, r rendered) {
		pod := r.deploy.Spec.Template
		var pdb policyv1.PodDisruptionBudget
		if err := m.One("PodDisruptionBudget", &pdb); err != nil {
			t.Fatal(err)
		}
		if s, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); !s.Matches(labels.Set(pod.Labels)) {
			t.Errorf("PodDisruptionBudget selects %v, not the gateway", s)
		}
		var metricsSvc corev1.Service
		if err := m.Named("Service", fullname+"-metrics", &metricsSvc); err != nil {
			t.Fatal(err)
		}
		if metricsSvc.Spec.Ports[0].TargetPort != intstr.FromString("metrics") || containerPorts(r.gateway)["metrics"] == 0 {
			t.Errorf("metrics Service targets %v; container ports %v", metricsSvc.Spec.Ports[0].TargetPort, containerPorts(r.gateway))
		}
		sms := m.All("ServiceMonitor")
		if len(sms) != 1 {
			t.Fatalf("%d ServiceMonitors", len(sms))
		}
		sm := sms[0].Unstructured
		matchLabels, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		sel := labels.SelectorFromSet(matchLabels)
		if !sel.Matches(labels.Set(metricsSvc.Labels)) || sel.Matches(labels.Set(r.service.Labels)) {
			t.Errorf("ServiceMonitor selects %v: want the metrics Service (%v), not the gRPC one", sel, metricsSvc.Labels)
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" || endpoints[0].(map[string]any)["path"] != "/metrics" {
			t.Errorf("endpoints %v", endpoints)
		}
		if sm.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
		}
		if *pod.Spec.TerminationGracePeriodSeconds != 120 {
			t.Errorf("terminationGracePeriodSeconds %d, want the 120 set", *pod.Spec.TerminationGracePeriodSeconds)
		}
		if r.env["TETHER_LISTEN"] != ":9443" || r.service.Spec.Ports[0].Port != 443 || r.service.Spec.Ports[0].NodePort != 30080 {
			t.Errorf("TETHER_LISTEN %s, Service %+v", r.env["TETHER_LISTEN"], r.service.Spec.Ports[0])
		}
		if r.env["TETHER_IDLE_IGNORE_METHODS"] != "," {
			t.Errorf("TETHER_IDLE_IGNORE_METHODS = %q: an empty list must render as the gateway's \",\"", r.env["TETHER_IDLE_IGNORE_METHODS"])
		}
		if pod.Labels["example.com/team"] != "platform" {
			t.Errorf("commonLabels did not reach the pod: %v", pod.Labels)
		}
	},
}

// TestSchemaRejects checks that values.schema.json stops wrong types and unknown
// keys before anything renders.
func TestSchemaRejects(t *testing.T) {
	h := newHelm(t)
	for _, tc := range []struct{ set, want string }{
		{`replicaCount="one"`, "/replicaCount"},
		{`unknownKey=1`, "additional properties 'unknownKey'"},
		{`config.idleTimout="5m"`, "additional properties 'idleTimout'"},
		{`config.idleTimeout="5 minutes"`, "/config/idleTimeout"},
		{`config.idleTimeout=300`, "/config/idleTimeout"},
		{`config.maxMemory="8GB"`, "/config/maxMemory"},
		{`config.maxInstances=-1`, "/config/maxInstances"},
		{`config.logFormat="yaml"`, "/config/logFormat"},
		{`service.type="ExternalName"`, "/service/type"},
		{`service.appProtocl="h2c"`, "additional properties 'appProtocl'"},
		{`sessionPod.grpcPort="50051"`, "/sessionPod/grpcPort"},
		{`sessionPod.resources={"limits":{"cpu":"1"}}`, "additional properties 'resources'"},
		{`sessionPod.image.digest="latest"`, "/sessionPod/image/digest"},
		{`tls.enabled="yes"`, "/tls/enabled"},
		{`metrics.serviceMonitor.intervall="10s"`, "additional properties 'intervall'"},
		{`extraEnv=[{"name":"TETHER_IDLE_TIMEOUT","value":"1m"}]`, "/extraEnv/0/name"},
		{`networkPolicy.enabled="false"`, "/networkPolicy/enabled"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			err := renderErr(t, h, tc.set)
			if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--set-json %s: %v; want a schema error naming %s", tc.set, err, tc.want)
			}
		})
	}
}

// TestTemplateRefuses checks the values the schema cannot judge alone.
func TestTemplateRefuses(t *testing.T) {
	h := newHelm(t)
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{`replicaCount=2`}, "only 1 gateway is supported"},
		{[]string{`metrics.enabled=false`}, "probes the metrics port, but metrics.enabled is false"},
		{[]string{`tls.enabled=true`}, "tls.secretName"},
		{[]string{`sessionPod.grpcPort=7000`}, "sessionPod.readinessProbe.grpc.port (50051) must be sessionPod.grpcPort (7000)"},
		{[]string{`terminationGracePeriodSeconds=30`}, "terminationGracePeriodSeconds: 30 is shorter than the gateway's drain, 50 s"},
		{[]string{`config.shutdownGrace="2m"`, `terminationGracePeriodSeconds=100`}, "shorter than the gateway's drain, 140 s"},
		{[]string{`metrics.enabled=false`, `metrics.serviceMonitor.enabled=true`}, "metrics.serviceMonitor.enabled needs metrics.enabled"},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			t.Parallel()
			err := renderErr(t, h, tc.set...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v; want an error containing %q", tc.set, err, tc.want)
			}
		})
	}
}

// TestGracePeriodFollowsTheDrain checks the computed grace period on durations
// with several units and fractions, rounded up.
func TestGracePeriodFollowsTheDrain(t *testing.T) {
	h := newHelm(t)
	m := render(t, h, "default", `config.drainDelay="1m30s"`, `config.shutdownGrace="2m"`, `config.stopGrace="500ms"`)
	d, _, err := m.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *d.Spec.Template.Spec.TerminationGracePeriodSeconds, int64(90+120+1+5); got != want {
		t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, want)
	}
}

// TestNotes checks that NOTES.txt tells how to reach and call the gateway.
func TestNotes(t *testing.T) {
	h := newHelm(t)
	for name, want := range map[string][]string{
		"default": {"kubectl -n tether port-forward service/demo-tether 8080:8080",
			"grpcurl -plaintext -H 'x-tether-cpu: 1' -H 'x-tether-memory: 256Mi' $ADDR tether.example.v1.Session/Info",
			"x-tether-session"},
		"tls":                {"grpcurl -insecure", "loadBalancer.ingress"},
		"sessions-namespace": {"kubectl -n tether-sessions get pods -l app.kubernetes.io/managed-by=tether,app.kubernetes.io/instance=demo"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
			defer cancel()
			notes, err := h.Notes(ctx, scenarioRelease(t, name))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES lack %q:\n%s", w, notes)
				}
			}
		})
	}
}

// TestMakefilePinsTheSameHelm keeps the Makefile's helm and this package's equal,
// so that `make chart-test` and a plain `go test` check with the same helm.
func TestMakefilePinsTheSameHelm(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HELM_VERSION\s*:?=\s*(\S+)`).FindSubmatch(b)
	if m == nil || string(m[1]) != chart.HelmVersion {
		t.Errorf("Makefile HELM_VERSION = %q, want %s", m, chart.HelmVersion)
	}
}
