package activator

import (
	"errors"
	"fmt"
	"time"
)

// The errors below are the only ways an activation or a pinned call fails on the
// gateway's side. Each maps to exactly one gRPC code in the gateway's status table
// (gateway/status.go); their messages are what the client reads, so they say what
// happened and what to change.

// HintError is a request header that cannot be used: malformed, out of the
// operator's bounds, repeated, or unknown. It maps to INVALID_ARGUMENT.
type HintError struct {
	Header string
	Value  string
	Reason string // names the bound when there is one
}

func (e *HintError) Error() string {
	return fmt.Sprintf("%s: %q: %s", e.Header, e.Value, e.Reason)
}

// CapacityError says there is no room for the instance: the scheduler found no
// node, a quota or the gateway's instance cap was hit. It maps to RESOURCE_EXHAUSTED,
// and Reason quotes the scheduler or the cap.
type CapacityError struct {
	Reason string
}

func (e *CapacityError) Error() string { return "no capacity for the instance: " + e.Reason }

// StartError says the instance failed to start: it exited, crashed, or its image
// could not be pulled. It maps to UNAVAILABLE.
type StartError struct {
	Instance string
	Reason   string // "exit code 1: <last lines of stderr>", "ErrImagePull: ..."
}

func (e *StartError) Error() string {
	if e.Instance == "" {
		return "instance failed to start: " + e.Reason
	}
	return "instance " + e.Instance + " failed to start: " + e.Reason
}

// TimeoutError says the instance was not ready within TETHER_ACTIVATION_TIMEOUT.
// It maps to UNAVAILABLE and names the last phase seen.
type TimeoutError struct {
	After  time.Duration
	Phase  Phase
	Detail string
}

func (e *TimeoutError) Error() string {
	last := string(e.Phase)
	if last == "" {
		last = "none"
	}
	if e.Detail != "" {
		last += " (" + e.Detail + ")"
	}
	return fmt.Sprintf("instance not ready after %s (TETHER_ACTIVATION_TIMEOUT); last phase: %s", e.After, last)
}

// GoneError says a session's instance went away: reaped, crashed, deleted. It maps
// to UNAVAILABLE.
type GoneError struct {
	Instance string
	Reason   string
}

func (e *GoneError) Error() string {
	if e.Instance == "" {
		return "instance gone: " + e.Reason
	}
	return "instance " + e.Instance + " gone: " + e.Reason
}

// RuntimeError says the runtime itself failed (the Kubernetes API is down, a pod
// create was refused for a reason other than quota). It maps to UNAVAILABLE.
type RuntimeError struct {
	Op  string
	Err error
}

func (e *RuntimeError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *RuntimeError) Unwrap() error { return e.Err }

// ErrSessionNotFound answers a session token that is unknown or whose session has
// ended. It maps to NOT_FOUND: a client that asked for its old instance must never
// be handed a fresh, empty one.
var ErrSessionNotFound = errors.New("session not found: the token is unknown or its instance was reaped; connect without " + HeaderSession + " to start a new session")

// ErrOtherSession is a token, sent on a connection already pinned to one
// session, that belongs to another. Following it would mean one connection
// reaching two instances; ignoring it would let a client that sends its token on
// every call talk to the wrong instance without knowing.
var ErrOtherSession = errors.New("this connection is pinned to another session: " + HeaderSession + " re-attaches a session only on a new connection")

// ErrShuttingDown is returned to calls that arrive while the gateway drains. It maps
// to UNAVAILABLE, which gRPC clients retry elsewhere.
var ErrShuttingDown = errors.New("gateway is shutting down")
