package hints

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
)

// Bounds are the operator's defaults and limits (from TETHER_* env, parsed elsewhere).
// The same minimum and maximum apply to requests and to limits.
type Bounds struct {
	DefaultCPU, MinCPU, MaxCPU          resource.Quantity
	DefaultMemory, MinMemory, MaxMemory resource.Quantity
	DefaultIdle, MinIdle, MaxIdle       time.Duration
}

// Request is what a client asked for, after defaults and bounds.
type Request struct {
	// Size holds canonical quantities: Size.CPURequest.String() is what the client
	// asked, in Kubernetes' own spelling, or the operator's default.
	Size        activator.Size
	IdleTimeout time.Duration
	Token       string // x-tether-session, "" when absent
}

// The variables that set Bounds. Errors name them so an operator knows what to change.
const (
	EnvDefaultCPU    = "TETHER_DEFAULT_CPU"
	EnvMinCPU        = "TETHER_MIN_CPU"
	EnvMaxCPU        = "TETHER_MAX_CPU"
	EnvDefaultMemory = "TETHER_DEFAULT_MEMORY"
	EnvMinMemory     = "TETHER_MIN_MEMORY"
	EnvMaxMemory     = "TETHER_MAX_MEMORY"
	EnvDefaultIdle   = "TETHER_IDLE_TIMEOUT"
	EnvMinIdle       = "TETHER_MIN_IDLE_TIMEOUT"
	EnvMaxIdle       = "TETHER_MAX_IDLE_TIMEOUT"
)

// MaxValueLen is the longest header value Parse reads, and the most of any value it
// quotes back in an error. A real quantity or duration is under 20 bytes.
const MaxValueLen = 64

// known lists the request headers in the order Parse judges them, so that when a
// request has several problems the same one is always reported.
var known = [...]string{
	activator.HeaderCPU,
	activator.HeaderCPULimit,
	activator.HeaderMemory,
	activator.HeaderMemoryLimit,
	activator.HeaderIdleTimeout,
	activator.HeaderSession,
}

const (
	iCPU = iota
	iCPULimit
	iMemory
	iMemoryLimit
	iIdle
	iSession
)

// Parse reads every activator.HeaderPrefix header in fields (other headers are ignored).
// It returns a *activator.HintError for any problem, before anything is started.
// It assumes b.Validate() == nil.
func Parse(fields []activator.Header, b Bounds) (Request, error) {
	var (
		vals [len(known)]string
		sent [len(known)]bool
	)
	for _, f := range fields {
		if !hasPrefixFold(f.Name, activator.HeaderPrefix) {
			continue
		}
		name := strings.ToLower(f.Name)
		i := indexOf(name)
		if i < 0 {
			return Request{}, unknownHeader(name, f.Value)
		}
		if sent[i] {
			if i == iSession {
				return Request{}, &activator.HintError{Header: name, Value: redacted, Reason: "sent more than once; send it once"}
			}
			return Request{}, hintError(name, f.Value,
				fmt.Sprintf("sent more than once (also as %q); send it once", clip(vals[i])))
		}
		vals[i], sent[i] = f.Value, true
	}

	var req Request
	cpu, err := sizeOf(cpuKind(b), vals[iCPU], sent[iCPU], vals[iCPULimit], sent[iCPULimit])
	if err != nil {
		return Request{}, err
	}
	mem, err := sizeOf(memoryKind(b), vals[iMemory], sent[iMemory], vals[iMemoryLimit], sent[iMemoryLimit])
	if err != nil {
		return Request{}, err
	}
	req.Size = activator.Size{
		CPURequest: cpu.request, CPULimit: cpu.limit,
		MemoryRequest: mem.request, MemoryLimit: mem.limit,
	}

	req.IdleTimeout = b.DefaultIdle
	if sent[iIdle] {
		if req.IdleTimeout, err = idleTimeout(vals[iIdle], b); err != nil {
			return Request{}, err
		}
	}

	if sent[iSession] {
		// The token is a secret; its own package checks its form, and errors here
		// must not repeat it.
		if reason := blankReason(vals[iSession]); reason != "" {
			return Request{}, &activator.HintError{Header: activator.HeaderSession, Value: redacted, Reason: reason}
		}
		req.Token = vals[iSession]
	}
	return req, nil
}

func idleTimeout(v string, b Bounds) (time.Duration, error) {
	h := activator.HeaderIdleTimeout
	if reason := blankReason(v); reason != "" {
		return 0, hintError(h, v, reason)
	}
	if len(v) > MaxValueLen {
		return 0, hintError(h, v, fmt.Sprintf("longer than %d bytes", MaxValueLen))
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, hintError(h, v, "not a duration; write one like 30m or 1h30m")
	}
	if d <= 0 {
		return 0, hintError(h, v, "must be greater than zero")
	}
	return min(max(d, b.MinIdle), b.MaxIdle), nil
}

// redacted stands for the session token in errors.
const redacted = "[redacted]"

func hintError(header, value, reason string) *activator.HintError {
	return &activator.HintError{Header: header, Value: clip(value), Reason: reason}
}

// blankReason rejects what HTTP/2 forbids or a template left behind.
func blankReason(v string) string {
	switch t := strings.TrimSpace(v); {
	case v == "":
		return "empty value"
	case t == "":
		return "empty value (only white space)"
	case t != v:
		return "leading or trailing white space"
	}
	return ""
}

// clip keeps errors and logs small whatever a client sends.
func clip(s string) string {
	if len(s) <= MaxValueLen {
		return s
	}
	cut := MaxValueLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func indexOf(name string) int {
	for i, k := range known {
		if name == k {
			return i
		}
	}
	return -1
}

func unknownHeader(name, value string) *activator.HintError {
	var reason strings.Builder
	reason.WriteString("unknown header")
	if guess := closest(name); guess != "" {
		fmt.Fprintf(&reason, " (did you mean %s?)", guess)
	}
	reason.WriteString("; the request headers are ")
	reason.WriteString(strings.Join(known[:len(known)-1], ", "))
	reason.WriteString(" and ")
	reason.WriteString(known[len(known)-1])
	return &activator.HintError{Header: clip(name), Value: clip(value), Reason: reason.String()}
}

// closest returns the known header within two edits of name, if there is exactly one
// nearest, for typos like x-tether-cpus or x-tether-memroy.
func closest(name string) string {
	if len(name) > MaxValueLen {
		return ""
	}
	best, bestD, tie := "", 3, false
	for _, k := range known {
		switch d := editDistance(name, k); {
		case d < bestD:
			best, bestD, tie = k, d, false
		case d == bestD:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance over bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
