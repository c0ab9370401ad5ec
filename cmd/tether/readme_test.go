package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestREADMEMakeRunAndCall does what the README tells a new user: `make run`, then
// the README's own grpcurl line against it. The call must reach an instance of
// the size it asked for. (Issue 2, done-when 8.)
func TestREADMEMakeRunAndCall(t *testing.T) {
	grpcurl := os.Getenv("TETHER_GRPCURL")
	if grpcurl == "" {
		var err error
		if grpcurl, err = exec.LookPath("grpcurl"); err != nil {
			t.Fatal("grpcurl not found: run `make tools` (make test does) or set TETHER_GRPCURL")
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var call string
	for line := range strings.Lines(string(readme)) {
		if strings.HasPrefix(line, "grpcurl -plaintext -H 'x-tether-cpu: 1'") && strings.HasSuffix(strings.TrimSpace(line), "Session/Info") {
			call = strings.TrimSpace(line)
			break
		}
	}
	if call == "" {
		t.Fatal("the README lost its grpcurl example")
	}

	// Free ports for the gRPC and the admin listener: make run's defaults (:8080,
	// :9090) may be taken on a machine where someone is running tether.
	addr, adminAddr := freeAddr(t), freeAddr(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runCmd := exec.CommandContext(ctx, "make", "-C", "../..", "run", "LISTEN="+addr)
	runCmd.Env = append(os.Environ(), "TETHER_LOG_FORMAT=json", "TETHER_METRICS_LISTEN="+adminAddr)
	// Its own process group, so the test can signal make and the gateway together,
	// as Ctrl-C in a terminal does.
	runCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	runCmd.Cancel = func() error { return syscall.Kill(-runCmd.Process.Pid, syscall.SIGKILL) }
	stderr, err := runCmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := runCmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	listening, exited := onListening(stderr, &log)
	select {
	case <-listening:
	case <-exited:
		t.Fatalf("make run exited before the gateway listened:\n%s", log.String())
	case <-ctx.Done():
		t.Fatalf("make run did not start the gateway:\n%s", log.String())
	}

	cmd := exec.CommandContext(ctx, "sh", "-c", strings.Replace(call, "localhost:8080", addr, 1))
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(grpcurl)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", call, err, out)
	}
	var info struct{ CPURequest, MemoryRequest, Instance string }
	if err := json.Unmarshal(out, &info); err != nil || info.CPURequest != "1" || info.MemoryRequest != "256Mi" || info.Instance == "" {
		t.Fatalf("the call did not reach a right-sized instance: %v\n%s", err, out)
	}

	syscall.Kill(-runCmd.Process.Pid, syscall.SIGINT)
	runCmd.Wait()
}

// onListening signals once the gateway logs that it is listening, and once make
// run's output ends. It copies every line into log.
func onListening(r io.Reader, log *lockedBuffer) (listening, exited <-chan struct{}) {
	l, e := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e)
		sc := bufio.NewScanner(r)
		signalled := false
		for sc.Scan() {
			log.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg string }
			if !signalled && json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "tether listening" {
				close(l)
				signalled = true
			}
		}
	}()
	return l, e
}

// lockedBuffer keeps what make run wrote, for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}
