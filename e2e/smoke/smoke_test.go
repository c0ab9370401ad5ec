package smoke

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tetherhq/tether/e2e/cluster"
	"github.com/tetherhq/tether/e2e/internal/gobuild"
	"github.com/tetherhq/tether/e2e/nodeagent"
)

const (
	namespace    = "smoke"
	serverImage  = "tether-testserver:dev"
	exampleImage = "tether-example:dev"
	waitTimeout  = 30 * time.Second
)

// grpcPort is the pods' gRPC port. Each pod listens on a loopback address of
// its own, but a process that listens on every address (":8080") would still
// take the port from all of them, so it is one that is free everywhere.
var grpcPort = freeWildcardPort()

func freeWildcardPort() int32 {
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		panic(err)
	}
	defer lis.Close()
	return int32(lis.Addr().(*net.TCPAddr).Port)
}

func TestHarness(t *testing.T) {
	bins := gobuild.ForTest(t, "github.com/tetherhq/tether/e2e/internal/testserver")
	example := gobuild.ProductForTest(t, "./cmd/tether-example")
	c := cluster.ForTest(t, cluster.Options{Namespaces: []string{namespace}})
	agent := nodeagent.ForTest(t, nodeagent.Options{
		Client: c.Client(),
		Nodes:  []nodeagent.Node{{Name: "node-1", CPU: "2", Memory: "4Gi"}},
		Images: map[string]string{
			serverImage:  bins["testserver"],
			exampleImage: example["tether-example"],
		},
		ProbePeriod:    200 * time.Millisecond,
		BackOff:        time.Second,
		MaxGracePeriod: 5 * time.Second,
	})
	client := c.Client()

	t.Run("pods", func(t *testing.T) {
		t.Run("ReadyThenDeleteKillsProcess", func(t *testing.T) {
			t.Parallel()
			testReadyThenDelete(t, client, agent)
		})
		t.Run("ExampleServerBecomesReady", func(t *testing.T) {
			t.Parallel()
			testExampleServer(t, client)
		})
		t.Run("TooBigStaysPendingUnschedulable", func(t *testing.T) {
			t.Parallel()
			testUnschedulable(t, client)
		})
		t.Run("UnknownImageBacksOff", func(t *testing.T) {
			t.Parallel()
			testUnknownImage(t, client)
		})
		t.Run("ExitingContainerCrashLoops", func(t *testing.T) {
			t.Parallel()
			testCrashLoop(t, client)
		})
		t.Run("NeverRestartFails", func(t *testing.T) {
			t.Parallel()
			testNeverRestart(t, client)
		})
		t.Run("ServiceAccountIsBoundByRBAC", func(t *testing.T) {
			t.Parallel()
			testServiceAccount(t, c)
		})
	})

	// Sequential: it takes the API server away from everyone.
	t.Run("APIServerRestartKeepsPodsRunning", func(t *testing.T) {
		testAPIServerRestart(t, c, agent)
	})
}

func testReadyThenDelete(t *testing.T, client kubernetes.Interface, agent *nodeagent.Agent) {
	ctx := timeout(t)
	pod := create(t, client, serverPod("ready"))
	ready := waitPod(t, ctx, client, pod.Name, isReady)

	ip := net.ParseIP(ready.Status.PodIP)
	if ip == nil || !ip.IsLoopback() || ready.Status.PodIP == "127.0.0.1" {
		t.Fatalf("podIP = %q, want a loopback address of its own", ready.Status.PodIP)
	}
	addr := net.JoinHostPort(ready.Status.PodIP, fmt.Sprint(grpcPort))
	if err := healthCheck(ctx, addr); err != nil {
		t.Fatalf("health check of the pod at %s: %v", addr, err)
	}
	pid, ok := agent.PID(pod.UID, "server")
	if !ok {
		t.Fatal("no process for the ready pod")
	}

	if err := client.CoreV1().Pods(namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool { return p == nil })
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d of the deleted pod: kill -0 = %v, want ESRCH", pid, err)
	}
	if err := healthCheck(ctx, addr); err == nil {
		t.Errorf("the deleted pod still answers at %s", addr)
	}
}

// testExampleServer runs the product's example server the way a pod template
// should: PORT from the spec, and -listen on the pod's own address, since its
// default of :$PORT would bind every address and collide with the next pod.
func testExampleServer(t *testing.T, client kubernetes.Interface) {
	ctx := timeout(t)
	p := serverPod("example")
	c := &p.Spec.Containers[0]
	c.Image = exampleImage
	c.Command = []string{"/tether-example"}
	c.Args = []string{"-listen=$(POD_IP):$(PORT)"}
	c.Env = append(c.Env, corev1.EnvVar{Name: "PORT", Value: fmt.Sprint(grpcPort)})
	pod := create(t, client, p)
	ready := waitPod(t, ctx, client, pod.Name, isReady)
	if err := healthCheck(ctx, net.JoinHostPort(ready.Status.PodIP, fmt.Sprint(grpcPort))); err != nil {
		t.Fatal(err)
	}
}

func testUnschedulable(t *testing.T, client kubernetes.Interface) {
	ctx := timeout(t)
	p := serverPod("too-big")
	p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Gi")}
	pod := create(t, client, p)
	got := waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool {
		c := condition(p, corev1.PodScheduled)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
	})
	c := condition(got, corev1.PodScheduled)
	if want := "0/1 nodes are available: 1 Insufficient memory."; !strings.Contains(c.Message, want) {
		t.Errorf("PodScheduled message = %q, want it to contain %q", c.Message, want)
	}
	if got.Status.Phase != corev1.PodPending || got.Spec.NodeName != "" {
		t.Errorf("phase %s on node %q, want Pending and unbound", got.Status.Phase, got.Spec.NodeName)
	}
}

func testUnknownImage(t *testing.T, client kubernetes.Interface) {
	ctx := timeout(t)
	p := serverPod("no-image")
	p.Spec.Containers[0].Image = "example.invalid/nothing:1"
	pod := create(t, client, p)
	seen := map[string]bool{}
	got := waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool {
		if w := waiting(p); w != nil {
			seen[w.Reason] = true
		}
		return seen["ErrImagePull"] && seen["ImagePullBackOff"]
	})
	if got.Status.Phase != corev1.PodPending {
		t.Errorf("phase = %s, want Pending", got.Status.Phase)
	}
	if w := waiting(got); !strings.Contains(w.Message, "example.invalid/nothing:1") {
		t.Errorf("waiting message %q does not name the image", w.Message)
	}
}

func testCrashLoop(t *testing.T, client kubernetes.Interface) {
	ctx := timeout(t)
	p := serverPod("crash")
	p.Spec.Containers[0].Args = []string{"-exit=3"}
	pod := create(t, client, p)
	var sawTerminated bool
	got := waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool {
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		cs := p.Status.ContainerStatuses[0]
		if term := cs.State.Terminated; term != nil && term.ExitCode == 3 && term.Reason == "Error" {
			sawTerminated = true
		}
		return sawTerminated && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff"
	})
	cs := got.Status.ContainerStatuses[0]
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 3 {
		t.Errorf("lastState = %+v, want terminated with exit code 3", cs.LastTerminationState)
	}
	if cs.RestartCount < 1 {
		t.Errorf("restartCount = %d, want at least 1", cs.RestartCount)
	}
	if got.Status.Phase != corev1.PodRunning {
		t.Errorf("phase = %s, want Running (restartPolicy Always)", got.Status.Phase)
	}
	if isReady(got) {
		t.Error("a crash-looping pod is Ready")
	}
}

func testNeverRestart(t *testing.T, client kubernetes.Interface) {
	ctx := timeout(t)
	p := serverPod("never")
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	p.Spec.Containers[0].Args = []string{"-exit=7"}
	pod := create(t, client, p)
	got := waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool { return p != nil && p.Status.Phase == corev1.PodFailed })
	if term := got.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 7 {
		t.Errorf("state = %+v, want terminated with exit code 7", got.Status.ContainerStatuses[0].State)
	}
}

func testServiceAccount(t *testing.T, c *cluster.Cluster) {
	ctx := timeout(t)
	cfg, err := c.ServiceAccountConfig(ctx, namespace, "no-rights")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := review.Status.UserInfo.Username, "system:serviceaccount:"+namespace+":no-rights"; got != want {
		t.Errorf("authenticated as %q, want %q", got, want)
	}
	_, err = sa.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("a ServiceAccount without a RoleBinding listed pods: err = %v, want Forbidden", err)
	}
}

func testAPIServerRestart(t *testing.T, c *cluster.Cluster, agent *nodeagent.Agent) {
	ctx := timeout(t)
	client := c.Client()
	pod := create(t, client, serverPod("survivor"))
	ready := waitPod(t, ctx, client, pod.Name, isReady)
	addr := net.JoinHostPort(ready.Status.PodIP, fmt.Sprint(grpcPort))

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	if err := healthCheck(ctx, addr); err != nil {
		t.Fatalf("the pod stopped serving while the API server was down: %v", err)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the old client after the restart: %v", err)
	}
	// The agent's watch reconnects by itself: a delete is still carried out.
	if err := client.CoreV1().Pods(namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ctx, client, pod.Name, func(p *corev1.Pod) bool { return p == nil })
	if _, ok := agent.PID(pod.UID, "server"); ok {
		t.Error("the deleted pod's process is still tracked")
	}
}

// serverPod is a pod running the test server on its own address with a gRPC
// readiness probe, the shape of pod the gateway makes.
func serverPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: namespace},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "server",
				Image: serverImage,
				Args:  []string{fmt.Sprintf("-listen=$(POD_IP):%d", grpcPort)},
				Env: []corev1.EnvVar{
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				},
				Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: grpcPort}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: grpcPort}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func create(t *testing.T, client kubernetes.Interface, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := timeout(t)
	created, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = client.CoreV1().Pods(namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	return created
}

func waitPod(t *testing.T, ctx context.Context, client kubernetes.Interface, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	pod, err := cluster.WaitForPod(ctx, client, namespace, name, func(p *corev1.Pod) (bool, error) { return cond(p), nil })
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func isReady(p *corev1.Pod) bool {
	c := condition(p, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	if p == nil {
		return nil
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func waiting(p *corev1.Pod) *corev1.ContainerStateWaiting {
	if p == nil || len(p.Status.ContainerStatuses) == 0 {
		return nil
	}
	return p.Status.ContainerStatuses[0].State.Waiting
}

func healthCheck(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s", resp.GetStatus())
	}
	return nil
}
