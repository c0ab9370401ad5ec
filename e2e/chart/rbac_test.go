package chart_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tetherhq/tether/activator"
	examplepb "github.com/tetherhq/tether/cmd/tether-example/examplepb"
	"github.com/tetherhq/tether/e2e/chart"
	"github.com/tetherhq/tether/e2e/cluster"
	"github.com/tetherhq/tether/e2e/nodeagent"
)

// The RBAC test's release: its own namespaces, so that no other gateway of this
// package watches (and adopts) its session pods.
const (
	rbacRelease  = "tether"
	rbacNS       = "rbac"
	rbacSessions = "rbac-sessions"
	scenarioWait = 90 * time.Second
	// callTimeout bounds a call to a ready instance.
	callTimeout = 20 * time.Second
)

// rbacValues shorten the idle bounds and the drain so that the test sees a reap
// and a stop in seconds. Everything else is the sessions-namespace scenario.
const rbacValues = `
config:
  minIdleTimeout: 1s
  reapInterval: 200ms
  drainDelay: 1s
  logLevel: debug
`

// testRBAC proves the chart's RBAC both ways. The chart's ServiceAccount, Role
// and RoleBinding are applied for real, in a release whose session pods live in
// another namespace, and the real gateway runs with that ServiceAccount's token
// and the environment the chart renders, with the node agent running the pods:
//
//   - enough: two clients with different hints get two pods of exactly those
//     sizes, each client's calls stay on its own pod (the process that answers is
//     the pod's), an idle one is reaped and the other is not;
//   - no more: listing secrets, creating a Deployment, patching a pod, exec, and
//     anything in the release namespace or cluster-wide is forbidden to it.
func testRBAC(t *testing.T, h *chart.Helm, c *cluster.Cluster, bins map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, ns := range []string{rbacNS, rbacSessions} {
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	extra := filepath.Join(t.TempDir(), "rbac-values.yaml")
	if err := os.WriteFile(extra, []byte(rbacValues), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := h.Template(ctx, chart.Release{
		Name:      rbacRelease,
		Namespace: rbacNS,
		Values:    []string{filepath.Join(chartDir(t), "ci", "sessions-namespace-values.yaml"), extra},
		SetJSON:   []string{`sessionsNamespace="` + rbacSessions + `"`},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplier(t, c.RestConfig())
	for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding"} {
		for _, o := range m.All(kind) {
			if _, err := a.apply(ctx, o, false); err != nil {
				t.Fatalf("apply %s: %v", o, err)
			}
		}
	}
	d, _, err := m.Gateway()
	if err != nil {
		t.Fatal(err)
	}
	sa := d.Spec.Template.Spec.ServiceAccountName
	kubeconfig, err := c.ServiceAccountKubeconfig(ctx, rbacNS, sa)
	if err != nil {
		t.Fatal(err)
	}
	saConfig, err := c.ServiceAccountConfig(ctx, rbacNS, sa)
	if err != nil {
		t.Fatal(err)
	}
	asGateway := kubernetes.NewForConfigOrDie(saConfig)

	image := "ghcr.io/tetherhq/tether-example:" + appVersion(t)
	agent := nodeagent.ForTest(t, nodeagent.Options{
		Client:         c.Client(),
		Nodes:          []nodeagent.Node{{Name: "node-1", CPU: "4", Memory: "8Gi"}},
		Images:         map[string]string{image: bins["tether-example"]},
		ProbePeriod:    200 * time.Millisecond,
		BackOff:        time.Second,
		MaxGracePeriod: 5 * time.Second,
	})
	g := startGateway(t, bins["tether"], gatewayEnv(t, m, kubeconfig))

	t.Run("TwoClientsTwoPodsPinnedOneReaped", func(t *testing.T) {
		type client struct {
			name                string
			cpu, memory, idle   string
			conn                *grpc.ClientConn
			session             examplepb.SessionClient
			pod                 *corev1.Pod
			wantCPU, wantMemory resource.Quantity
		}
		clients := []*client{
			{name: "a", cpu: "100m", memory: "64Mi", idle: "2s"},
			{name: "b", cpu: "250m", memory: "128Mi"},
		}
		for _, cl := range clients {
			conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			cl.conn, cl.session = conn, examplepb.NewSessionClient(conn)
			cl.wantCPU, cl.wantMemory = resource.MustParse(cl.cpu), resource.MustParse(cl.memory)
		}
		for _, cl := range clients {
			md := metadata.Pairs(activator.HeaderCPU, cl.cpu, activator.HeaderMemory, cl.memory)
			if cl.idle != "" {
				md.Set(activator.HeaderIdleTimeout, cl.idle)
			}
			callCtx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), scenarioWait)
			var header metadata.MD
			counter, err := cl.session.Increment(callCtx, &examplepb.IncrementRequest{Delta: 1}, grpc.Header(&header))
			cancel()
			if err != nil {
				if status.Code(err) == codes.DeadlineExceeded {
					g.dumpGoroutines(t)
				}
				t.Fatalf("client %s: first call: %v", cl.name, err)
			}
			if counter.GetValue() != 1 {
				t.Errorf("client %s: first counter %d, want 1: a fresh instance", cl.name, counter.GetValue())
			}
			names := header.Get(activator.HeaderInstance)
			if len(names) != 1 {
				t.Fatalf("client %s: %s = %v", cl.name, activator.HeaderInstance, names)
			}
			pod, err := c.Client().CoreV1().Pods(rbacSessions).Get(ctx, names[0], metav1.GetOptions{})
			if err != nil {
				t.Fatalf("client %s: its pod %s in %s: %v", cl.name, names[0], rbacSessions, err)
			}
			cl.pod = pod
		}
		if clients[0].pod.UID == clients[1].pod.UID {
			t.Fatal("both clients got the same pod")
		}

		var np networkingv1.NetworkPolicy
		if err := m.One("NetworkPolicy", &np); err != nil {
			t.Fatal(err)
		}
		npSelector, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		for _, cl := range clients {
			sc := cl.pod.Spec.Containers[0]
			if sc.Resources.Requests.Cpu().Cmp(cl.wantCPU) != 0 || sc.Resources.Limits.Cpu().Cmp(cl.wantCPU) != 0 ||
				sc.Resources.Requests.Memory().Cmp(cl.wantMemory) != 0 || sc.Resources.Limits.Memory().Cmp(cl.wantMemory) != 0 {
				t.Errorf("client %s: pod %s resources %v, want %s CPU and %s memory", cl.name, cl.pod.Name, sc.Resources, cl.cpu, cl.memory)
			}
			if !npSelector.Matches(labels.Set(cl.pod.Labels)) {
				t.Errorf("client %s: the NetworkPolicy does not select its pod (labels %v)", cl.name, cl.pod.Labels)
			}
			// Pinned: a second call reaches the same process, which kept the count.
			callCtx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			info, err := cl.session.Info(callCtx, &examplepb.InfoRequest{})
			if err != nil {
				if status.Code(err) == codes.DeadlineExceeded {
					g.dumpGoroutines(t)
				}
				t.Fatalf("client %s: Info: %v", cl.name, err)
			}
			pid, ok := agent.PID(cl.pod.UID, "session")
			if !ok || int64(pid) != info.GetPid() {
				t.Errorf("client %s: answered by pid %d, its pod %s runs pid %d", cl.name, info.GetPid(), cl.pod.Name, pid)
			}
			if info.GetCpuRequest() != cl.wantCPU.String() {
				t.Errorf("client %s: the instance was told CPU %s, want %s", cl.name, info.GetCpuRequest(), cl.wantCPU.String())
			}
			counter, err := cl.session.Increment(callCtx, &examplepb.IncrementRequest{Delta: 1})
			if err != nil || counter.GetValue() != 2 {
				t.Errorf("client %s: second Increment = %v, %v; want 2 from the same instance", cl.name, counter.GetValue(), err)
			}
		}

		// a asked for a 2s idle timeout: once it hangs up, its pod goes.
		clients[0].conn.Close()
		reapCtx, cancel := context.WithTimeout(ctx, scenarioWait)
		defer cancel()
		if _, err := cluster.WaitForPod(reapCtx, c.Client(), rbacSessions, clients[0].pod.Name, func(p *corev1.Pod) (bool, error) {
			return p == nil, nil
		}); err != nil {
			t.Fatalf("client a's idle pod was not reaped: %v", err)
		}
		if len(g.logMatching(`"cause":"idle"`)) != 1 {
			t.Errorf("the gateway logged %d sessions ended for being idle, want 1", len(g.logMatching(`"cause":"idle"`)))
		}
		// b's session (10m idle timeout) lives on, on the same pod.
		callCtx, cancelCall := context.WithTimeout(ctx, callTimeout)
		defer cancelCall()
		counter, err := clients[1].session.Increment(callCtx, &examplepb.IncrementRequest{Delta: 1})
		if err != nil || counter.GetValue() != 3 {
			t.Errorf("client b after a's reap: Increment = %v, %v; want 3", counter.GetValue(), err)
		}
		if p, err := c.Client().CoreV1().Pods(rbacSessions).Get(ctx, clients[1].pod.Name, metav1.GetOptions{}); err != nil || p.UID != clients[1].pod.UID {
			t.Errorf("client b's pod: %v", err)
		}
		clients[1].conn.Close()
	})

	t.Run("OutsideTheRoleIsForbidden", func(t *testing.T) {
		forbidden := map[string]error{}
		_, forbidden["list secrets in the sessions namespace"] = asGateway.CoreV1().Secrets(rbacSessions).List(ctx, metav1.ListOptions{})
		_, forbidden["get a secret in the sessions namespace"] = asGateway.CoreV1().Secrets(rbacSessions).Get(ctx, "any", metav1.GetOptions{})
		_, forbidden["create a Deployment in the sessions namespace"] = asGateway.AppsV1().Deployments(rbacSessions).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "not-allowed"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
				},
			},
		}, metav1.CreateOptions{})
		_, forbidden["patch a pod in the sessions namespace"] = asGateway.CoreV1().Pods(rbacSessions).Patch(ctx, "any", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
		_, forbidden["list pods in the release namespace"] = asGateway.CoreV1().Pods(rbacNS).List(ctx, metav1.ListOptions{})
		_, forbidden["list pods in all namespaces"] = asGateway.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		_, forbidden["create a pod in the release namespace"] = asGateway.CoreV1().Pods(rbacNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "not-allowed-"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		_, forbidden["list nodes"] = asGateway.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		_, forbidden["update the Role"] = asGateway.RbacV1().Roles(rbacSessions).Patch(ctx, rbacRelease, types.MergePatchType, []byte(`{"rules":[]}`), metav1.PatchOptions{})
		for what, err := range forbidden {
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: %v, want Forbidden", what, err)
			}
		}
	})

	t.Run("ExactlyTheRole", func(t *testing.T) {
		for _, tc := range []struct {
			ns, verb, resource, subresource string
			allowed                         bool
		}{
			{rbacSessions, "get", "pods", "", true},
			{rbacSessions, "list", "pods", "", true},
			{rbacSessions, "watch", "pods", "", true},
			{rbacSessions, "create", "pods", "", true},
			{rbacSessions, "delete", "pods", "", true},
			{rbacSessions, "deletecollection", "pods", "", true},
			{rbacSessions, "create", "events", "", true},
			{rbacSessions, "update", "pods", "", false},
			{rbacSessions, "patch", "pods", "", false},
			{rbacSessions, "update", "pods", "status", false},
			{rbacSessions, "create", "pods", "exec", false},
			{rbacSessions, "create", "pods", "eviction", false},
			{rbacSessions, "get", "pods", "log", false},
			{rbacSessions, "list", "events", "", false},
			{rbacSessions, "get", "configmaps", "", false},
			{rbacSessions, "list", "secrets", "", false},
			{rbacSessions, "create", "services", "", false},
			{rbacNS, "list", "pods", "", false},
			{rbacNS, "create", "pods", "", false},
			{"", "list", "pods", "", false},
			{"", "list", "namespaces", "", false},
		} {
			review, err := asGateway.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: tc.ns, Verb: tc.verb, Resource: tc.resource, Subresource: tc.subresource,
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed != tc.allowed {
				t.Errorf("%s %s/%s in %q: allowed %v, want %v (%s)", tc.verb, tc.resource, tc.subresource, tc.ns, review.Status.Allowed, tc.allowed, review.Status.Reason)
			}
		}
	})

	t.Run("DrainsWithinTheGracePeriod", func(t *testing.T) {
		grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		took, err := g.stop(grace)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("drained in %v (terminationGracePeriodSeconds %v)", took.Round(time.Millisecond), grace)
	})

	// Once its cache had synced, the gateway met no refusal: every call it made
	// for the sessions (create, delete, watch) was allowed. (Before that, a first
	// list may race the RoleBinding into the API server's authorizer cache.)
	t.Run("NothingRefused", func(t *testing.T) {
		listened := false
		for _, line := range g.logMatching("") {
			if strings.Contains(line, "tether listening") {
				listened = true
			} else if listened && strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("the API server refused the gateway: %s", line)
			}
		}
	})
}
