package session

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/activator"
)

// Session is one client's claim on one instance.
type Session struct {
	// ID names the session in logs, labels and the sessions view. It is not a
	// secret: the token is.
	ID          string
	TokenHash   string
	Instance    activator.Instance
	Size        activator.Size
	IdleTimeout time.Duration
	// Peer is who started the session: the client's address.
	Peer    string
	Created time.Time
	// Activation is the cold start that created the session; zero for a session
	// adopted after a restart.
	Activation Activation

	token string // the plaintext token; empty for an adopted session

	// state packs the number of open streams with an ended bit, so that the
	// reaper's "no streams open, so end it" and a stream's "not ended, so count
	// me" cannot interleave.
	state     atomic.Int64
	idleSince atomic.Int64 // unix nanoseconds; when the open stream count last fell to 0

	// BytesIn and BytesOut count payload bytes, client to instance and back.
	BytesIn, BytesOut atomic.Uint64

	mu       sync.Mutex
	ended    chan struct{}
	err      error
	watchers map[uint64]func(error)
	nextW    uint64
}

const endedBit = int64(1) << 62

// Activation records a cold start, phase by phase.
type Activation struct {
	Start  time.Time
	Phases []PhaseTime
}

// PhaseTime is when a phase was reached.
type PhaseTime struct {
	Phase  activator.Phase
	At     time.Time
	Detail string
}

func newSession(peer string, now time.Time) *Session {
	id, token := newToken()
	s := &Session{
		ID:        id,
		TokenHash: HashToken(token),
		Peer:      peer,
		Created:   now,
		token:     token,
		ended:     make(chan struct{}),
	}
	s.idleSince.Store(now.UnixNano())
	return s
}

// Token returns the session token, to be handed to the client that created the
// session. It is empty for a session adopted after a restart.
func (s *Session) Token() string { return s.token }

// OpenStream counts a new stream on the session. It returns false if the session
// has ended, and the stream must not be forwarded.
func (s *Session) OpenStream() bool {
	for {
		v := s.state.Load()
		if v&endedBit != 0 {
			return false
		}
		if s.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// CloseStream counts a stream that has ended. The idle clock starts when the
// last one ends: a quiet open stream is activity, however long (case B22).
func (s *Session) CloseStream(now time.Time) {
	if s.state.Add(-1)&^endedBit == 0 {
		s.idleSince.Store(now.UnixNano())
	}
}

// Streams is how many streams are open.
func (s *Session) Streams() int { return int(s.state.Load() &^ endedBit) }

// IdleFor is how long the session has had no open stream, or 0 while one is open.
func (s *Session) IdleFor(now time.Time) time.Duration {
	if s.Streams() > 0 {
		return 0
	}
	return now.Sub(time.Unix(0, s.idleSince.Load()))
}

// Touch restarts the idle clock, as a re-attach or an adoption does.
func (s *Session) Touch(now time.Time) { s.idleSince.Store(now.UnixNano()) }

// endIfIdle marks the session ended if no stream is open, atomically with
// OpenStream.
func (s *Session) endIfIdle() bool {
	return s.state.CompareAndSwap(0, endedBit)
}

// markEnded marks the session ended whatever is open.
func (s *Session) markEnded() bool {
	for {
		v := s.state.Load()
		if v&endedBit != 0 {
			return false
		}
		if s.state.CompareAndSwap(v, v|endedBit) {
			return true
		}
	}
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ended }

// Err says why the session ended, once Done is closed: a *activator.GoneError.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Watch calls f once, with the reason, when the session ends: at once if it has.
// The returned func cancels the watch.
func (s *Session) Watch(f func(error)) (cancel func()) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		f(err)
		return func() {}
	}
	if s.watchers == nil {
		s.watchers = make(map[uint64]func(error))
	}
	id := s.nextW
	s.nextW++
	s.watchers[id] = f
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.watchers, id)
		s.mu.Unlock()
	}
}

// finish records why the session ended and tells its watchers.
func (s *Session) finish(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	ws := s.watchers
	s.watchers = nil
	close(s.ended)
	s.mu.Unlock()
	for _, f := range ws {
		f(err)
	}
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newToken returns a session id and a token that embeds it. The id is 16 base32
// characters, safe for a Kubernetes label; the token adds 256 random bits.
func newToken() (id, token string) {
	var b [10 + 32]byte
	rand.Read(b[:])
	id = idEncoding.EncodeToString(b[:10])
	return id, id + "." + base64.RawURLEncoding.EncodeToString(b[10:])
}

// HashToken is the hex SHA-256 of a token: what is stored wherever a token must
// be recognised later, so that the token itself is never written down.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// tokenID returns the session id a token names.
func tokenID(token string) (string, bool) {
	id, _, ok := strings.Cut(token, ".")
	return id, ok && len(id) == 16
}

func hashMatches(token, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(hash)) == 1
}
