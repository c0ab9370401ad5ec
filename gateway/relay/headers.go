package relay

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/tetherhq/tether/activator"
)

// connectionSpecific are the HTTP/1 hop-by-hop fields. RFC 9113 §8.2.2 makes a
// request that carries one malformed, and they must never cross the gateway in
// either direction (golang/go#21096 is the bug of stripping te along with them).
var connectionSpecific = map[string]bool{
	"connection":        true,
	"keep-alive":        true,
	"proxy-connection":  true,
	"transfer-encoding": true,
	"upgrade":           true,
}

// request is what the relay learns from a client's request headers.
type request struct {
	fields  []hpack.HeaderField // to forward, gateway headers removed
	hints   []activator.Header  // the x-tether-* fields, as sent
	grpc    bool
	timeout time.Duration // grpc-timeout; 0 when absent
	timeIdx int           // index of grpc-timeout in fields, -1 when absent
	path    string
}

var errMalformed = errors.New("malformed request")

// parseRequest splits a client's header list into what goes upstream and what the
// gateway consumes. It reports a malformed request with a reason a client can act on.
func parseRequest(in []hpack.HeaderField) (request, error) {
	r := request{fields: make([]hpack.HeaderField, 0, len(in)+1), timeIdx: -1}
	var method, scheme, te bool
	for _, f := range in {
		switch {
		case f.Name == ":method":
			method = true
			if f.Value == "CONNECT" {
				// Extended CONNECT (RFC 8441) is not advertised, so a CONNECT here is a
				// client error, not a tunnel request.
				return r, &malformedError{"CONNECT is not supported"}
			}
		case f.Name == ":scheme":
			scheme = true
		case f.Name == ":path":
			r.path = f.Value
		case strings.HasPrefix(f.Name, activator.HeaderPrefix):
			r.hints = append(r.hints, activator.Header{Name: f.Name, Value: f.Value})
			continue
		case f.Name == "te":
			// HTTP/2 allows only "trailers" here; gRPC needs exactly that, so it is
			// rewritten below rather than forwarded as sent.
			te = te || hasToken(f.Value, "trailers")
			continue
		case connectionSpecific[f.Name]:
			return r, &malformedError{"connection-specific header " + f.Name + " is not allowed in HTTP/2 (RFC 9113 8.2.2)"}
		case hopByHop(f.Name):
			// Proxy-Authorization and friends are for the gateway's own hop; no
			// credential meant for a proxy reaches an instance.
			continue
		case f.Name == "content-type":
			r.grpc = isGRPC(f.Value)
		case f.Name == "grpc-timeout":
			d, ok := parseTimeout(f.Value)
			if !ok {
				return r, &malformedError{"malformed grpc-timeout " + strconv.Quote(f.Value)}
			}
			r.timeout = d
			r.timeIdx = len(r.fields)
		}
		r.fields = append(r.fields, f)
	}
	if !method || !scheme || r.path == "" {
		return r, &malformedError{"missing :method, :scheme or :path"}
	}
	if te || r.grpc {
		r.fields = append(r.fields, hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	return r, nil
}

type malformedError struct{ reason string }

func (e *malformedError) Error() string { return e.reason }
func (e *malformedError) Is(t error) bool {
	return t == errMalformed
}

// filterResponse drops what must not reach the client from a backend's headers or
// trailers: hop-by-hop fields, and x-tether-* fields, which only the gateway sets.
// It returns in itself when nothing needs dropping, which is the common case.
func filterResponse(in []hpack.HeaderField) []hpack.HeaderField {
	drop := false
	for _, f := range in {
		if dropFromResponse(f.Name) {
			drop = true
			break
		}
	}
	if !drop {
		return in
	}
	out := make([]hpack.HeaderField, 0, len(in))
	for _, f := range in {
		if !dropFromResponse(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

func dropFromResponse(name string) bool {
	return connectionSpecific[name] || hopByHop(name) || strings.HasPrefix(name, activator.HeaderPrefix)
}

// hopByHop are the proxy-* fields (RFC 9110 11.7): meant for one hop, never
// forwarded.
func hopByHop(name string) bool { return strings.HasPrefix(name, "proxy-") }

func hasToken(v, tok string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if i := strings.IndexByte(part, ';'); i >= 0 {
			part = part[:i]
		}
		if strings.EqualFold(strings.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

func isGRPC(ct string) bool {
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// parseTimeout reads a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxDuration/unit) {
		return maxDuration, true
	}
	return time.Duration(n) * unit, true
}

const maxDuration = time.Duration(1<<63 - 1)

// formatTimeout writes d in the finest unit whose value fits the 8 digits gRPC allows.
func formatTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	const max = 99999999
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if v := (d + u.d - 1) / u.d; v <= max {
			return strconv.FormatInt(int64(v), 10) + u.c
		}
	}
	h := (d + time.Hour - 1) / time.Hour
	if h > max {
		h = max
	}
	return strconv.FormatInt(int64(h), 10) + "H"
}

// statusFields is a gRPC status as header fields: the whole response when
// trailersOnly, else the trailers after a response that has begun.
func statusFields(code codes.Code, msg string, trailersOnly bool) []hpack.HeaderField {
	f := make([]hpack.HeaderField, 0, 4)
	if trailersOnly {
		f = append(f,
			hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	f = append(f, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(code))})
	if msg != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(msg)})
	}
	return f
}

// encodeGRPCMessage percent-encodes as the gRPC HTTP/2 protocol asks: every byte
// outside printable ASCII, and '%' itself.
func encodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// httpStatus maps a gRPC code to the HTTP status a non-gRPC client gets for a
// gateway-made error.
func httpStatus(code codes.Code) int {
	switch code {
	case codes.InvalidArgument:
		return 400
	case codes.Unauthenticated:
		return 401
	case codes.NotFound:
		return 404
	case codes.ResourceExhausted:
		return 429
	case codes.DeadlineExceeded:
		return 504
	case codes.Unavailable:
		return 503
	default:
		return 500
	}
}
