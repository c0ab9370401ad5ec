package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

var binDir string

// TestMain builds the real binaries once: the tests below run them the way an
// operator does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	out, err := exec.Command("go", "build", "-o", dir+"/", "../tether", "../tether-example").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		code = m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
	}()
	os.Exit(code)
}

func testEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"TETHER_LISTEN":         "127.0.0.1:0",
		"TETHER_LOCAL_COMMAND":  filepath.Join(binDir, "tether-example") + " -listen 127.0.0.1:{port}",
		"TETHER_LOG_FORMAT":     "json",
		"TETHER_STOP_GRACE":     "2s",
		"TETHER_METRICS_LISTEN": "127.0.0.1:0",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func info(ctx context.Context, t *testing.T, addr string) *examplepb.InfoResponse {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-tether-cpu", "250m")
	r, err := examplepb.NewSessionClient(cc).Info(ctx, &examplepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// TestRunServesThenStopsEveryInstance runs the gateway in process: a call gets
// its own instance, and when the context ends (as on SIGTERM) run drains and
// returns with the instance stopped.
func TestRunServesThenStopsEveryInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, testEnv(nil), io.Discard, io.Discard, ready) }()
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	r := info(ctx, t, a.gateway.String())
	if r.GetCpuRequest() != "250m" {
		t.Fatalf("instance size %q", r.GetCpuRequest())
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if alive(int(r.GetPid())) {
		t.Fatalf("instance %d outlived the gateway", r.GetPid())
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	err := run(context.Background(), nil, testEnv(map[string]string{"TETHER_IDLE_TIMEOUT": "soon"}), io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "TETHER_IDLE_TIMEOUT") {
		t.Fatalf("got %v", err)
	}
}

// gatewayProcess starts the tether binary and waits for it to listen.
func gatewayProcess(t *testing.T, ctx context.Context) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tether"))
	for k, v := range testEnv(nil) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "tether listening" {
				addr <- rec.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, a
	case <-ctx.Done():
		t.Fatal("gateway did not start")
	}
	return nil, ""
}

// TestSIGTERMLeavesNoInstance is issue 2's "after kill -TERM of the gateway, no
// instance process is left running", against the real binary.
func TestSIGTERMLeavesNoInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, addr := gatewayProcess(t, ctx)
	pid := int(info(ctx, t, addr).GetPid())
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gateway exit: %v", err)
	}
	if alive(pid) {
		t.Fatalf("instance %d left running after SIGTERM", pid)
	}
}

// TestSIGKILLLeavesNoInstance: even a gateway that cannot clean up takes its
// instances with it (Pdeathsig).
func TestSIGKILLLeavesNoInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, addr := gatewayProcess(t, ctx)
	pid := int(info(ctx, t, addr).GetPid())
	// pidfd lets the test wait for the instance's exit instead of polling for it.
	fd, err := pidfdOpen(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd.Process.Kill()
	cmd.Wait()
	if err := waitFD(ctx, fd); err != nil {
		t.Fatalf("instance %d still running after the gateway was killed: %v", pid, err)
	}
}

func pidfdOpen(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

// waitFD waits until a pidfd reports its process has exited.
func waitFD(ctx context.Context, fd int) error {
	deadline, _ := ctx.Deadline()
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("timed out")
		}
		return nil
	}
}

// Asking for help prints the usage and succeeds, for the gateway and for the
// sessions subcommand; an unknown command is still an error.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"sessions", "-h"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, map[string]string{}, &out, io.Discard, nil); err != nil {
			t.Errorf("tether %v: %v", args, err)
		}
		if !strings.Contains(out.String(), "sessions") {
			t.Errorf("tether %v printed %q, want the usage", args, out.String())
		}
	}
	if err := run(context.Background(), []string{"serve"}, map[string]string{}, io.Discard, io.Discard, nil); err == nil {
		t.Error("tether serve: no error for an unknown command")
	}
}

// JSON logs write durations as Go durations, the form the TETHER_* variables take.
func TestJSONLogDurations(t *testing.T) {
	var out bytes.Buffer
	newLogger("json", "info", &out).Info("x", "idle_timeout", 10*time.Minute)
	var rec map[string]any
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["idle_timeout"] != "10m0s" {
		t.Errorf("idle_timeout logged as %v, want \"10m0s\"", rec["idle_timeout"])
	}
}
