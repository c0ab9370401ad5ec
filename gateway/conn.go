package gateway

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/gateway/relay"
)

// clientConn is the gateway's state for one client connection: the session it is
// pinned to, or the activation that will pin it. It is the relay.Handler for that
// connection, so OpenStream runs on the connection's read goroutine.
type clientConn struct {
	g    *Server
	d    *relay.Downstream
	peer string
	// ctx lives as long as the connection: an activation outlives a request
	// that gave up (case B20), but not the connection that would use it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pin     *pin
	owner   bool // this connection's activation created the session
	unwatch func()
	act     *activation

	// delivered is set once a response carrying the session token was written.
	// A session whose token never reached its client can never be re-attached.
	delivered atomic.Bool
}

// pin is a session and the connections to its instance.
type pin struct {
	s    *session.Session
	pool *relay.Pool
}

// activation is a cold start in progress for one connection, and the streams
// waiting for it.
type activation struct {
	waiters map[*relay.Stream]*time.Timer
	last    atomic.Pointer[string] // last phase seen, for deadline messages
}

func (cc *clientConn) OpenStream(st *relay.Stream) {
	cc.mu.Lock()
	p := cc.pin
	cc.mu.Unlock()
	if p != nil {
		if err := cc.sameSession(p, st); err != nil {
			cc.fail(st, err)
			return
		}
		cc.forward(p, st, nil)
		return
	}
	req, err := hints.Parse(st.Hints(), cc.g.cfg.Bounds)
	if err != nil {
		cc.fail(st, err)
		return
	}
	if req.Token != "" {
		s, err := cc.g.sessions.Attach(req.Token)
		if err != nil {
			cc.fail(st, err)
			return
		}
		s.Touch(time.Now())
		cc.forward(cc.pinTo(s, false), st, nil)
		return
	}
	cc.mu.Lock()
	if p := cc.pin; p != nil {
		cc.mu.Unlock()
		cc.forward(p, st, nil)
		return
	}
	if !st.GRPC() {
		// A port scanner or a browser must not cost an instance for the idle
		// timeout. Pinned connections pass anything on: the instance decides.
		cc.mu.Unlock()
		cc.fail(st, errNotGRPC)
		return
	}
	a := cc.act
	if a == nil {
		a = &activation{waiters: make(map[*relay.Stream]*time.Timer)}
		cc.act = a
		go cc.activate(a, req)
	}
	cc.hold(a, st)
	cc.mu.Unlock()
}

// sameSession checks a token sent on a pinned connection: it must be the pinned
// session's own. Hints are otherwise ignored once a connection is pinned.
func (cc *clientConn) sameSession(p *pin, st *relay.Stream) error {
	for _, h := range st.Hints() {
		if h.Name != activator.HeaderSession {
			continue
		}
		s, err := cc.g.sessions.Attach(h.Value)
		if err != nil {
			return err
		}
		if s != p.s {
			return activator.ErrOtherSession
		}
	}
	return nil
}

// hold parks st until the activation ends, or its own grpc-timeout passes first.
// cc.mu is held.
func (cc *clientConn) hold(a *activation, st *relay.Stream) {
	var t *time.Timer
	if d := st.Timeout(); d > 0 {
		t = time.AfterFunc(d-time.Since(st.Opened()), func() {
			if cc.unhold(a, st) {
				msg := "deadline exceeded while waiting for the instance"
				if last := a.last.Load(); last != nil {
					msg += " (last phase: " + *last + ")"
				}
				st.Fail(codes.DeadlineExceeded, msg)
			}
		})
	}
	a.waiters[st] = t
	// A client that resets a held stream takes it out of the queue; its buffered
	// bytes are released by the relay and never forwarded (case B20).
	st.OnDone(func() { cc.unhold(a, st) })
}

// unhold takes st off the activation's queue. It reports whether st was on it.
func (cc *clientConn) unhold(a *activation, st *relay.Stream) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	t, ok := a.waiters[st]
	if !ok {
		return false
	}
	delete(a.waiters, st)
	if t != nil {
		t.Stop()
	}
	return true
}

// activate runs one cold start for the connection and releases its waiters.
func (cc *clientConn) activate(a *activation, req hints.Request) {
	observe := func(p activator.Phase, detail string) {
		s := string(p)
		if detail != "" {
			s += " (" + detail + ")"
		}
		a.last.Store(&s)
		cc.g.log.Debug("activation phase", "peer", cc.peer, "phase", string(p), "detail", detail)
	}
	s, err := cc.g.sessions.Activate(cc.ctx, req, cc.peer, observe)

	cc.mu.Lock()
	cc.act = nil
	ws := make([]*relay.Stream, 0, len(a.waiters))
	for st, t := range a.waiters {
		if t != nil {
			t.Stop()
		}
		ws = append(ws, st)
	}
	a.waiters = nil
	var p *pin
	if err == nil {
		switch {
		case cc.ctx.Err() != nil:
			err = context.Cause(cc.ctx)
		case cc.pin != nil:
			// A stream re-attached this connection to another session meanwhile.
			p = cc.pin
		default:
			p = cc.pinLocked(s, true)
		}
		if p == nil || p.s != s {
			cc.mu.Unlock()
			cc.g.sessions.End(s, session.CauseAbandoned, "client left before the session was handed out")
			cc.mu.Lock()
		}
	}
	cc.mu.Unlock()

	if err != nil {
		for _, st := range ws {
			cc.fail(st, err)
		}
		return
	}
	var extra []hpack.HeaderField
	if p.s == s {
		now := time.Now()
		extra = activationHeaders(s, now)
		if o := cc.g.cfg.Observer; o != nil && len(s.Activation.Phases) > 0 {
			o.Forwarded(now.Sub(s.Activation.Phases[len(s.Activation.Phases)-1].At))
		}
	}
	for _, st := range ws {
		cc.forward(p, st, extra)
	}
}

// activationHeaders tell the client what its cold start cost, phase by phase, in
// the Server-Timing syntax: each dur is the milliseconds since the phase before,
// ending with the forward of its held request at now.
func activationHeaders(s *session.Session, now time.Time) []hpack.HeaderField {
	a := s.Activation
	var b strings.Builder
	prev := a.Start
	phases := append(a.Phases[:len(a.Phases):len(a.Phases)], session.PhaseTime{Phase: activator.PhaseForwarded, At: now})
	for i, p := range phases {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(p.Phase))
		b.WriteString(";dur=")
		b.WriteString(strconv.FormatFloat(float64(p.At.Sub(prev).Microseconds())/1000, 'f', 3, 64))
		prev = p.At
	}
	wait := now.Sub(a.Start)
	return []hpack.HeaderField{
		{Name: activator.HeaderInstance, Value: s.Instance.Name()},
		{Name: activator.HeaderColdStart, Value: wait.String()},
		{Name: activator.HeaderPhases, Value: b.String()},
	}
}

// forward sends st to the pinned session's instance, counting it on the session.
func (cc *clientConn) forward(p *pin, st *relay.Stream, extra []hpack.HeaderField) {
	if cc.g.cfg.IdleIgnore[st.Path()] {
		// Health checks and the like are not use: a client that only probes must
		// not keep its instance forever (case B23). Such a stream is not counted,
		// so a reap may end it, with UNAVAILABLE like any other.
		if err := p.s.Err(); err != nil {
			cc.fail(st, err)
			return
		}
	} else if !p.s.OpenStream() {
		err := p.s.Err()
		if err == nil {
			err = activator.ErrSessionNotFound
		}
		cc.fail(st, err)
		return
	} else {
		st.OnDone(func() { p.s.CloseStream(time.Now()) })
	}
	st.Meter(&p.s.BytesIn, &p.s.BytesOut)
	if cc.owner && !cc.delivered.Load() {
		extra = append(extra, hpack.HeaderField{Name: activator.HeaderSession, Value: p.s.Token(), Sensitive: true})
		st.AddResponseHeaders(extra, func() { cc.delivered.Store(true) })
	} else if len(extra) > 0 {
		st.AddResponseHeaders(extra, nil)
	}
	p.pool.Forward(st)
}

func (cc *clientConn) fail(st *relay.Stream, err error) {
	code, msg := Status(err)
	st.Fail(code, msg)
}

func (cc *clientConn) pinTo(s *session.Session, owner bool) *pin {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pin != nil {
		return cc.pin
	}
	return cc.pinLocked(s, owner)
}

// pinLocked pins the connection to s. When s ends, its clients are told why:
// GOAWAY, and UNAVAILABLE with the reason on every open stream.
func (cc *clientConn) pinLocked(s *session.Session, owner bool) *pin {
	p := &pin{s: s, pool: cc.g.pool(s)}
	cc.pin, cc.owner = p, owner
	cc.unwatch = s.Watch(func(err error) {
		code, msg := Status(err)
		cc.d.Shutdown(code, msg)
	})
	return p
}

// closed runs once the connection is gone.
func (cc *clientConn) closed() {
	cc.cancel()
	cc.mu.Lock()
	p, owner, unwatch := cc.pin, cc.owner, cc.unwatch
	cc.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	if p != nil && owner && !cc.delivered.Load() {
		cc.g.sessions.End(p.s, session.CauseAbandoned, "client left before the session was handed out")
	}
}
