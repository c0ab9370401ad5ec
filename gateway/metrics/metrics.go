// Package metrics is tether's Prometheus instrumentation.
//
// Events that happen once (an activation, a reap, an error the gateway makes) are
// counted when they happen, through the observer interfaces the session manager,
// the gateway and the relay declare. Everything that is a state (sessions,
// instances, connections, streams, bytes moved) is read from its owner at scrape
// time, so the data path never touches a metric: a relayed message costs no more
// with metrics than without.
package metrics

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/session"
)

// Sessions is what the metrics read from the session table.
type Sessions interface {
	Sessions() []*session.Session
	Starting() int
	Bytes() (in, out uint64)
}

// Gateway is what the metrics read from the gateway.
type Gateway interface {
	Stats() (conns, streams int)
}

// Metrics holds tether's collectors.
type Metrics struct {
	activations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	phases      *prometheus.HistogramVec
	reaps       *prometheus.CounterVec
	errors      *prometheus.CounterVec

	sessions Sessions
	gateway  Gateway

	sessionsDesc, instancesDesc, connsDesc, streamsDesc, bytesDesc *prometheus.Desc
}

// Cold starts take from milliseconds (a local process) to minutes (a new node).
var coldStartBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// New registers tether's metrics, and Go's runtime and process metrics, with reg.
// gateway may be set later with SetGateway, since it is built after the sessions.
func New(reg prometheus.Registerer, sessions Sessions) *Metrics {
	m := &Metrics{
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_activations_total",
			Help: "Cold starts by result: ok, or the gRPC code they ended with (resource_exhausted, unavailable, canceled when the client's connection went away). Bad hints start nothing and are counted in tether_proxy_errors_total.",
		}, []string{"result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_activation_duration_seconds",
			Help:    "Time from the first request of a connection to its instance being ready, by result.",
			Buckets: coldStartBuckets,
		}, []string{"result"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_activation_phase_duration_seconds",
			Help:    "Time a successful cold start spent reaching each phase from the one before: requested, scheduled, started, ready, forwarded (first request byte sent to the instance).",
			Buckets: coldStartBuckets,
		}, []string{"phase"}),
		reaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_sessions_ended_total",
			Help: "Sessions ended, by reason: idle, max_lifetime, instance_gone, abandoned (client left before it got its token), shutdown.",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_proxy_errors_total",
			Help: "gRPC statuses the gateway itself gave clients, by code. Statuses relayed from instances are not counted.",
		}, []string{"code"}),
		sessions:      sessions,
		sessionsDesc:  prometheus.NewDesc("tether_sessions", "Live sessions by state: active (a stream is open) or idle.", []string{"state"}, nil),
		instancesDesc: prometheus.NewDesc("tether_instances", "Instances by state: starting (an activation is under way) or serving.", []string{"state"}, nil),
		connsDesc:     prometheus.NewDesc("tether_client_connections", "Open client connections.", nil, nil),
		streamsDesc:   prometheus.NewDesc("tether_client_streams", "Open client streams.", nil, nil),
		bytesDesc:     prometheus.NewDesc("tether_bytes_total", "Payload bytes relayed, by direction: to_instance or to_client.", []string{"direction"}, nil),
	}
	reg.MustRegister(m.activations, m.duration, m.phases, m.reaps, m.errors, m,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.activations.WithLabelValues("ok")
	for _, c := range []codes.Code{codes.InvalidArgument, codes.ResourceExhausted, codes.Unavailable, codes.DeadlineExceeded, codes.NotFound} {
		m.errors.WithLabelValues(codeLabel(c))
	}
	for _, c := range []session.Cause{session.CauseIdle, session.CauseLifetime, session.CauseInstanceGone, session.CauseAbandoned, session.CauseShutdown} {
		m.reaps.WithLabelValues(string(c))
	}
	return m
}

// SetGateway makes the metrics read connection and stream counts from g.
func (m *Metrics) SetGateway(g Gateway) { m.gateway = g }

// Activated counts a successful cold start and its phases.
func (m *Metrics) Activated(s *session.Session) {
	a := s.Activation
	prev := a.Start
	for _, p := range a.Phases {
		m.phases.WithLabelValues(string(p.Phase)).Observe(p.At.Sub(prev).Seconds())
		prev = p.At
	}
	m.activations.WithLabelValues("ok").Inc()
	m.duration.WithLabelValues("ok").Observe(prev.Sub(a.Start).Seconds())
}

// ActivationFailed counts a failed cold start under the code its client got.
func (m *Metrics) ActivationFailed(err error, a session.Activation) {
	r := result(err)
	m.activations.WithLabelValues(r).Inc()
	m.duration.WithLabelValues(r).Observe(time.Since(a.Start).Seconds())
}

// Forwarded records the last phase of a cold start: the held request leaving
// for the instance, after it was ready.
func (m *Metrics) Forwarded(afterReady time.Duration) {
	m.phases.WithLabelValues(string(activator.PhaseForwarded)).Observe(afterReady.Seconds())
}

// Ended counts a session's end by its cause.
func (m *Metrics) Ended(_ *session.Session, cause session.Cause) {
	m.reaps.WithLabelValues(string(cause)).Inc()
}

// Failed counts a gRPC status the gateway itself gave a client.
func (m *Metrics) Failed(code codes.Code) {
	m.errors.WithLabelValues(codeLabel(code)).Inc()
}

// Describe is part of prometheus.Collector, for the state read at scrape time.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.sessionsDesc, m.instancesDesc, m.connsDesc, m.streamsDesc, m.bytesDesc} {
		ch <- d
	}
}

// Collect reads the current state from its owners.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ss := m.sessions.Sessions()
	active := 0
	for _, s := range ss {
		if s.Streams() > 0 {
			active++
		}
	}
	ch <- prometheus.MustNewConstMetric(m.sessionsDesc, prometheus.GaugeValue, float64(active), "active")
	ch <- prometheus.MustNewConstMetric(m.sessionsDesc, prometheus.GaugeValue, float64(len(ss)-active), "idle")
	ch <- prometheus.MustNewConstMetric(m.instancesDesc, prometheus.GaugeValue, float64(m.sessions.Starting()), "starting")
	ch <- prometheus.MustNewConstMetric(m.instancesDesc, prometheus.GaugeValue, float64(len(ss)), "serving")
	in, out := m.sessions.Bytes()
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.CounterValue, float64(in), "to_instance")
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.CounterValue, float64(out), "to_client")
	if m.gateway != nil {
		conns, streams := m.gateway.Stats()
		ch <- prometheus.MustNewConstMetric(m.connsDesc, prometheus.GaugeValue, float64(conns))
		ch <- prometheus.MustNewConstMetric(m.streamsDesc, prometheus.GaugeValue, float64(streams))
	}
}

// result is the label for how an activation ended.
func result(err error) string {
	var (
		hint     *activator.HintError
		capacity *activator.CapacityError
	)
	switch {
	case errors.As(err, &hint):
		return codeLabel(codes.InvalidArgument)
	case errors.As(err, &capacity):
		return codeLabel(codes.ResourceExhausted)
	case errors.Is(err, context.DeadlineExceeded):
		return codeLabel(codes.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		// The connection that wanted the instance went away first.
		return codeLabel(codes.Canceled)
	default:
		return codeLabel(codes.Unavailable)
	}
}

func codeLabel(c codes.Code) string {
	// codes.Code prints as "InvalidArgument"; labels read better as the
	// protocol's own names, lower-cased.
	var b strings.Builder
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
