package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tetherhq/tether/activator"
)

// DefaultStopGrace is how long Stop waits after SIGTERM when Config.StopGrace is 0.
const DefaultStopGrace = 5 * time.Second

// Readiness probe backoff. An instance on loopback usually binds its port within
// milliseconds of exec, so a fixed half-second poll would dominate the cold start;
// a loopback connect that is refused costs a few microseconds, so probing this
// often is cheap. The gap between probes is what a ready instance waits to be
// found, so through the first probeFastFor, when most instances come up, probes
// are probeFastGap apart. Go's timers cannot wait that little: an idle runtime
// rounds a sub-millisecond wait up to a whole millisecond, which doubled the
// time from "listening" to "first request there". So the fast gaps are a
// nanosleep on the probing goroutine's thread. After probeFastFor the gap grows
// on ordinary timers up to probeMaxDelay.
const (
	probeFastGap  = 100 * time.Microsecond
	probeFastFor  = 250 * time.Millisecond
	probeMaxDelay = 5 * time.Millisecond
)

// Config configures the runtime. The caller reads it from the environment; this
// package reads nothing from the environment itself.
type Config struct {
	// Command is the instance's command line (TETHER_LOCAL_COMMAND), split into
	// words as described in the package documentation. "{port}" in any argument
	// after the first is replaced by the instance's port.
	Command string
	// StopGrace is how long Stop waits between SIGTERM and SIGKILL.
	// 0 means DefaultStopGrace.
	StopGrace time.Duration
	// Env is the base environment of every instance, usually os.Environ(). nil
	// means an empty base, not the gateway's environment.
	Env []string
	// Host is the loopback IP instances listen on. "" means 127.0.0.1. It must be
	// a loopback address: an instance reachable from elsewhere would let clients
	// bypass the gateway.
	Host string
}

// Prober says whether an instance at addr is ready. A nil error means ready. It is
// called again until it says so, so it should answer quickly and honour ctx.
type Prober interface {
	Probe(ctx context.Context, addr string) error
}

// tcpProbe calls an instance ready once it accepts TCP connections.
type tcpProbe struct{}

func (tcpProbe) Probe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Runtime starts one local process per session. It is safe for concurrent use.
type Runtime struct {
	path  string   // argv[0] resolved through PATH
	argv  []string // as the operator wrote it; argv[0] is what the child sees
	name  string   // base name of argv[0], the prefix of instance names
	host  string
	grace time.Duration
	env   []string
	log   *slog.Logger
	probe Prober

	mu        sync.Mutex
	closed    bool
	instances map[*instance]struct{} // every instance from exec until it has been reaped
	ports     map[int]struct{}       // ports handed to instances that have not been reaped
	starting  sync.WaitGroup         // Start calls in flight, so that Close can wait for them
}

// New checks cfg and returns a runtime. probe nil means "ready once the port accepts
// TCP connections"; log nil discards the instances' output.
func New(cfg Config, log *slog.Logger, probe Prober) (*Runtime, error) {
	argv, err := splitWords(cfg.Command)
	if err != nil {
		return nil, fmt.Errorf("TETHER_LOCAL_COMMAND: %w", err)
	}
	if len(argv) == 0 {
		return nil, errors.New("TETHER_LOCAL_COMMAND: the command is empty")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("TETHER_LOCAL_COMMAND: %w", err)
	}
	// An absolute path keeps working if the gateway changes its directory later.
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("TETHER_LOCAL_COMMAND: %w", err)
	}

	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("local runtime: host %q is not a loopback IP address", host)
	}
	grace := cfg.StopGrace
	switch {
	case grace < 0:
		return nil, fmt.Errorf("local runtime: stop grace %s is negative", grace)
	case grace == 0:
		grace = DefaultStopGrace
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if probe == nil {
		probe = tcpProbe{}
	}
	return &Runtime{
		path:      path,
		argv:      argv,
		name:      filepath.Base(argv[0]),
		host:      host,
		grace:     grace,
		env:       slices.Clone(cfg.Env),
		log:       log,
		probe:     probe,
		instances: make(map[*instance]struct{}),
		ports:     make(map[int]struct{}),
	}, nil
}

// Start starts a process for spec.Session and returns once it is ready. It fails
// with a *activator.StartError as soon as the process exits before that, and with
// ctx.Err() when ctx ends first, after stopping the process as Stop does (SIGTERM,
// SIGKILL after the grace). Either way the process has been reaped when it returns.
func (r *Runtime) Start(ctx context.Context, spec activator.Spec) (activator.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, activator.ErrShuttingDown
	}
	r.starting.Add(1)
	r.mu.Unlock()
	defer r.starting.Done()

	port, err := r.reservePort()
	if err != nil {
		return nil, &activator.RuntimeError{Op: "find a free port", Err: err}
	}
	spec.Report(activator.PhaseRequested, r.name)
	spec.Report(activator.PhaseScheduled, "local")

	in, err := r.spawn(spec, port)
	if err != nil {
		return nil, err
	}
	spec.Report(activator.PhaseStarted, "pid "+strconv.Itoa(in.pid))

	if err := r.awaitReady(ctx, in); err != nil {
		return nil, err
	}
	spec.Report(activator.PhaseReady, in.addr)
	return in, nil
}

// awaitReady probes in until it is ready, its process exits, or ctx ends. On error
// the process has been reaped.
func (r *Runtime) awaitReady(ctx context.Context, in *instance) error {
	ready := r.probeUntilReady(ctx, in)
	if in.stopReason() != "" {
		// Only Close can stop an instance that Start has not returned yet; the
		// probe may have passed just before it did.
		<-in.Done()
		return activator.ErrShuttingDown
	}
	select {
	case <-in.Done():
		// Also after a passed probe: what answered may have been another process
		// that took the port first (see the package documentation).
		return &activator.StartError{Instance: in.name, Reason: in.exitSummary()}
	default:
	}
	if ready {
		return nil
	}
	// ctx ended. The process has served no one yet, but it may be writing state
	// of its own, so it still gets SIGTERM and its grace.
	reason := "not ready before the activation deadline"
	if errors.Is(ctx.Err(), context.Canceled) {
		reason = "activation cancelled before it was ready: the client went away or the gateway is stopping"
	}
	in.stop(context.WithoutCancel(ctx), reason)
	return ctx.Err()
}

// probeUntilReady calls the prober until it accepts in, and reports whether it did
// before ctx ended or the process exited.
func (r *Runtime) probeUntilReady(ctx context.Context, in *instance) bool {
	// The probe must stop the moment the process exits, even in the middle of a
	// slow Probe call, so its context ends with the instance too.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(in.life, cancel)()

	fastUntil := time.Now().Add(probeFastFor)
	for {
		if r.probe.Probe(pctx, in.addr) == nil {
			return true
		}
		if pctx.Err() != nil {
			return false
		}
		if time.Now().After(fastUntil) {
			break
		}
		ts := syscall.NsecToTimespec(probeFastGap.Nanoseconds())
		syscall.Nanosleep(&ts, nil)
	}
	timer := time.NewTimer(time.Millisecond)
	defer timer.Stop()
	for delay := time.Millisecond; ; delay = min(delay*3/2, probeMaxDelay) {
		select {
		case <-timer.C:
		case <-pctx.Done():
			return false
		}
		if r.probe.Probe(pctx, in.addr) == nil {
			return true
		}
		timer.Reset(delay)
	}
}

// Stop stops inst: SIGTERM to its process group, SIGKILL after the stop grace or as
// soon as ctx ends, whichever is first. It returns once the process has been
// reaped. Stopping an instance that has already exited does nothing.
func (r *Runtime) Stop(ctx context.Context, inst activator.Instance, reason string) error {
	in, ok := inst.(*instance)
	if !ok || in.rt != r {
		return fmt.Errorf("local runtime: %T %v was not started by this runtime", inst, inst)
	}
	in.stop(ctx, reason)
	return nil
}

// Close stops every instance at once, as Stop does, refuses further Starts with
// activator.ErrShuttingDown, and returns when every process has been reaped and
// every Start has returned.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	live := slices.Collect(maps.Keys(r.instances))
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, in := range live {
		wg.Go(func() { in.stop(ctx, "gateway shutting down") })
	}
	wg.Wait()
	r.starting.Wait()
	return nil
}

// reservePort finds a free port on r.host that no live instance of r holds. The
// kernel may hand out a port again as soon as the probing socket is closed, long
// before the instance that got it binds it, so r remembers its own.
func (r *Runtime) reservePort() (int, error) {
	const tries = 16
	for range tries {
		l, err := net.Listen("tcp", net.JoinHostPort(r.host, "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, err
		}
		r.mu.Lock()
		_, taken := r.ports[port]
		if !taken {
			r.ports[port] = struct{}{}
		}
		r.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s after %d tries", r.host, tries)
}

// release forgets in once its process has been reaped.
func (r *Runtime) release(in *instance) {
	r.mu.Lock()
	delete(r.instances, in)
	delete(r.ports, in.port)
	r.mu.Unlock()
}

// command builds the exec.Cmd for one instance, without its I/O and process
// attributes.
func (r *Runtime) command(spec activator.Spec, port int) *exec.Cmd {
	p := strconv.Itoa(port)
	args := slices.Clone(r.argv)
	for i := 1; i < len(args); i++ {
		args[i] = strings.ReplaceAll(args[i], "{port}", p)
	}
	env := slices.Concat(r.env, []string{"PORT=" + p}, spec.Size.Env(),
		[]string{activator.EnvSession + "=" + spec.Session})
	// exec.Cmd drops earlier duplicates of a name, so these override r.env.
	return &exec.Cmd{Path: r.path, Args: args, Env: env}
}
