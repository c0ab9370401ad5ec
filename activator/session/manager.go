package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
)

// Runtime is what the manager needs of a runtime: start an instance, stop one.
type Runtime interface {
	Start(ctx context.Context, spec activator.Spec) (activator.Instance, error)
	Stop(ctx context.Context, inst activator.Instance, reason string) error
}

// Config tunes the manager.
type Config struct {
	// ActivationTimeout caps a cold start (TETHER_ACTIVATION_TIMEOUT).
	ActivationTimeout time.Duration
	// MaxInstances caps live and starting instances (TETHER_MAX_INSTANCES); 0 is
	// no cap.
	MaxInstances int
	// StopTimeout bounds one call to stop an instance.
	StopTimeout time.Duration
	// Observer, if not nil, hears about activations and ends (metrics).
	Observer Observer
	Log      *slog.Logger
}

// Observer hears what the manager does. Its methods must not block.
type Observer interface {
	// Activated reports a cold start that gave s its instance.
	Activated(s *Session)
	// ActivationFailed reports a cold start that failed with err.
	ActivationFailed(err error, a Activation)
	// Ended reports a session that ended, and why.
	Ended(s *Session, cause Cause)
}

// Cause says why a session ended, in a word fit for a metric label.
type Cause string

// The causes of a session's end.
const (
	CauseIdle         Cause = "idle"          // no open stream for its idle timeout
	CauseLifetime     Cause = "max_lifetime"  // TETHER_MAX_LIFETIME
	CauseInstanceGone Cause = "instance_gone" // the instance exited, crashed or was deleted
	CauseAbandoned    Cause = "abandoned"     // its client left before it received the token
	CauseShutdown     Cause = "shutdown"      // the gateway stopped
)

type nopObserver struct{}

func (nopObserver) Activated(*Session)                 {}
func (nopObserver) ActivationFailed(error, Activation) {}
func (nopObserver) Ended(*Session, Cause)              {}

// Manager keeps the table of live sessions and starts their instances.
type Manager struct {
	rt  Runtime
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	byID     map[string]*Session
	starting int
	closed   bool
	// stopping counts instances being stopped, and stopsDone is closed whenever
	// it is zero. A WaitGroup cannot do this: a session may end, and its stop
	// begin from zero, on any goroutine while Close waits.
	stopping  int
	stopsDone chan struct{}
	// bytes of sessions that have ended, so that totals never go down.
	endedIn, endedOut atomic.Uint64
	quit              chan struct{} // closed by Leave: stop watching instances
}

// New returns a manager that starts instances with rt.
func New(rt Runtime, cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	done := make(chan struct{})
	close(done)
	return &Manager{rt: rt, cfg: cfg, log: cfg.Log, byID: make(map[string]*Session), quit: make(chan struct{}), stopsDone: done}
}

// Activate starts an instance for a new session and returns the session once
// the instance is ready. The wait ends at the earliest of ctx's end and
// ActivationTimeout. observe, if not nil, hears each phase as it is reached; it
// must not block.
//
// On any error nothing is left behind: the runtime removes what it created.
func (m *Manager) Activate(ctx context.Context, req hints.Request, peer string, observe func(activator.Phase, string)) (*Session, error) {
	now := time.Now()
	s := newSession(peer, now)
	s.Size, s.IdleTimeout = req.Size, req.IdleTimeout
	s.Activation.Start = now

	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return nil, activator.ErrShuttingDown
	case m.cfg.MaxInstances > 0 && len(m.byID)+m.starting >= m.cfg.MaxInstances:
		m.mu.Unlock()
		err := &activator.CapacityError{Reason: "the gateway's cap (TETHER_MAX_INSTANCES) of " +
			strconv.Itoa(m.cfg.MaxInstances) + " running or starting is reached"}
		m.cfg.Observer.ActivationFailed(err, s.Activation)
		return nil, err
	}
	m.starting++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.starting--
		m.mu.Unlock()
	}()

	var pmu sync.Mutex
	spec := activator.Spec{
		Session:     s.ID,
		TokenHash:   s.TokenHash,
		Size:        s.Size,
		IdleTimeout: s.IdleTimeout,
		Observe: func(p activator.Phase, detail string) {
			pmu.Lock()
			ph := &s.Activation.Phases
			if n := len(*ph); n > 0 && (*ph)[n-1].Phase == p {
				// Same phase, new detail: keep when it was reached, say what it is now.
				(*ph)[n-1].Detail = detail
			} else {
				*ph = append(*ph, PhaseTime{Phase: p, At: time.Now(), Detail: detail})
			}
			pmu.Unlock()
			if observe != nil {
				observe(p, detail)
			}
		},
	}
	log := m.log.With("session", s.ID)
	actx, cancel := context.WithTimeoutCause(ctx, m.cfg.ActivationTimeout, errActivationTimeout)
	defer cancel()
	inst, err := m.rt.Start(actx, spec)
	if err != nil {
		if context.Cause(actx) == errActivationTimeout && ctx.Err() == nil {
			pmu.Lock()
			te := &activator.TimeoutError{After: m.cfg.ActivationTimeout}
			if n := len(s.Activation.Phases); n > 0 {
				te.Phase, te.Detail = s.Activation.Phases[n-1].Phase, s.Activation.Phases[n-1].Detail
			}
			pmu.Unlock()
			err = te
		}
		log.Info("activation failed", "size", s.Size.String(), "err", err)
		pmu.Lock()
		a := s.Activation
		a.Phases = append([]PhaseTime(nil), a.Phases...)
		pmu.Unlock()
		m.cfg.Observer.ActivationFailed(err, a)
		return nil, err
	}
	s.Instance = inst

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.stop(s, "gateway is shutting down")
		return nil, activator.ErrShuttingDown
	}
	m.byID[s.ID] = s
	m.mu.Unlock()
	m.cfg.Observer.Activated(s)
	go m.watch(s)
	log.Info("session started", "instance", inst.Name(), "size", s.Size.String(),
		"idle_timeout", s.IdleTimeout, "cold_start", time.Since(now).Round(time.Microsecond))
	return s, nil
}

var errActivationTimeout = errors.New("activation timeout")

// watch ends the session when its instance goes away by itself.
func (m *Manager) watch(s *Session) {
	select {
	case <-s.Instance.Done():
		err := s.Instance.Err()
		if err == nil {
			err = &activator.GoneError{Instance: s.Instance.Name(), Reason: "instance exited"}
		}
		m.end(s, err, err.Error(), CauseInstanceGone, false)
	case <-s.Done():
	case <-m.quit:
	}
}

// Attach returns the live session a token names, for a client that reconnects.
func (m *Manager) Attach(token string) (*Session, error) {
	id, ok := tokenID(token)
	if !ok {
		return nil, activator.ErrSessionNotFound
	}
	m.mu.Lock()
	s := m.byID[id]
	m.mu.Unlock()
	if s == nil || !hashMatches(token, s.TokenHash) || s.Err() != nil {
		return nil, activator.ErrSessionNotFound
	}
	return s, nil
}

// Sessions lists the live sessions.
func (m *Manager) Sessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.byID))
	for _, s := range m.byID {
		out = append(out, s)
	}
	return out
}

// ReapIdle ends s if it has no open stream, atomically with streams opening. It
// reports whether it did.
func (m *Manager) ReapIdle(s *Session, reason string) bool {
	if !s.endIfIdle() {
		return false
	}
	m.end(s, &activator.GoneError{Instance: s.Instance.Name(), Reason: reason}, reason, CauseIdle, true)
	return true
}

// End ends s now, whatever is open: its clients are told reason, and its
// instance is stopped.
func (m *Manager) End(s *Session, cause Cause, reason string) {
	m.end(s, &activator.GoneError{Instance: s.Instance.Name(), Reason: reason}, reason, cause, false)
}

// end removes s from the table, tells its watchers err, and stops its instance,
// telling the runtime reason.
func (m *Manager) end(s *Session, err error, reason string, cause Cause, marked bool) {
	if !marked {
		s.markEnded()
	}
	m.mu.Lock()
	if m.byID[s.ID] != s {
		m.mu.Unlock()
		return
	}
	delete(m.byID, s.ID)
	m.mu.Unlock()
	m.log.Info("session ended", "session", s.ID, "instance", s.Instance.Name(), "cause", string(cause), "reason", err.Error(),
		"age", time.Since(s.Created).Round(time.Millisecond))
	// Counted before its clients hear of it, so that a client told its session
	// has ended finds it in the metrics.
	m.cfg.Observer.Ended(s, cause)
	s.finish(err)
	m.endedIn.Add(s.BytesIn.Load())
	m.endedOut.Add(s.BytesOut.Load())
	m.stop(s, reason)
}

// stop stops the instance in the background; Close waits for it.
func (m *Manager) stop(s *Session, reason string) {
	m.mu.Lock()
	if m.stopping == 0 {
		m.stopsDone = make(chan struct{})
	}
	m.stopping++
	m.mu.Unlock()
	go func() {
		defer func() {
			m.mu.Lock()
			if m.stopping--; m.stopping == 0 {
				close(m.stopsDone)
			}
			m.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StopTimeout)
		defer cancel()
		if err := m.rt.Stop(ctx, s.Instance, reason); err != nil {
			m.log.Warn("stopping instance failed", "session", s.ID, "instance", s.Instance.Name(), "err", err)
		}
	}()
}

// Close ends every session with reason and waits until their instances have
// stopped or ctx ends. Activations that finish later are stopped at once.
func (m *Manager) Close(ctx context.Context, reason string) error {
	m.mu.Lock()
	m.closed = true
	ss := make([]*Session, 0, len(m.byID))
	for _, s := range m.byID {
		ss = append(ss, s)
	}
	m.mu.Unlock()
	for _, s := range ss {
		m.End(s, CauseShutdown, reason)
	}
	return m.waitStops(ctx)
}

// Adopt takes over the session of an instance that outlived the previous
// gateway. Its token re-attaches, and its idle clock starts now: a restart
// neither leaks the instance nor cuts a client that comes back.
func (m *Manager) Adopt(sv activator.Survivor) *Session {
	now := time.Now()
	s := &Session{
		ID:          sv.Spec.Session,
		TokenHash:   sv.Spec.TokenHash,
		Instance:    sv.Instance,
		Size:        sv.Spec.Size,
		IdleTimeout: sv.Spec.IdleTimeout,
		Peer:        "adopted",
		Created:     sv.Created,
		ended:       make(chan struct{}),
	}
	s.idleSince.Store(now.UnixNano())
	m.mu.Lock()
	if old := m.byID[s.ID]; old != nil {
		m.mu.Unlock()
		return old
	}
	m.byID[s.ID] = s
	m.mu.Unlock()
	go m.watch(s)
	m.log.Info("session adopted", "session", s.ID, "instance", s.Instance.Name(), "size", s.Size.String(), "idle_timeout", s.IdleTimeout)
	return s
}

// Leave closes the manager but leaves every live instance running, for a runtime
// whose instances outlive the gateway (pods): the next gateway adopts them.
// Instances of sessions that already ended are still stopped: Leave waits for
// those stops until ctx ends.
func (m *Manager) Leave(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.quit)
	}
	m.mu.Unlock()
	return m.waitStops(ctx)
}

func (m *Manager) waitStops(ctx context.Context) error {
	m.mu.Lock()
	done := m.stopsDone
	m.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("instances still stopping: %w", ctx.Err())
	}
}

// Bytes are the payload bytes carried for every session so far: in is client to
// instance, out the way back.
func (m *Manager) Bytes() (in, out uint64) {
	in, out = m.endedIn.Load(), m.endedOut.Load()
	for _, s := range m.Sessions() {
		in += s.BytesIn.Load()
		out += s.BytesOut.Load()
	}
	return in, out
}

// Starting is how many activations are under way.
func (m *Manager) Starting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.starting
}

// SetObserver sets the observer. Call it before the first Activate or Adopt.
func (m *Manager) SetObserver(o Observer) {
	if o == nil {
		o = nopObserver{}
	}
	m.cfg.Observer = o
}
