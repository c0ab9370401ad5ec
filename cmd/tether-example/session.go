package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// instanceInfo is what Info reports and never changes once serving starts.
type instanceInfo struct {
	hostname      string
	pid           int
	session       string
	cpuRequest    string
	cpuLimit      string
	memoryRequest string
	memoryLimit   string
	started       time.Time
	ready         time.Time
}

// session implements examplepb.SessionServer. It is the whole state of the instance.
type session struct {
	examplepb.UnimplementedSessionServer

	info      instanceInfo
	calls     atomic.Int64
	firstCall atomic.Int64 // Unix nanoseconds; 0 until the first Session call

	// closed ends Watch streams when the server stops.
	closed    chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	value int64
	// changed is closed and replaced whenever value changes, waking every Watch at
	// once without a subscriber list to maintain or a slow reader to block on.
	changed chan struct{}
	kv      map[string]string
}

func newSession(info instanceInfo) *session {
	return &session{
		info:    info,
		closed:  make(chan struct{}),
		changed: make(chan struct{}),
		kv:      make(map[string]string),
	}
}

// close ends every Watch stream, current and future.
func (s *session) close() { s.closeOnce.Do(func() { close(s.closed) }) }

// add applies delta (0 meaning 1) and returns the new value.
func (s *session) add(delta int64) int64 {
	if delta == 0 {
		delta = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.value += delta
	close(s.changed)
	s.changed = make(chan struct{})
	return s.value
}

// load returns the value and a channel that is closed when it next changes.
func (s *session) load() (int64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value, s.changed
}

func (s *session) Increment(_ context.Context, req *examplepb.IncrementRequest) (*examplepb.Counter, error) {
	return &examplepb.Counter{Value: s.add(req.GetDelta())}, nil
}

func (s *session) Put(_ context.Context, req *examplepb.PutRequest) (*examplepb.PutResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv[req.GetKey()] = req.GetValue()
	return &examplepb.PutResponse{}, nil
}

func (s *session) Get(_ context.Context, req *examplepb.GetRequest) (*examplepb.GetResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[req.GetKey()]
	return &examplepb.GetResponse{Value: v, Found: ok}, nil
}

func (s *session) Info(context.Context, *examplepb.InfoRequest) (*examplepb.InfoResponse, error) {
	i := s.info
	return &examplepb.InfoResponse{
		Instance:          fmt.Sprintf("%s/%d", i.hostname, i.pid),
		Hostname:          i.hostname,
		Pid:               int64(i.pid),
		Session:           i.session,
		CpuRequest:        i.cpuRequest,
		CpuLimit:          i.cpuLimit,
		MemoryRequest:     i.memoryRequest,
		MemoryLimit:       i.memoryLimit,
		Calls:             s.calls.Load(),
		StartedUnixNano:   i.started.UnixNano(),
		ReadyUnixNano:     i.ready.UnixNano(),
		FirstCallUnixNano: s.firstCall.Load(),
	}, nil
}

func (s *session) Watch(_ *examplepb.WatchRequest, stream grpc.ServerStreamingServer[examplepb.Counter]) error {
	for {
		v, changed := s.load()
		if err := stream.Send(&examplepb.Counter{Value: v}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.closed:
			return status.Error(codes.Unavailable, "server is stopping")
		}
	}
}

func (s *session) Accumulate(stream grpc.ClientStreamingServer[examplepb.IncrementRequest, examplepb.Counter]) error {
	v, _ := s.load()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&examplepb.Counter{Value: v})
		}
		if err != nil {
			return err
		}
		v = s.add(req.GetDelta())
	}
}

func (s *session) Exchange(stream grpc.BidiStreamingServer[examplepb.IncrementRequest, examplepb.Counter]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&examplepb.Counter{Value: s.add(req.GetDelta())}); err != nil {
			return err
		}
	}
}

// sessionPrefix selects the calls that count as traffic: health probes and reflection
// must not, or the first probe would pass for the first call.
var sessionPrefix = "/" + examplepb.Session_ServiceDesc.ServiceName + "/"

func (s *session) count(method string) {
	if !strings.HasPrefix(method, sessionPrefix) {
		return
	}
	s.firstCall.CompareAndSwap(0, time.Now().UnixNano())
	s.calls.Add(1)
}

func (s *session) countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.count(info.FullMethod)
	return handler(ctx, req)
}

func (s *session) countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	s.count(info.FullMethod)
	return handler(srv, ss)
}
