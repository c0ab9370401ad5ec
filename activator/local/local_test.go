package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
)

// newRuntime returns a runtime that Close cleans up after the test.
func newRuntime(t *testing.T, cfg Config, store *logStore) *Runtime {
	t.Helper()
	if cfg.Env == nil {
		cfg.Env = helperEnviron()
	}
	if store == nil {
		store = newLogStore()
	}
	r, err := New(cfg, store.logger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return r
}

// phases records what Start reports.
type phases struct {
	mu   sync.Mutex
	seen []string
	pid  int
}

func (p *phases) observe(ph activator.Phase, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, string(ph)+"("+detail+")")
	if ph == activator.PhaseStarted {
		p.pid, _ = strconv.Atoi(strings.TrimPrefix(detail, "pid "))
	}
}

func (p *phases) startedPid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// ask sends one command line to a helper server and returns its answer.
func ask(t *testing.T, addr, cmd string) string {
	t.Helper()
	answer, err := tryAsk(addr, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}

func tryAsk(addr, cmd string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// assertGone checks that no process has pid any more. It must be one this test
// process has reaped, so that a zombie cannot pass for a live process.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("no pid to check (%d)", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v, want ESRCH: the process outlived Start or Stop", pid, err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func waitDone(t *testing.T, inst activator.Instance) {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Done not closed", inst.Name())
	}
}

func TestStartReadyInstanceGetsPortSizeAndSession(t *testing.T) {
	r := newRuntime(t, Config{
		Command: helperCommand(t, "serve", "-listen", "127.0.0.1:{port}"),
		// PORT and TETHER_SESSION from the base must lose to the instance's own.
		Env: helperEnviron("TETHER_LOCAL_TEST_BASE=kept", "PORT=1", "TETHER_SESSION=wrong"),
	}, nil)
	var ph phases
	spec := activator.Spec{
		Session: "s-42",
		Size: activator.Size{
			CPURequest:    resource.MustParse("500m"),
			CPULimit:      resource.MustParse("2"),
			MemoryRequest: resource.MustParse("512Mi"),
			MemoryLimit:   resource.MustParse("1Gi"),
		},
		Observe: ph.observe,
	}
	inst, err := r.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}

	host, port, err := net.SplitHostPort(inst.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:<port>", inst.Addr())
	}
	pid := ph.startedPid()
	exe, _ := os.Executable()
	if want := filepath.Base(exe) + "-" + strconv.Itoa(pid); inst.Name() != want {
		t.Errorf("Name() = %q, want %q", inst.Name(), want)
	}
	wantPhases := []string{"requested(" + filepath.Base(exe) + ")", "scheduled(local)",
		"started(pid " + strconv.Itoa(pid) + ")", "ready(" + inst.Addr() + ")"}
	if fmt.Sprint(ph.seen) != fmt.Sprint(wantPhases) {
		t.Errorf("phases = %v, want %v", ph.seen, wantPhases)
	}
	if inst.Err() != nil {
		t.Errorf("Err() of a live instance = %v, want nil", inst.Err())
	}

	var env map[string]string
	if err := json.Unmarshal([]byte(ask(t, inst.Addr(), "env")), &env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PORT":                     port,
		activator.EnvCPURequest:    "500m",
		activator.EnvCPULimit:      "2",
		activator.EnvMemoryRequest: "512Mi",
		activator.EnvMemoryLimit:   "1Gi",
		activator.EnvSession:       "s-42",
		"TETHER_LOCAL_TEST_BASE":   "kept",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("instance env %s = %q, want %q", k, env[k], v)
		}
	}
}

func TestStartFailsAsSoonAsTheProcessExits(t *testing.T) {
	r := newRuntime(t, Config{Command: `sh -c 'echo starting; echo boom >&2; exit 3'`}, nil)
	// Warm up what the runtime opens once (netpoll), so the count below is exact.
	if _, err := r.Start(t.Context(), activator.Spec{}); err == nil {
		t.Fatal("Start succeeded")
	}
	fds := openFDs(t)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var ph phases
	begin := time.Now()
	_, err := r.Start(ctx, activator.Spec{Session: "s", Observe: ph.observe})
	took := time.Since(begin)

	var se *activator.StartError
	if !errors.As(err, &se) {
		t.Fatalf("Start error = %v (%T), want *activator.StartError", err, err)
	}
	if ctx.Err() != nil || took > 10*time.Second {
		t.Errorf("Start took %s (ctx err %v): it waited for the deadline, not for the exit", took, ctx.Err())
	}
	if se.Reason != "exit code 3: boom" {
		t.Errorf("Reason = %q, want %q", se.Reason, "exit code 3: boom")
	}
	if want := "sh-" + strconv.Itoa(ph.startedPid()); se.Instance != want {
		t.Errorf("Instance = %q, want %q", se.Instance, want)
	}
	assertGone(t, ph.startedPid())
	if n := openFDs(t); n != fds {
		t.Errorf("open fds: %d before Start, %d after: a failed Start leaked", fds, n)
	}
}

func TestStartErrorNamesSignalAndKeepsLastStderrLines(t *testing.T) {
	for _, tc := range []struct {
		name, command, want string
	}{
		{"signal", `sh -c 'echo dying >&2; kill -USR1 $$'`, "killed by SIGUSR1: dying"},
		{"tail", `sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i >&2; done; exit 1'`,
			"exit code 1: line3\nline4\nline5\nline6\nline7\nline8\nline9\nline10\nline11\nline12"},
		{"silent", `sh -c 'exit 7'`, "exit code 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, Config{Command: tc.command}, nil)
			_, err := r.Start(t.Context(), activator.Spec{})
			var se *activator.StartError
			if !errors.As(err, &se) || se.Reason != tc.want {
				t.Fatalf("Start error = %#v, want a StartError with reason %q", err, tc.want)
			}
		})
	}
}

func TestStartContextEndsKillsTheProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func(context.Context, *phases) (context.Context, func(activator.Phase, string), context.CancelFunc)
		want error
	}{
		{"cancelled once started", func(parent context.Context, ph *phases) (context.Context, func(activator.Phase, string), context.CancelFunc) {
			ctx, cancel := context.WithCancel(parent)
			return ctx, func(p activator.Phase, d string) {
				ph.observe(p, d)
				if p == activator.PhaseStarted {
					cancel()
				}
			}, cancel
		}, context.Canceled},
		{"deadline", func(parent context.Context, ph *phases) (context.Context, func(activator.Phase, string), context.CancelFunc) {
			ctx, cancel := context.WithTimeout(parent, 50*time.Millisecond)
			return ctx, ph.observe, cancel
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, Config{Command: helperCommand(t, "hang")}, nil)
			var warm phases
			warmCtx, warmObserve, cancel := tc.ctx(t.Context(), &warm)
			_, _ = r.Start(warmCtx, activator.Spec{Observe: warmObserve})
			cancel()
			fds := openFDs(t)

			var ph phases
			ctx, observe, cancel := tc.ctx(t.Context(), &ph)
			defer cancel()
			_, err := r.Start(ctx, activator.Spec{Observe: observe})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Start error = %v, want %v", err, tc.want)
			}
			assertGone(t, ph.startedPid())
			if n := openFDs(t); n != fds {
				t.Errorf("open fds: %d before Start, %d after: a cancelled Start leaked", fds, n)
			}
		})
	}
}

func TestStopSendsSIGKILLAfterGrace(t *testing.T) {
	store := newLogStore()
	const grace = 500 * time.Millisecond
	r := newRuntime(t, Config{Command: helperCommand(t, "serve", "-ignore-term"), StopGrace: grace}, store)
	inst, err := r.Start(t.Context(), activator.Spec{Session: "s"})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.(*instance).pid

	begin := time.Now()
	if err := r.Stop(t.Context(), inst, "idle for 10m"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Stop returned after %s, before the %s grace", took, grace)
	}
	assertGone(t, pid)
	if _, ok := store.find(func(r logRec) bool { return r.msg == "got SIGTERM" }); !ok {
		t.Error("the instance never logged that it got SIGTERM")
	}
	ws := inst.(*instance).state.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("wait status = %v, want killed by SIGKILL", ws)
	}
	var gone *activator.GoneError
	if !errors.As(inst.Err(), &gone) || gone.Reason != "stopped: idle for 10m" || gone.Instance != inst.Name() {
		t.Errorf("Err() = %#v, want GoneError %q", inst.Err(), "stopped: idle for 10m")
	}
}

func TestStopIsGracefulAndIdempotent(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "serve"), StopGrace: time.Minute}, nil)
	inst, err := r.Start(t.Context(), activator.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.(*instance).pid
	begin := time.Now()
	if err := r.Stop(t.Context(), inst, "first"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 30*time.Second {
		t.Errorf("Stop took %s for a process that exits on SIGTERM", took)
	}
	assertGone(t, pid)
	if ws := inst.(*instance).state.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGTERM {
		t.Errorf("wait status = %v, want killed by SIGTERM", ws)
	}
	if err := r.Stop(t.Context(), inst, "second"); err != nil {
		t.Fatal(err)
	}
	if got := inst.Err().Error(); !strings.HasSuffix(got, "gone: stopped: first") {
		t.Errorf("Err() = %q, want the first reason", got)
	}

	other := newRuntime(t, Config{Command: helperCommand(t, "serve")}, nil)
	if err := other.Stop(t.Context(), inst, "x"); err == nil {
		t.Error("a runtime stopped an instance it did not start")
	}
}

func TestDoneAndErrWhenTheProcessExitsByItself(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "serve")}, nil)
	inst, err := r.Start(t.Context(), activator.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
		t.Fatal("Done closed while the process runs")
	default:
	}
	ask(t, inst.Addr(), "exit 2")
	waitDone(t, inst)
	var gone *activator.GoneError
	if !errors.As(inst.Err(), &gone) || !strings.HasPrefix(gone.Reason, "exit code 2") {
		t.Fatalf("Err() = %v, want a GoneError with exit code 2", inst.Err())
	}
	assertGone(t, inst.(*instance).pid)
	if err := r.Stop(t.Context(), inst, "late"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(inst.Err().Error(), "exit code 2") {
		t.Errorf("Stop after exit changed Err() to %q", inst.Err())
	}
}

func TestCloseStopsEveryInstanceAndRefusesStarts(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "serve", "-ignore-term"), StopGrace: 100 * time.Millisecond}, nil)
	const n = 4
	insts := make([]activator.Instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { insts[i], errs[i] = r.Start(t.Context(), activator.Spec{Session: strconv.Itoa(i)}) })
	}
	wg.Wait()
	addrs := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if addrs[insts[i].Addr()] {
			t.Errorf("two instances share %s", insts[i].Addr())
		}
		addrs[insts[i].Addr()] = true
	}

	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		select {
		case <-inst.Done():
		default:
			t.Errorf("%s still running after Close", inst.Name())
		}
		assertGone(t, inst.(*instance).pid)
		if !strings.Contains(inst.Err().Error(), "stopped: gateway shutting down") {
			t.Errorf("Err() = %v", inst.Err())
		}
	}
	if _, err := r.Start(t.Context(), activator.Spec{}); !errors.Is(err, activator.ErrShuttingDown) {
		t.Errorf("Start after Close = %v, want ErrShuttingDown", err)
	}
}

func TestOutputLinesReachTheLogger(t *testing.T) {
	store := newLogStore()
	r := newRuntime(t, Config{Command: helperCommand(t, "serve", "-long-line", strconv.Itoa(200<<10))}, store)
	inst, err := r.Start(t.Context(), activator.Spec{Session: "s-7"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, want := range []struct{ msg, stream string }{
		{"hello stdout", "stdout"},
		{"hello stderr", "stderr"},
		{"after long line", "stdout"}, // the reader survived the 200 KiB line
	} {
		rec, err := store.wait(ctx, func(r logRec) bool { return r.msg == want.msg })
		if err != nil {
			t.Fatalf("no record %q: %v", want.msg, err)
		}
		if rec.attrs["session"] != "s-7" || rec.attrs["instance"] != inst.Name() || rec.attrs["stream"] != want.stream {
			t.Errorf("record %q has attrs %v", want.msg, rec.attrs)
		}
	}
	long, ok := store.find(func(r logRec) bool { return strings.HasPrefix(r.msg, "xxx") })
	if !ok || len(long.msg) != maxLine || long.attrs["truncated"] != true {
		t.Errorf("long line logged as %d bytes, attrs %v; want %d bytes, truncated", len(long.msg), long.attrs, maxLine)
	}
}

// Linux sends Pdeathsig when the thread that forked the child exits. A goroutine
// that exits while locked to its thread ends that thread. If Start forked on the
// caller's thread, this caller would kill its own instance on return.
func TestInstanceOutlivesTheThreadThatCalledStart(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "serve")}, nil)
	var (
		inst activator.Instance
		tid  int
	)
	for {
		type result struct {
			inst activator.Instance
			err  error
			tid  int
		}
		res := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			inst, err := r.Start(t.Context(), activator.Spec{})
			res <- result{inst, err, unix.Gettid()}
		}()
		got := <-res
		if got.err != nil {
			t.Fatal(got.err)
		}
		if got.tid != os.Getpid() {
			inst, tid = got.inst, got.tid
			break
		}
		// The main thread is never ended, only parked; try again elsewhere.
		if err := r.Stop(t.Context(), got.inst, "retry"); err != nil {
			t.Fatal(err)
		}
	}

	// Wait for the calling thread to be gone. Its Pdeathsig, had it been the
	// parent, was sent before the thread left /proc.
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("thread %d never exited", tid)
		}
	}
	// A process with a pending SIGKILL runs no more user code, so an answer
	// proves the instance was not signalled.
	if got, err := tryAsk(inst.Addr(), "ping"); got != "pong\n" {
		t.Fatalf("instance answered %q, %v after its caller's thread exited: Pdeathsig killed it", got, err)
	}
	select {
	case <-inst.Done():
		t.Fatalf("instance gone: %v", inst.Err())
	default:
	}
}

// A gateway killed with SIGKILL runs no cleanup; the kernel must kill its instances.
func TestInstanceDiesWithAKilledGateway(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gw := exec.Command(exe, "gateway")
	gw.Env = helperEnviron()
	gw.Stderr = os.Stderr
	stdin, err := gw.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := gw.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = gw.Process.Kill()
		_ = gw.Wait()
	}()

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("gateway printed no instance pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	// A pidfd follows this very process; a pid could be reused once it is reaped.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("instance %d: %v", pid, err)
	}
	defer unix.Close(pidfd)

	if err := gw.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = gw.Wait()

	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 30_000)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			t.Fatalf("instance %d still running 30s after its gateway was killed", pid)
		}
		return
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty", Config{Command: "  "}, "TETHER_LOCAL_COMMAND: the command is empty"},
		{"unterminated", Config{Command: `sh -c 'x`}, "unterminated single quote"},
		{"pipe", Config{Command: `server | tee log`}, "sh -c"},
		{"missing binary", Config{Command: "tether-no-such-binary -x"}, "executable file not found"},
		{"public host", Config{Command: "sh", Host: "0.0.0.0"}, "not a loopback"},
		{"hostname", Config{Command: "sh", Host: "localhost"}, "not a loopback"},
		{"negative grace", Config{Command: "sh", StopGrace: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	r, err := New(Config{Command: "sh", Host: "::1"}, nil, nil)
	if err != nil || r.grace != DefaultStopGrace {
		t.Errorf("New(::1) = %v, %v; want a runtime with the default grace", r, err)
	}
}

func TestStopContextCutsTheGraceShort(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "serve", "-ignore-term"), StopGrace: time.Hour}, nil)
	inst, err := r.Start(t.Context(), activator.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.Stop(ctx, inst, "now"); err != nil {
		t.Fatal(err)
	}
	if ws := inst.(*instance).state.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
		t.Errorf("wait status = %v, want killed by SIGKILL", ws)
	}
	assertGone(t, inst.(*instance).pid)
}

func TestCloseEndsAStartInProgress(t *testing.T) {
	r := newRuntime(t, Config{Command: helperCommand(t, "hang")}, nil)
	started := make(chan struct{})
	var ph phases
	errc := make(chan error, 1)
	go func() {
		_, err := r.Start(t.Context(), activator.Spec{Observe: func(p activator.Phase, d string) {
			ph.observe(p, d)
			if p == activator.PhaseStarted {
				close(started)
			}
		}})
		errc <- err
	}()
	<-started
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, activator.ErrShuttingDown) {
		t.Errorf("Start during Close = %v, want ErrShuttingDown", err)
	}
	assertGone(t, ph.startedPid())
}
