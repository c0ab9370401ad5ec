package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tetherhq/tether/activator"
)

const (
	// maxLine is the longest output line logged whole; longer lines are cut.
	maxLine = 64 << 10
	// tailLines and tailLineMax bound the stderr lines kept for the exit message,
	// which clients read in a gRPC status.
	tailLines   = 10
	tailLineMax = 1 << 10
	// drainGrace bounds how long output is read after the process group is dead.
	// Only a process that left the group but kept the pipes open needs it.
	drainGrace = time.Second
)

// instance is one child process. Its owner goroutine (run) starts it, waits for it,
// reaps it and ends life; every field it writes is read by others only after
// started has delivered or life has ended.
type instance struct {
	rt   *Runtime
	port int
	addr string

	pid  int    // set before run reports success on started
	name string // likewise

	// life ends, with a *activator.GoneError as its cause, once the process has been
	// reaped and its output read to the end. Its Done channel is the instance's.
	life   context.Context
	finish context.CancelCauseFunc
	state  *os.ProcessState // how the process ended; set before life ends
	tail   []string         // the last lines of stderr; set before life ends

	mu       sync.Mutex
	reaped   bool   // no process is left to signal, so its pid may name another
	stopping string // why Stop was called first, or ""
}

func (in *instance) Name() string              { return in.name }
func (in *instance) Addr() string              { return in.addr }
func (in *instance) Done() <-chan struct{}     { return in.life.Done() }
func (in *instance) String() string            { return in.name }
func (in *instance) stopReason() string        { in.mu.Lock(); defer in.mu.Unlock(); return in.stopping }
func (in *instance) signal(sig syscall.Signal) { in.mu.Lock(); in.signalLocked(sig); in.mu.Unlock() }

func (in *instance) Err() error {
	if in.life.Err() == nil {
		return nil
	}
	return context.Cause(in.life)
}

// signalLocked sends sig to the instance's process group. The group's id is the
// leader's pid, which stays reserved while the leader is unreaped, even as a
// zombie; after that it may be another process's, so reaped is checked under the
// same lock that run holds while reaping.
func (in *instance) signalLocked(sig syscall.Signal) {
	if in.reaped || in.pid <= 0 { // kill(-0) would signal the gateway's own group
		return
	}
	if err := syscall.Kill(-in.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		in.rt.log.Warn("cannot signal instance", "instance", in.name, "signal", unix.SignalName(sig), "err", err)
	}
}

// stop sends SIGTERM, waits for the grace or ctx, sends SIGKILL, and returns once
// life has ended. The first reason given is the one Err reports.
func (in *instance) stop(ctx context.Context, reason string) {
	if reason == "" {
		reason = "no reason given"
	}
	in.mu.Lock()
	if in.stopping == "" && !in.reaped {
		in.stopping = reason
	}
	in.signalLocked(syscall.SIGTERM)
	in.mu.Unlock()

	grace := time.NewTimer(in.rt.grace)
	defer grace.Stop()
	select {
	case <-in.Done():
		return
	case <-grace.C:
	case <-ctx.Done():
	}
	in.signal(syscall.SIGKILL)
	<-in.Done()
}

// exitSummary says how the process ended, with the last lines of its stderr:
// "exit code 3: boom". Call it only after life has ended.
func (in *instance) exitSummary() string {
	s := "exit status unknown"
	if ps := in.state; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			s = "killed by " + unix.SignalName(ws.Signal())
		} else {
			s = "exit code " + strconv.Itoa(ps.ExitCode())
		}
	}
	if len(in.tail) > 0 {
		s += ": " + strings.Join(in.tail, "\n")
	}
	return s
}

// spawn execs the instance's process and hands it to its owner goroutine. It
// returns once the exec has succeeded or failed; on failure nothing is left.
func (r *Runtime) spawn(spec activator.Spec, port int) (*instance, error) {
	in := &instance{rt: r, port: port, addr: net.JoinHostPort(r.host, strconv.Itoa(port))}
	in.life, in.finish = context.WithCancelCause(context.Background())

	cmd := r.command(spec, port)
	outR, outW, err := os.Pipe()
	if err != nil {
		r.release(in)
		return nil, &activator.RuntimeError{Op: "create a pipe", Err: err}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(outR, outW)
		r.release(in)
		return nil, &activator.RuntimeError{Op: "create a pipe", Err: err}
	}
	// *os.File outputs go to the child as they are: os/exec starts no copying
	// goroutines, and this package reads the other ends itself.
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // the instance is its group; see signalLocked
		Pdeathsig: syscall.SIGKILL, // see run for what keeps this honest
	}

	started := make(chan error, 1)
	go in.run(cmd, spec.Session, outR, outW, errR, errW, started)
	if err := <-started; err != nil {
		return nil, &activator.StartError{Reason: err.Error()}
	}
	return in, nil
}

// run is the instance's owner goroutine: it execs cmd, reports the result on
// started, then waits for the process, reaps it, drains its output and ends life.
func (in *instance) run(cmd *exec.Cmd, session string, outR, outW, errR, errW *os.File, started chan<- error) {
	// Pdeathsig fires when the thread that forked the child exits, not when the
	// gateway does. A goroutine that exits while locked to its thread ends that
	// thread, and any code in the process may do so on any thread that was idle.
	// Locking this one until the child is reaped means nothing else ever runs on
	// the forking thread, so only the gateway's death ends it early.
	runtime.LockOSThread()
	err := cmd.Start()
	// The child has its own copies of the write ends; the readers see EOF only
	// once every copy is closed, ours included.
	closeAll(outW, errW)
	if err != nil {
		runtime.UnlockOSThread()
		closeAll(outR, errR)
		in.mu.Lock()
		in.reaped = true
		in.mu.Unlock()
		in.rt.release(in)
		in.finish(&activator.GoneError{Reason: "not started: " + err.Error()})
		started <- err
		return
	}
	in.pid = cmd.Process.Pid
	in.name = in.rt.name + "-" + strconv.Itoa(in.pid)

	log := in.rt.log.With("session", session, "instance", in.name)
	var readers sync.WaitGroup
	var tail lineRing
	readers.Go(func() { pipeLines(outR, log.With("stream", "stdout"), nil) })
	readers.Go(func() { pipeLines(errR, log.With("stream", "stderr"), &tail) })

	// Register only now, so that every instance Close sees has a pid to signal.
	// An instance that loses the race with Close stops itself.
	in.rt.mu.Lock()
	closed := in.rt.closed
	if !closed {
		in.rt.instances[in] = struct{}{}
	}
	in.rt.mu.Unlock()
	if closed {
		in.mu.Lock()
		in.stopping = "gateway shutting down"
		in.signalLocked(syscall.SIGKILL)
		in.mu.Unlock()
	}
	log.Debug("instance started", "pid", in.pid, "addr", in.addr)
	started <- nil

	waitExited(in.pid)
	in.mu.Lock()
	// The leader has exited but is not reaped, so its pid still names its group:
	// kill what is left of the group before the pid can be reused.
	in.signalLocked(syscall.SIGKILL)
	_ = cmd.Wait() // an exit status other than 0 is an error; state says it all
	in.reaped = true
	stopping := in.stopping
	in.mu.Unlock()
	runtime.UnlockOSThread()

	deadline := time.Now().Add(drainGrace)
	for _, f := range []*os.File{outR, errR} {
		if err := f.SetReadDeadline(deadline); err != nil {
			f.Close() // not pollable: closing is the only way to stop the reader
		}
	}
	readers.Wait()
	closeAll(outR, errR)

	in.state = cmd.ProcessState
	in.tail = tail.lines()
	gone := &activator.GoneError{Instance: in.name, Reason: in.exitSummary()}
	if stopping != "" {
		gone.Reason = "stopped: " + stopping
	}
	log.Info("instance gone", "reason", gone.Reason)
	in.rt.release(in)
	in.finish(gone)
}

// waitExited blocks until process pid has exited, without reaping it (WNOWAIT), so
// that its pid and process group id stay reserved while its group is killed.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return // on any other error, cmd.Wait reports what there is to know
		}
	}
}

// pipeLines logs each line read from r as one record, until r ends. If keep is not
// nil it also remembers the last lines. Lines longer than maxLine are cut rather
// than allowed to stop the reader: a reader that stops leaves the child blocked on
// a full pipe.
func pipeLines(r *os.File, log *slog.Logger, keep *lineRing) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		cut := errors.Is(err, bufio.ErrBufferFull)
		if text := string(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))); text != "" {
			if cut {
				log.LogAttrs(context.Background(), slog.LevelInfo, text, slog.Bool("truncated", true))
			} else {
				log.LogAttrs(context.Background(), slog.LevelInfo, text)
			}
			if keep != nil {
				keep.add(text)
			}
		}
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of a cut line
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return
		}
	}
}

// lineRing keeps the last tailLines lines added to it, each cut to tailLineMax.
type lineRing struct {
	buf [tailLines]string
	n   int
}

func (l *lineRing) add(s string) {
	if len(s) > tailLineMax {
		s = strings.ToValidUTF8(s[:tailLineMax], "") + "…"
	}
	l.buf[l.n%len(l.buf)] = s
	l.n++
}

func (l *lineRing) lines() []string {
	var out []string
	for i := max(0, l.n-len(l.buf)); i < l.n; i++ {
		out = append(out, l.buf[i%len(l.buf)])
	}
	return out
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
