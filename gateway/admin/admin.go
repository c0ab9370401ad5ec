// Package admin serves what operators and orchestrators ask of a running
// gateway, on a listener of its own (TETHER_METRICS_LISTEN), never on the gRPC
// port: Prometheus metrics, liveness, readiness, and the live sessions.
//
//	GET /metrics   Prometheus text format
//	GET /healthz   200 while the process runs
//	GET /readyz    200 while the gateway takes new connections: caches synced, not
//	               draining; 503 with the reason otherwise
//	GET /sessions  the live sessions as JSON (never their tokens)
package admin

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherhq/tether/activator/session"
)

// Sessions is what the sessions view reads.
type Sessions interface {
	Sessions() []*session.Session
}

// Config is what the handler serves.
type Config struct {
	Gatherer prometheus.Gatherer
	Sessions Sessions
	// Ready returns nil when the gateway should get new connections, else why not.
	Ready func() error
}

// Handler returns the admin endpoints.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(View(cfg.Sessions.Sessions(), time.Now()))
	})
	return mux
}

// SessionView is one session as operators see it. It never holds the token.
type SessionView struct {
	ID          string  `json:"id"`
	Identity    string  `json:"identity"`
	Instance    string  `json:"instance"`
	Address     string  `json:"address"`
	CPU         string  `json:"cpu"`
	Memory      string  `json:"memory"`
	Created     string  `json:"created"`
	AgeSeconds  float64 `json:"age_seconds"`
	IdleSeconds float64 `json:"idle_seconds"`
	IdleTimeout string  `json:"idle_timeout"`
	Streams     int     `json:"streams"`
	BytesIn     uint64  `json:"bytes_in"`
	BytesOut    uint64  `json:"bytes_out"`
}

// Sessions is the body of GET /sessions.
type SessionsView struct {
	Sessions []SessionView `json:"sessions"`
}

// View describes sessions at now, oldest first.
func View(ss []*session.Session, now time.Time) SessionsView {
	out := SessionsView{Sessions: make([]SessionView, 0, len(ss))}
	for _, s := range ss {
		out.Sessions = append(out.Sessions, SessionView{
			ID:          s.ID,
			Identity:    s.Peer,
			Instance:    s.Instance.Name(),
			Address:     s.Instance.Addr(),
			CPU:         s.Size.CPURequest.String() + "/" + s.Size.CPULimit.String(),
			Memory:      s.Size.MemoryRequest.String() + "/" + s.Size.MemoryLimit.String(),
			Created:     s.Created.UTC().Format(time.RFC3339),
			AgeSeconds:  now.Sub(s.Created).Seconds(),
			IdleSeconds: s.IdleFor(now).Seconds(),
			IdleTimeout: s.IdleTimeout.String(),
			Streams:     s.Streams(),
			BytesIn:     s.BytesIn.Load(),
			BytesOut:    s.BytesOut.Load(),
		})
	}
	sort.Slice(out.Sessions, func(i, j int) bool { return out.Sessions[i].Created < out.Sessions[j].Created })
	return out
}
