package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// container is the state of one container of a pod, owned by the pod's worker.
type container struct {
	spec   corev1.Container
	status corev1.ContainerStatus
	binary string // the executable the image maps to; empty for an unknown image

	gen         int           // the current run; events from older runs are stale
	pid         int           // the running process (its group has the same id), or 0
	exited      chan struct{} // closed when the current process has been reaped
	startedAt   time.Time
	runs        int
	backOff     time.Duration // the next crash-loop delay; 0 until the first crash
	cancelProbe context.CancelFunc
	finished    bool // terminated and not to be restarted
}

func (c *container) running() bool { return c.pid != 0 }

func (c *container) stopProbe() {
	if c.cancelProbe != nil {
		c.cancelProbe()
		c.cancelProbe = nil
	}
}

// start runs container i as a local process in its own process group.
func (w *podWorker) start(i int) {
	c := w.containers[i]
	c.gen++
	env, err := w.env(c.spec)
	if err != nil {
		// As the kubelet: a missing ConfigMap or Secret key holds the container
		// in Waiting, and it is retried.
		c.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "CreateContainerConfigError", Message: err.Error(),
		}}
		w.after(w.a.opts.ImagePullBackOff, event{kind: evRestart, container: i, gen: c.gen})
		return
	}
	argv, err := command(c.spec, c.binary, env)
	if err == nil {
		err = w.launch(i, argv, env)
	}
	if err != nil {
		// The runtime failed to start the process: reported as the container
		// runtime does, a termination with exit code 128 and reason StartError.
		w.log.Warn("container failed to start", "container", c.spec.Name, "err", err)
		c.startedAt = time.Now()
		c.runs++
		w.exited(i, nil, err)
	}
}

func (w *podWorker) launch(i int, argv []string, env map[string]string) error {
	c := w.containers[i]
	dir := filepath.Join(w.a.logDir, string(w.uid), c.spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logFile, err := os.OpenFile(w.a.ContainerLog(w.pod, c.spec.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "=== %s run %d: %q\n", time.Now().Format(time.RFC3339Nano), c.runs, argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Own process group, so that SIGTERM and SIGKILL reach a shell's children too;
	// Pdeathsig, so that nothing outlives a test binary that crashed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	now := metav1.Now()
	if c.runs > 0 {
		c.status.RestartCount++
	}
	c.runs++
	c.pid = cmd.Process.Pid
	c.startedAt = now.Time
	c.exited = make(chan struct{})
	started := true
	if t := c.status.State.Terminated; t != nil {
		c.status.LastTerminationState = corev1.ContainerState{Terminated: t}
	}
	c.status.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	c.status.Started = &started
	c.status.Ready = c.spec.ReadinessProbe == nil
	c.status.ContainerID = "nodeagent://" + strconv.Itoa(c.pid)
	w.a.setPID(w.uid, c.spec.Name, c.pid)
	w.log.Info("container started", "container", c.spec.Name, "pid", c.pid, "argv", argv)

	// The waiter and the prober are counted in the agent's WaitGroup, so Stop
	// returns only after they are gone. Adding is safe: this worker is counted.
	gen, exited := c.gen, c.exited
	w.a.wg.Go(func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
		w.send(event{kind: evExited, container: i, gen: gen, state: cmd.ProcessState})
	})
	if p := c.spec.ReadinessProbe; p != nil {
		ctx, cancel := context.WithCancel(w.a.ctx)
		c.cancelProbe = cancel
		pr := &prober{probe: p, ip: w.ip, spec: c.spec, env: env, period: w.a.opts.ProbePeriod}
		w.a.wg.Go(func() {
			pr.run(ctx, func(ready bool) { w.send(event{kind: evProbe, container: i, gen: gen, ready: ready}) })
		})
	}
	return nil
}

// exited records the end of container i's run and restarts it as its pod's
// restartPolicy says: the first crash restarts at once, later ones wait in
// CrashLoopBackOff for a delay that doubles up to MaxBackOff.
func (w *podWorker) exited(i int, state *os.ProcessState, startErr error) {
	c := w.containers[i]
	c.stopProbe()
	w.a.setPID(w.uid, c.spec.Name, 0)
	c.pid = 0
	term := &corev1.ContainerStateTerminated{
		StartedAt:   metav1.NewTime(c.startedAt),
		FinishedAt:  metav1.Now(),
		ContainerID: c.status.ContainerID,
	}
	switch {
	case startErr != nil:
		term.ExitCode, term.Reason, term.Message = 128, "StartError", startErr.Error()
	default:
		term.ExitCode = exitCode(state)
		term.Reason = "Completed"
		if term.ExitCode != 0 {
			term.Reason = "Error"
		}
	}
	w.log.Info("container exited", "container", c.spec.Name, "code", term.ExitCode, "reason", term.Reason)
	c.status.State = corev1.ContainerState{Terminated: term}
	c.status.Ready = false
	started := false
	c.status.Started = &started

	policy := w.pod.Spec.RestartPolicy
	if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && term.ExitCode == 0) {
		c.finished = true
		return
	}
	if time.Since(c.startedAt) >= backOffReset {
		c.backOff = 0
	}
	// Publish the termination before the restart or the back-off replaces it, so
	// that a watcher sees the exit code in State and not only in LastTerminationState.
	w.sync()
	if c.backOff == 0 {
		c.backOff = w.a.opts.BackOff
		w.start(i)
		return
	}
	delay := c.backOff
	c.backOff = min(2*c.backOff, w.a.opts.MaxBackOff)
	c.status.LastTerminationState = corev1.ContainerState{Terminated: term}
	c.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
			delay, c.spec.Name, w.pod.Name, w.pod.Namespace, w.uid),
	}}
	w.after(delay, event{kind: evRestart, container: i, gen: c.gen})
}

func exitCode(state *os.ProcessState) int32 {
	if state == nil {
		return 128
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(state.ExitCode())
}

// command builds the argv of a container. The image stands for one executable:
// with no command, it runs with the container's args; a command naming the image's
// executable (by path or base name, such as "/tether-example") runs it; any other
// command runs from the host's PATH, so that "sh -c ..." works. $(VAR) references
// are expanded from the container's environment, as the kubelet does.
func command(spec corev1.Container, binary string, env map[string]string) ([]string, error) {
	if binary == "" {
		return nil, errors.New("no executable for image " + spec.Image)
	}
	args := expandAll(spec.Args, env)
	if len(spec.Command) == 0 {
		return append([]string{binary}, args...), nil
	}
	cmd := expandAll(spec.Command, env)
	exe := cmd[0]
	if exe == binary || filepath.Base(exe) == filepath.Base(binary) {
		exe = binary
	} else {
		path, err := exec.LookPath(exe)
		if err != nil {
			return nil, fmt.Errorf("exec: %q: executable file not found", exe)
		}
		exe = path
	}
	return append(append([]string{exe}, cmd[1:]...), args...), nil
}
