package reaper_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/reaper"
)

// memRuntime starts instances that exist only in memory.
type memRuntime struct {
	mu      sync.Mutex
	stopped map[string]string // instance name → reason
}

type memInstance struct {
	name string
	done chan struct{}
	err  error
}

func (i *memInstance) Name() string          { return i.name }
func (i *memInstance) Addr() string          { return "127.0.0.1:1" }
func (i *memInstance) Done() <-chan struct{} { return i.done }
func (i *memInstance) Err() error            { return i.err }

func (r *memRuntime) Start(ctx context.Context, spec activator.Spec) (activator.Instance, error) {
	return &memInstance{name: "mem-" + spec.Session, done: make(chan struct{})}, nil
}

func (r *memRuntime) Stop(ctx context.Context, inst activator.Instance, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped == nil {
		r.stopped = make(map[string]string)
	}
	i := inst.(*memInstance)
	if _, ok := r.stopped[i.name]; !ok {
		r.stopped[i.name] = reason
		i.err = &activator.GoneError{Instance: i.name, Reason: reason}
		close(i.done)
	}
	return nil
}

func (r *memRuntime) reason(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.stopped[name]
	return s, ok
}

// setup runs a manager and a reaper in the test's bubble.
func setup(t *testing.T, cfg reaper.Config) (*session.Manager, *memRuntime) {
	rt := &memRuntime{}
	m := session.New(rt, session.Config{ActivationTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	r := reaper.New(m, cfg)
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		m.Close(context.Background(), "test over")
	})
	return m, rt
}

func activate(t *testing.T, m *session.Manager, idle time.Duration) *session.Session {
	t.Helper()
	s, err := m.Activate(context.Background(), hints.Request{IdleTimeout: idle}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdleSessionIsReapedAfterItsTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rt := setup(t, reaper.Config{Interval: time.Second})
		s := activate(t, m, time.Minute)
		start := time.Now()

		time.Sleep(59 * time.Second)
		synctest.Wait()
		if _, gone := rt.reason(s.Instance.Name()); gone {
			t.Fatal("reaped before its idle timeout")
		}
		<-s.Done()
		if waited := time.Since(start); waited < time.Minute || waited > time.Minute+time.Second {
			t.Fatalf("reaped after %s, want between 1m and 1m1s", waited)
		}
		synctest.Wait()
		reason, _ := rt.reason(s.Instance.Name())
		if !strings.Contains(reason, "idle for 1m0s") {
			t.Fatalf("reason %q", reason)
		}
		if _, err := m.Attach(s.Token()); !errors.Is(err, activator.ErrSessionNotFound) {
			t.Fatalf("token after reap: %v", err)
		}
		if s.OpenStream() {
			t.Fatal("a reaped session took a stream")
		}
	})
}

// TestQuietOpenStreamKeepsSession is case B22: a stream that sends nothing for
// far longer than the idle timeout still keeps its instance.
func TestQuietOpenStreamKeepsSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rt := setup(t, reaper.Config{Interval: time.Second})
		s := activate(t, m, 5*time.Minute)
		if !s.OpenStream() {
			t.Fatal("stream refused")
		}
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		if _, gone := rt.reason(s.Instance.Name()); gone {
			t.Fatal("reaped with a stream open")
		}
		// The idle clock starts when the last stream ends, not when it began.
		s.CloseStream(time.Now())
		closed := time.Now()
		<-s.Done()
		if waited := time.Since(closed); waited < 5*time.Minute || waited > 5*time.Minute+time.Second {
			t.Fatalf("reaped %s after the stream closed", waited)
		}
	})
}

func TestActivityResetsIdleClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rt := setup(t, reaper.Config{Interval: time.Second})
		s := activate(t, m, time.Minute)
		for range 10 {
			time.Sleep(50 * time.Second)
			if !s.OpenStream() {
				t.Fatal("stream refused on a live session")
			}
			s.CloseStream(time.Now())
		}
		synctest.Wait()
		if _, gone := rt.reason(s.Instance.Name()); gone {
			t.Fatal("reaped while calls kept arriving")
		}
	})
}

func TestPerSessionIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := setup(t, reaper.Config{Interval: time.Second})
		short := activate(t, m, 10*time.Second)
		long := activate(t, m, time.Hour)
		<-short.Done()
		select {
		case <-long.Done():
			t.Fatal("the long session went with the short one")
		default:
		}
	})
}

// TestMaxLifetimeEndsBusySession checks the hard cap ends a session even with a
// stream open, and says why.
func TestMaxLifetimeEndsBusySession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := setup(t, reaper.Config{Interval: time.Second, MaxLifetime: time.Hour})
		s := activate(t, m, 24*time.Hour)
		s.OpenStream()
		start := time.Now()
		<-s.Done()
		if age := time.Since(start); age < time.Hour || age > time.Hour+time.Second {
			t.Fatalf("ended at %s", age)
		}
		if err := s.Err(); err == nil || !strings.Contains(err.Error(), "TETHER_MAX_LIFETIME") {
			t.Fatalf("reason %v", err)
		}
	})
}

// TestReapIsAtomicWithStreamOpen races a stream opening against an idle reap:
// exactly one wins. A stream is either counted on a live session or refused,
// never counted on a session that ended.
func TestReapIsAtomicWithStreamOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := setup(t, reaper.Config{Interval: time.Hour})
		for range 200 {
			s := activate(t, m, time.Second)
			var opened bool
			done := make(chan struct{})
			go func() { opened = s.OpenStream(); close(done) }()
			reaped := m.ReapIdle(s, "race")
			<-done
			if opened == reaped {
				t.Fatalf("opened=%v reaped=%v: exactly one must win", opened, reaped)
			}
			if opened {
				s.CloseStream(time.Now())
				m.End(s, session.CauseShutdown, "next round")
			}
		}
	})
}
