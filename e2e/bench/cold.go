package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// coldSample is one cold start through tether, timed on one clock: the client,
// the gateway and the instance all run on this machine.
type coldSample struct {
	Concurrency int
	Sent        time.Time // the client sent its first request(s)
	Started     time.Time // the instance's process began (its package init)
	Ready       time.Time // the instance was listening (its own clock)
	FirstCall   time.Time // the first request reached the instance (its own clock)
	FirstResp   time.Time // the client had its first response
	LastResp    time.Time // the client had every response
	ColdStart   string    // x-tether-cold-start
	Phases      string    // x-tether-phases
}

// overhead is the activation overhead: from the instance being ready to the
// first request arriving there.
func (s coldSample) overhead() time.Duration { return s.FirstCall.Sub(s.Ready) }

// coldStart opens a new connection to tether (so a new session) and sends
// concurrency Info calls on it at once: all are held on the same cold start.
func coldStart(addr string, concurrency int) (coldSample, error) {
	s := coldSample{Concurrency: concurrency}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return s, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Connect first, so that the cold start is all that is timed.
	cc.Connect()
	for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
		if !cc.WaitForStateChange(ctx, st) {
			return s, fmt.Errorf("connecting to %s: %v", addr, ctx.Err())
		}
	}
	client := examplepb.NewSessionClient(cc)
	ctx = metadata.AppendToOutgoingContext(ctx, "x-tether-cpu", "1", "x-tether-memory", "256Mi")
	type answer struct {
		resp *examplepb.InfoResponse
		hdr  metadata.MD
		at   time.Time
		err  error
	}
	answers := make([]answer, concurrency)
	var wg sync.WaitGroup
	s.Sent = time.Now()
	for i := range answers {
		wg.Add(1)
		go func(a *answer) {
			defer wg.Done()
			a.resp, a.err = client.Info(ctx, &examplepb.InfoRequest{}, grpc.Header(&a.hdr))
			a.at = time.Now()
		}(&answers[i])
	}
	wg.Wait()
	var pid int64
	for i, a := range answers {
		if a.err != nil {
			return s, fmt.Errorf("cold start, call %d of %d: %w", i+1, concurrency, a.err)
		}
		if i == 0 {
			pid = a.resp.GetPid()
			s.Started = time.Unix(0, a.resp.GetStartedUnixNano())
			s.Ready = time.Unix(0, a.resp.GetReadyUnixNano())
			s.FirstCall = time.Unix(0, a.resp.GetFirstCallUnixNano())
			s.FirstResp, s.LastResp = a.at, a.at
		}
		if a.resp.GetPid() != pid {
			return s, fmt.Errorf("cold start: calls on one connection reached instances %d and %d", pid, a.resp.GetPid())
		}
		if a.at.Before(s.FirstResp) {
			s.FirstResp = a.at
		}
		if a.at.After(s.LastResp) {
			s.LastResp = a.at
		}
		if v := a.hdr.Get("x-tether-cold-start"); len(v) > 0 {
			s.ColdStart = v[0]
			s.Phases = a.hdr.Get("x-tether-phases")[0]
		}
	}
	if s.ColdStart == "" {
		return s, fmt.Errorf("no call carried x-tether-cold-start: the session was not cold")
	}
	return s, nil
}
