package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
	"github.com/tetherhq/tether/activator/session"
	"github.com/tetherhq/tether/gateway/relay"
)

// Sessions is what the gateway needs of the session table.
type Sessions interface {
	Activate(ctx context.Context, req hints.Request, peer string, observe func(activator.Phase, string)) (*session.Session, error)
	Attach(token string) (*session.Session, error)
	End(s *session.Session, cause session.Cause, reason string)
}

// Config tunes the gateway.
type Config struct {
	// TLS, when set, serves TLS with ALPN h2 (and http/1.1 for the HTTP/1 side);
	// otherwise the listener speaks h2c with prior knowledge.
	TLS *tls.Config
	// HandshakeTimeout bounds the TLS handshake and the client's HTTP/2 preface
	// on a new connection (TETHER_HANDSHAKE_TIMEOUT). Nothing bounds a
	// connection after that: streams last as long as their clients want.
	HandshakeTimeout time.Duration
	// KeepaliveIdle and KeepaliveTimeout find clients that vanished without
	// closing their connection (TETHER_KEEPALIVE_INTERVAL and
	// TETHER_KEEPALIVE_TIMEOUT): a client silent for KeepaliveIdle is sent a PING,
	// and its connection is closed if it still sends nothing for KeepaliveTimeout.
	// Otherwise a vanished client's quiet stream would hold its instance for
	// ever. 0 disables the keepalive.
	KeepaliveIdle    time.Duration
	KeepaliveTimeout time.Duration
	Bounds           hints.Bounds
	// IdleIgnore lists the methods (":path", such as
	// "/grpc.health.v1.Health/Check") whose calls do not count as activity
	// (TETHER_IDLE_IGNORE_METHODS).
	IdleIgnore map[string]bool
	Relay      *relay.Config
	// Observer, if not nil, hears the last phase of each cold start.
	Observer Observer
	Log      *slog.Logger
}

// Observer hears what only the gateway sees. Its methods must not block.
type Observer interface {
	// Forwarded reports a cold start's held requests leaving for the instance,
	// afterReady after the instance was ready.
	Forwarded(afterReady time.Duration)
}

// Server accepts client connections, pins each to a session, and relays its
// streams to the session's instance.
type Server struct {
	cfg      Config
	sessions Sessions
	log      *slog.Logger
	h1       *http.Server
	h1conns  chan net.Conn
	h1done   chan struct{}
	quit     chan struct{} // closed when Shutdown begins

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}
	pools     map[*session.Session]*relay.Pool
	draining  bool
	wg        sync.WaitGroup
	idle      chan struct{} // signalled when a connection closes during drain
}

// New returns a gateway that takes sessions from sessions.
func New(cfg Config, sessions Sessions) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Relay == nil {
		cfg.Relay = relay.Config{Log: cfg.Log}.WithDefaults()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	g := &Server{
		cfg:       cfg,
		sessions:  sessions,
		log:       cfg.Log,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*clientConn]struct{}),
		pools:     make(map[*session.Session]*relay.Pool),
		h1conns:   make(chan net.Conn),
		h1done:    make(chan struct{}),
		quit:      make(chan struct{}),
		idle:      make(chan struct{}, 1),
	}
	g.h1 = &http.Server{
		Handler: http.HandlerFunc(g.serveHTTP1),
		// HTTP/1 here only answers; nothing on it streams, so tight limits are safe.
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.HandshakeTimeout,
		WriteTimeout:      cfg.HandshakeTimeout,
		IdleTimeout:       cfg.HandshakeTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return g
}

// Serve accepts connections on lis until Shutdown. It returns nil after Shutdown.
func (g *Server) Serve(lis net.Listener) error {
	g.mu.Lock()
	if g.draining {
		g.mu.Unlock()
		lis.Close()
		return nil
	}
	g.listeners[lis] = struct{}{}
	first := len(g.listeners) == 1
	g.mu.Unlock()
	if first {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.h1.Serve(&chanListener{c: g.h1conns, done: g.h1done, addr: lis.Addr()})
		}()
		if g.cfg.KeepaliveIdle > 0 && g.cfg.KeepaliveTimeout > 0 {
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.keepalive()
			}()
		}
	}
	var backoff time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			g.mu.Lock()
			draining := g.draining
			g.mu.Unlock()
			if draining {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !acceptCanRetry(err) {
				return err
			}
			// Out of file descriptors or memory: the connections already served
			// must go on, and new ones wait until some close. Back off as
			// net/http does, so the accept loop does not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-g.quit:
				t.Stop()
			}
			continue
		}
		backoff = 0
		g.wg.Add(1)
		go g.serveConn(nc, g.wg.Done)
	}
}

// acceptCanRetry reports whether Accept failed for want of a resource that
// closing connections gives back, rather than because the listener is broken.
func acceptCanRetry(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// serveConn finds out what the client speaks and serves it, in the background
// once it is HTTP/2. It calls done when the connection has ended.
func (g *Server) serveConn(nc net.Conn, done func()) {
	cc := g.handshake(nc)
	if cc == nil {
		done()
		return
	}
	cc.d.Start(func(err error) {
		g.track(cc, false)
		cc.closed()
		if err != nil {
			g.log.Debug("connection ended", "peer", cc.peer, "err", err)
		}
		done()
	})
}

// handshake reads the TLS handshake and the client preface. It returns nil when
// the connection is not HTTP/2, after handing it on or closing it.
func (g *Server) handshake(nc net.Conn) *clientConn {
	nc.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	h2 := true
	if g.cfg.TLS != nil {
		tc := tls.Server(nc, g.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			g.log.Debug("tls handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
			nc.Close()
			return nil
		}
		h2 = tc.ConnectionState().NegotiatedProtocol == "h2"
		nc = tc
	}
	// Only the sniff reads through br: the relay copies what it read ahead into
	// its pooled buffer and drops br. Small, because every connection pays it.
	br := bufio.NewReaderSize(nc, 1<<10)
	if h2 {
		var err error
		if h2, err = hasPreface(br); err != nil {
			// Silence, or half a preface, until the handshake deadline: HTTP/1
			// would only wait for its own header timeout again.
			g.log.Debug("no preface", "peer", nc.RemoteAddr().String(), "err", err)
			nc.Close()
			return nil
		}
	}
	if !h2 {
		// An HTTP/1 client gets a quick, clear answer rather than a hang (case B12).
		nc.SetDeadline(time.Time{})
		select {
		case g.h1conns <- bufConn{nc, br}:
		case <-g.h1done:
			nc.Close()
		}
		return nil
	}
	br.Discard(len(http2.ClientPreface))
	nc.SetDeadline(time.Time{})

	ctx, cancel := context.WithCancel(context.Background())
	cc := &clientConn{g: g, peer: nc.RemoteAddr().String(), ctx: ctx, cancel: cancel}
	cc.d = relay.NewDownstream(nc, br, g.cfg.Relay, cc)
	if !g.track(cc, true) {
		cc.d.GoAway()
	}
	return cc
}

// keepalive checks every connection's liveness, often enough that a dead client
// is found within KeepaliveIdle + KeepaliveTimeout and a little more. One
// goroutine does it for all connections, so an idle connection costs no timer.
func (g *Server) keepalive() {
	t := time.NewTicker(min(g.cfg.KeepaliveIdle, g.cfg.KeepaliveTimeout) / 2)
	defer t.Stop()
	for {
		select {
		case <-g.quit:
			return
		case now := <-t.C:
			for _, cc := range g.connections() {
				cc.d.CheckAlive(now, g.cfg.KeepaliveIdle, g.cfg.KeepaliveTimeout)
			}
		}
	}
}

// hasPreface reads the client's first bytes and reports whether they are the
// HTTP/2 connection preface. It stops at the first byte that differs, so a short
// HTTP/1 request is recognised at once instead of waiting for 24 bytes.
func hasPreface(br *bufio.Reader) (bool, error) {
	for i := 1; i <= len(http2.ClientPreface); i++ {
		b, err := br.Peek(i)
		if err != nil {
			return false, err
		}
		if b[i-1] != http2.ClientPreface[i-1] {
			return false, nil
		}
	}
	return true, nil
}

func (g *Server) track(cc *clientConn, add bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if add {
		g.conns[cc] = struct{}{}
		return !g.draining
	}
	delete(g.conns, cc)
	if g.draining {
		select {
		case g.idle <- struct{}{}:
		default:
		}
	}
	return true
}

// connections is a snapshot of the open client connections.
func (g *Server) connections() []*clientConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	conns := make([]*clientConn, 0, len(g.conns))
	for cc := range g.conns {
		conns = append(conns, cc)
	}
	return conns
}

// Stats are the open client connections and streams.
func (g *Server) Stats() (conns, streams int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for cc := range g.conns {
		streams += cc.d.Streams()
	}
	return len(g.conns), streams
}

// Draining reports whether Shutdown has begun.
func (g *Server) Draining() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.draining
}

// pool returns the connections to s's instance, which close when s ends.
func (g *Server) pool(s *session.Session) *relay.Pool {
	g.mu.Lock()
	p := g.pools[s]
	if p != nil {
		g.mu.Unlock()
		return p
	}
	p = relay.NewPool(s.Instance.Addr(), g.cfg.Relay)
	g.pools[s] = p
	g.mu.Unlock()
	s.Watch(func(err error) {
		g.mu.Lock()
		delete(g.pools, s)
		g.mu.Unlock()
		_, msg := Status(err)
		p.Close(msg)
	})
	return p
}

// StopAccepting closes the listeners: new connections are refused from now on.
// Shutdown does it too; calling it first lets the caller say so only once true.
func (g *Server) StopAccepting() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.draining {
		close(g.quit)
	}
	g.draining = true
	for lis := range g.listeners {
		lis.Close()
	}
}

// Shutdown drains the gateway: it stops accepting, sends GOAWAY to every client,
// lets open streams finish until ctx ends, then ends what is left with
// UNAVAILABLE and closes every connection. Sessions are not ended: that is the
// caller's choice.
func (g *Server) Shutdown(ctx context.Context) error {
	g.StopAccepting()
	conns := g.connections()
	for _, cc := range conns {
		cc.d.GoAway()
	}
	h1ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go g.h1.Shutdown(h1ctx)

	var err error
	for {
		g.mu.Lock()
		n := len(g.conns)
		g.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-g.idle:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		}
		break
	}
	conns = g.connections()
	_, msg := Status(activator.ErrShuttingDown)
	for _, cc := range conns {
		cc.d.Shutdown(codes.Unavailable, msg)
		cc.d.Close()
	}
	g.h1.Close()
	g.wg.Wait()
	return err
}

// serveHTTP1 answers HTTP/1 requests. tether serves gRPC over HTTP/2 only.
func (g *Server) serveHTTP1(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusHTTPVersionNotSupported)
	io.WriteString(w, "tether serves gRPC over HTTP/2: h2c with prior knowledge, or TLS with ALPN h2\n")
}

// bufConn is a connection whose first bytes were already read into r.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands connections that turned out to speak HTTP/1 to http.Server.
type chanListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
