package relay

import (
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
)

// Config tunes the relay. The zero value of a field means its default.
type Config struct {
	// StreamWindow is the flow-control window granted to each stream, on both
	// sides. It bounds the bytes one stream can have waiting inside the gateway,
	// including a request held during a cold start. Default 1 MiB.
	StreamWindow int32
	// ConnWindow is the connection-level window granted to each peer. It bounds
	// the bytes waiting inside the gateway for one connection. Default 4 MiB.
	ConnWindow int32
	// MaxConcurrentStreams is advertised to clients; streams beyond it are refused.
	// Default 1000.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's headers. Default 1 MiB.
	MaxHeaderListSize uint32
	// ReplayLimit is how much of a request the relay keeps until the instance
	// answers, so that a stream the instance refused can be sent again. 0 means
	// the default, 64 KiB; a negative value disables replay.
	ReplayLimit int
	// DialTimeout bounds one TCP connect to an instance. Default 5s.
	DialTimeout time.Duration
	// CloseLinger is how long a client connection that was sent GOAWAY and has no
	// streams left may go on being read, so that frames in flight are not lost to
	// a TCP reset. Default 5s.
	CloseLinger time.Duration
	// LostGrace is how long streams on a connection to an instance that broke
	// wait for the pool's owner to Close it with the reason the instance went (it
	// crashed, was reaped), so that clients are told why rather than only that a
	// connection dropped. Default 250ms.
	LostGrace time.Duration
	// ParkAfter is how long a client connection with no stream open keeps the
	// goroutine that served it before it waits on a fresh one with the smallest
	// stack (see Downstream.park). Parking saves 6 KB per idle connection, and
	// costs a connection that is soon busy again a goroutine start and a stack
	// that grows again; waiting a little first keeps that cost off clients that
	// call in a loop. Waiting long costs memory when many connections go quiet
	// together: their grown stacks are freed only after it, and stay resident
	// a while (at 100ms, 9.5 KB per idle connection in the benchmark instead of
	// 8.6 KB). 0 means the default, 5ms; a negative value parks at once.
	ParkAfter time.Duration
	// OnFail, if not nil, is called with the code of every gRPC status the relay
	// itself gives a client (as opposed to statuses relayed from an instance).
	// It must not block.
	OnFail func(code codes.Code)
	// Log receives the relay's own diagnostics. Default: discard.
	Log *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() *Config {
	if c.StreamWindow <= 0 {
		c.StreamWindow = 1 << 20
	}
	if c.ConnWindow <= 0 {
		c.ConnWindow = 4 << 20
	}
	if c.ConnWindow < defaultWindow {
		c.ConnWindow = defaultWindow
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 1000
	}
	if c.MaxHeaderListSize == 0 {
		c.MaxHeaderListSize = 1 << 20
	}
	switch {
	case c.ReplayLimit == 0:
		c.ReplayLimit = 64 << 10
	case c.ReplayLimit < 0:
		c.ReplayLimit = 0
	}
	switch {
	case c.ParkAfter == 0:
		c.ParkAfter = 5 * time.Millisecond
	case c.ParkAfter < 0:
		c.ParkAfter = 0
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.LostGrace <= 0 {
		c.LostGrace = 250 * time.Millisecond
	}
	if c.CloseLinger <= 0 {
		c.CloseLinger = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.OnFail == nil {
		c.OnFail = func(codes.Code) {}
	}
	return &c
}
