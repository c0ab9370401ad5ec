package gateway

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
)

// errNotGRPC answers a request that would start a session without being gRPC.
var errNotGRPC = errors.New("tether starts a session only for a gRPC request (content-type: application/grpc)")

// Status maps an error to the gRPC status a client receives. It is the one table:
// every path that fails a request on the gateway's side goes through it, so the
// same failure always reads the same way (case B11).
func Status(err error) (codes.Code, string) {
	var (
		hint     *activator.HintError
		capacity *activator.CapacityError
		start    *activator.StartError
		timeout  *activator.TimeoutError
		gone     *activator.GoneError
		rt       *activator.RuntimeError
	)
	switch {
	case errors.As(err, &hint):
		return codes.InvalidArgument, err.Error()
	case errors.As(err, &capacity):
		return codes.ResourceExhausted, err.Error()
	case errors.As(err, &start), errors.As(err, &timeout), errors.As(err, &gone), errors.As(err, &rt):
		return codes.Unavailable, err.Error()
	case errors.Is(err, activator.ErrSessionNotFound):
		return codes.NotFound, err.Error()
	case errors.Is(err, errNotGRPC):
		return codes.InvalidArgument, err.Error()
	case errors.Is(err, activator.ErrOtherSession):
		return codes.FailedPrecondition, err.Error()
	case errors.Is(err, activator.ErrShuttingDown):
		return codes.Unavailable, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, err.Error()
	case errors.Is(err, context.Canceled):
		return codes.Canceled, err.Error()
	default:
		return codes.Internal, "gateway error: " + err.Error()
	}
}
