package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The relay never raises SETTINGS_MAX_FRAME_SIZE, so a frame over 16 KiB breaks
// the protocol (RFC 9113 4.2): FRAME_SIZE_ERROR at once, not a 16 MiB buffer
// held for a frame whose payload never comes.
func TestFrameOverMaxFrameSizeEndsConnection(t *testing.T) {
	gw := gateway(t, backend(t), nil)
	for _, tc := range []struct {
		name    string
		length  int
		typ     http2.FrameType
		payload bool
	}{
		{"header claims 16 MiB, no payload", 0xFFFFFF, http2.FrameHeaders, false},
		{"complete 20000-byte DATA frame", 20000, http2.FrameData, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := dialRaw(t, gw)
			err := c.write(func(*http2.Framer) error {
				h := []byte{byte(tc.length >> 16), byte(tc.length >> 8), byte(tc.length), byte(tc.typ), 0, 0, 0, 0, 1}
				if _, err := c.bw.Write(h); err != nil {
					return err
				}
				if tc.payload {
					_, err := c.bw.Write(make([]byte, tc.length))
					return err
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			f, err := c.take(ctx, ofType(http2.FrameGoAway))
			if err != nil {
				t.Fatalf("no GOAWAY: %v", err)
			}
			if f.code != http2.ErrCodeFrameSize {
				t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", f.code)
			}
			// EOF, or a reset: the client's unread payload is still in flight.
			if err := c.closed(ctx); errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("connection not closed after GOAWAY")
			}
		})
	}
}
