package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tetherhq/tether/cmd/tether-example/examplepb"
)

// Cases B24 and B31. tether does not carry WebSockets yet (the design leaves them
// for later), so each way a WebSocket client may try gets a quick, clear refusal
// and starts nothing: no tunnel is ever made that reaping or a shutdown could
// leave behind, and extended CONNECT is never advertised, so that a browser falls
// back instead of sending a tunnel request nobody will serve.
func TestWebSocketsAreRefusedClearlyAndStartNothing(t *testing.T) {
	h := startGateway(t, options{})
	ctx := testCtx(t, 30*time.Second)

	t.Run("HTTP/1.1 upgrade", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		start := time.Now()
		c, resp, err := d.DialContext(ctx, "ws://"+h.addr+"/echo", http.Header{"X-Tether-Cpu": {"1"}})
		if err == nil {
			c.Close()
			t.Fatal("the WebSocket handshake succeeded")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the refusal took %v", took)
		}
		if resp == nil || resp.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Fatalf("got %v, %v; want HTTP 505", resp, err)
		}
		resp.Body.Close()
	})

	r := dialRaw(t, h.addr)
	t.Run("extended CONNECT not advertised", func(t *testing.T) {
		select {
		case ss := <-r.settings:
			for _, s := range ss {
				if s.ID == http2.SettingEnableConnectProtocol && s.Val != 0 {
					t.Errorf("the gateway advertises %v", s)
				}
			}
		case <-ctx.Done():
			t.Fatal("no SETTINGS from the gateway")
		}
	})
	for i, tc := range []struct {
		name    string
		headers []hpack.HeaderField
		want    string
	}{
		{"extended CONNECT over h2", []hpack.HeaderField{
			{Name: ":method", Value: "CONNECT"}, {Name: ":protocol", Value: "websocket"},
			{Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "tether.test"}, {Name: ":path", Value: "/echo"},
			{Name: "sec-websocket-version", Value: "13"}, {Name: "x-tether-cpu", Value: "1"},
		}, "CONNECT is not supported"},
		{"HTTP/1.1 upgrade headers over h2", []hpack.HeaderField{
			{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "tether.test"}, {Name: ":path", Value: "/echo"},
			{Name: "connection", Value: "upgrade"}, {Name: "upgrade", Value: "websocket"},
			{Name: "sec-websocket-version", Value: "13"}, {Name: "x-tether-cpu", Value: "1"},
		}, "connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s := r.call(uint32(2*i+1), tc.headers, nil).wait(t, ctx)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("the refusal took %v", took)
			}
			if s.reset || len(s.headers) == 0 {
				t.Fatalf("got %s; want HTTP 400", s)
			}
			if status, _ := field(s.headers[0], ":status"); status != "400" || !strings.Contains(string(s.data), tc.want) {
				t.Fatalf("got %s; want HTTP 400 naming %q", s, tc.want)
			}
		})
	}
	if n := h.rt.starts(); n != 0 {
		t.Errorf("WebSocket attempts started %d instances", n)
	}

	// The refusals cost the connection nothing: gRPC on it still works.
	s := r.call(5, grpcHeaders("/tether.example.v1.Session/Info", "x-tether-cpu", "1"), &examplepb.InfoRequest{}).wait(t, ctx)
	if code, msg := s.status(); code != "0" {
		t.Fatalf("gRPC after the refusals: status %s %q (%s)", code, msg, s)
	}
}
