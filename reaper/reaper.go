// Package reaper ends sessions nobody uses, and sessions that have lived too long.
//
// A session is idle when it has had no open stream for its idle timeout
// (TETHER_IDLE_TIMEOUT, or the client's x-tether-idle-timeout within bounds).
// Bytes only move on open streams, so "no open stream" also means "no bytes";
// a stream that stays open and quiet for hours is activity, because a busy job
// often is exactly that (case B22). HTTP/2 PINGs and TCP keepalives are not
// streams and never count (case B23). TETHER_MAX_LIFETIME, when set, ends a
// session at that age whatever it is doing.
//
// An idle session is ended atomically with streams opening on it: either a new
// stream is counted first and the session lives, or the session ends first and
// the stream is refused. The clients of an ended session get GOAWAY, and a stream
// still open (only possible under the lifetime cap) gets UNAVAILABLE with the
// reason; the session package and the gateway carry that out.
//
// The reaper looks every TETHER_REAP_INTERVAL, so a session is ended between its
// idle timeout and one interval later.
package reaper

import (
	"context"
	"log/slog"
	"time"

	"github.com/tetherhq/tether/activator/session"
)

// Sessions is what the reaper needs of the session table.
type Sessions interface {
	Sessions() []*session.Session
	// ReapIdle ends s if no stream is open on it, and reports whether it did.
	ReapIdle(s *session.Session, reason string) bool
	// End ends s whatever is open on it.
	End(s *session.Session, cause session.Cause, reason string)
}

// Config tunes the reaper.
type Config struct {
	// Interval is how often sessions are checked (TETHER_REAP_INTERVAL).
	Interval time.Duration
	// MaxLifetime caps a session's age; 0 disables the cap (TETHER_MAX_LIFETIME).
	MaxLifetime time.Duration
	Log         *slog.Logger
}

// Reaper ends idle and expired sessions.
type Reaper struct {
	sessions Sessions
	cfg      Config
}

// New returns a reaper over sessions.
func New(sessions Sessions, cfg Config) *Reaper {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	return &Reaper{sessions: sessions, cfg: cfg}
}

// Run checks sessions every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			r.Sweep(now)
		}
	}
}

// Sweep ends every session that is idle or too old at now, and returns how many
// it ended.
func (r *Reaper) Sweep(now time.Time) int {
	n := 0
	for _, s := range r.sessions.Sessions() {
		if reason, ok := r.expired(s, now); ok {
			r.sessions.End(s, session.CauseLifetime, reason)
			r.cfg.Log.Info("reaped", "session", s.ID, "reason", reason)
			n++
			continue
		}
		if idle := s.IdleFor(now); idle >= s.IdleTimeout && s.IdleTimeout > 0 {
			reason := "idle for " + idle.Round(time.Second).String() + " (idle timeout " + s.IdleTimeout.String() + ")"
			if r.sessions.ReapIdle(s, reason) {
				r.cfg.Log.Info("reaped", "session", s.ID, "reason", reason)
				n++
			}
		}
	}
	return n
}

func (r *Reaper) expired(s *session.Session, now time.Time) (string, bool) {
	if r.cfg.MaxLifetime <= 0 || now.Sub(s.Created) < r.cfg.MaxLifetime {
		return "", false
	}
	return "reached the maximum lifetime of " + r.cfg.MaxLifetime.String() + " (TETHER_MAX_LIFETIME)", true
}
