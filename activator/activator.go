// Package activator is tether's glossary: the names that every part of the gateway
// shares. It holds the request and response header names, the size of an instance,
// what a runtime hands back when it starts one, the phases of a cold start, and the
// errors that end an activation. It has no behaviour of its own.
//
// The work lives in subpackages, each named for its job:
//   - hints parses the x-tether-* request headers into a Size;
//   - session issues session tokens, starts instances through a runtime and keeps
//     the table of live sessions;
//   - local is the runtime that starts one process per session;
//   - kube is the runtime that starts one pod per session.
//
// Clients see these names as gRPC metadata; operators see them in the README.
package activator

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Request headers. The gateway consumes every header that starts with HeaderPrefix
// and never forwards one to an instance.
const (
	HeaderPrefix      = "x-tether-"
	HeaderCPU         = "x-tether-cpu"
	HeaderMemory      = "x-tether-memory"
	HeaderCPULimit    = "x-tether-cpu-limit"
	HeaderMemoryLimit = "x-tether-memory-limit"
	HeaderIdleTimeout = "x-tether-idle-timeout"
	// HeaderSession carries the session token: the gateway sets it on the first
	// response of a connection, and a client sends it back to re-attach.
	HeaderSession = "x-tether-session"
)

// Response headers set on the call that activated an instance.
const (
	HeaderInstance  = "x-tether-instance"
	HeaderColdStart = "x-tether-cold-start"
	HeaderPhases    = "x-tether-phases"
)

// Environment variables an instance is started with. Each holds the canonical
// Kubernetes quantity, so a solver can size its worker pool from them.
const (
	EnvCPURequest    = "TETHER_CPU_REQUEST"
	EnvCPULimit      = "TETHER_CPU_LIMIT"
	EnvMemoryRequest = "TETHER_MEMORY_REQUEST"
	EnvMemoryLimit   = "TETHER_MEMORY_LIMIT"
	// EnvSession holds the session id (never the token), for the instance's logs.
	EnvSession = "TETHER_SESSION"
)

// Size is what one instance is given. Requests never exceed limits.
type Size struct {
	CPURequest    resource.Quantity
	CPULimit      resource.Quantity
	MemoryRequest resource.Quantity
	MemoryLimit   resource.Quantity
}

// Env returns the size as NAME=value pairs for an instance's environment.
func (s Size) Env() []string {
	return []string{
		EnvCPURequest + "=" + s.CPURequest.String(),
		EnvCPULimit + "=" + s.CPULimit.String(),
		EnvMemoryRequest + "=" + s.MemoryRequest.String(),
		EnvMemoryLimit + "=" + s.MemoryLimit.String(),
	}
}

// String is the compact form used in logs and the sessions view.
func (s Size) String() string {
	return "cpu=" + s.CPURequest.String() + "/" + s.CPULimit.String() +
		" memory=" + s.MemoryRequest.String() + "/" + s.MemoryLimit.String()
}

// Spec asks a runtime for one instance.
type Spec struct {
	// Session is the session id. It is safe to log and to put in labels.
	Session string
	// TokenHash is the hex SHA-256 of the session token. A runtime that keeps
	// session state outside the process (pod annotations) stores it so that a
	// restarted gateway can re-attach tokens. It is never the token itself.
	TokenHash string
	Size      Size
	// IdleTimeout is the session's own idle timeout, after clamping.
	IdleTimeout time.Duration
	// Observe, if not nil, is called as the instance reaches each Phase, in
	// order, with a detail a human can read ("ContainerCreating", "pid 4242").
	// It may be called again for the same phase when only the detail changes.
	// It must not block.
	Observe func(p Phase, detail string)
}

// Report calls s.Observe if it is set.
func (s Spec) Report(p Phase, detail string) {
	if s.Observe != nil {
		s.Observe(p, detail)
	}
}

// Phase is a step of a cold start, in the order a cold start passes them.
type Phase string

// The phases of a cold start. PhaseForwarded is reported by the gateway, not the runtime.
const (
	PhaseRequested Phase = "requested" // the runtime was asked (process exec'd, pod created)
	PhaseScheduled Phase = "scheduled" // the instance has a place to run (pod bound to a node)
	PhaseStarted   Phase = "started"   // its process or container is running
	PhaseReady     Phase = "ready"     // it answers: health check passed, pod Ready
	PhaseForwarded Phase = "forwarded" // the first request byte reached it
)

// Instance is a running backend dedicated to one session.
type Instance interface {
	// Name identifies the instance to operators: a pod name, or a process name and pid.
	Name() string
	// Addr is the host:port where the instance serves h2c.
	Addr() string
	// Done is closed when the instance has gone away for any reason.
	Done() <-chan struct{}
	// Err says why the instance went away. It is a *GoneError once Done is closed,
	// and nil before.
	Err() error
}

// Runtime starts, watches and stops instances. The session manager declares the
// subset it uses; this type documents the contract every runtime meets.
//
// Start returns once the instance is ready, fails for good, or ctx ends. A runtime
// reports terminal failures as soon as it sees them, never at the deadline. When
// Start returns an error it has removed whatever it created.
type Runtime interface {
	Start(ctx context.Context, spec Spec) (Instance, error)
	Stop(ctx context.Context, inst Instance, reason string) error
}

// Header is one request header field as the client sent it. Name is lower case, as
// HTTP/2 requires.
type Header struct {
	Name, Value string
}

// Survivor is an instance that outlived the gateway that started it, found when a
// new gateway starts. Its session is adopted: the token re-attaches, because the
// runtime kept the token's hash, and the idle clock starts at adoption.
type Survivor struct {
	Instance Instance
	// Spec is the session as the runtime recorded it: id, token hash, size and
	// idle timeout. Observe is not set.
	Spec    Spec
	Created time.Time
}
