package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// Message sizes are the size of one gRPC message (a serialized bench.Blob), not
// counting the 5-byte gRPC length prefix.
var sizes = []int{64, 4 << 10, 64 << 10}

// streamMsgs is the number of messages in one bidi stream.
const streamMsgs = 400

func sizeName(n int) string {
	switch {
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	default:
		return fmt.Sprintf("%dB", n)
	}
}

// blob returns a serialized bench.Blob of exactly size bytes: tag, varint length, data.
func blob(size int) []byte {
	for l := size - 2; l > 0; l-- {
		var v [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(v[:], uint64(l))
		if 1+n+l == size {
			b := make([]byte, 0, size)
			b = append(b, 0x0a)
			b = append(b, v[:n]...)
			for i := 0; i < l; i++ {
				b = append(b, byte(i*7+i>>8))
			}
			return b
		}
	}
	panic(fmt.Sprintf("no blob of %d bytes", size))
}

// grpcFrame prefixes msg with the gRPC length-prefixed-message header.
func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

// bodies are the request bodies h2load sends: one message, or streamMsgs of them.
func unaryBody(size int) []byte { return grpcFrame(blob(size)) }

func streamBody(size int) []byte {
	one := grpcFrame(blob(size))
	return bytes.Repeat(one, streamMsgs)
}

const (
	pathUnary  = "/bench.Bench/Unary"
	pathStream = "/bench.Bench/Stream"
)

// h2c is an HTTP/2 client over cleartext TCP with prior knowledge, as h2load speaks.
func h2c() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, Timeout: 30 * time.Second}
}

// grpcCall sends body as a gRPC request with the headers h2load sends, and checks
// the answer the way a gRPC client would: HTTP 200, content-type application/grpc,
// grpc-status 0 (in the trailers, or in the headers of a Trailers-Only response),
// and, for the echo backend, the same bytes back. It returns the response headers.
func grpcCall(c *http.Client, addr, path string, hdr map[string]string, body []byte) (http.Header, error) {
	req, err := http.NewRequest("POST", "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the response: %w", path, err)
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: HTTP status %d: %.200s", path, resp.StatusCode, got)
	}
	if ct := resp.Header.Get("content-type"); ct != "application/grpc" && !bytes.HasPrefix([]byte(ct), []byte("application/grpc+")) {
		return nil, fmt.Errorf("%s: content-type %q", path, ct)
	}
	st, msg := resp.Trailer.Get("grpc-status"), resp.Trailer.Get("grpc-message")
	if st == "" {
		st, msg = resp.Header.Get("grpc-status"), resp.Header.Get("grpc-message")
	}
	if st != "0" {
		return nil, fmt.Errorf("%s: grpc-status %q, grpc-message %q", path, st, msg)
	}
	if !bytes.Equal(got, body) {
		return nil, fmt.Errorf("%s: echo differs: sent %d bytes, got %d", path, len(body), len(got))
	}
	return resp.Header, nil
}

// verify checks every path and size on addr before anything is timed: h2load
// counts a gRPC error as a success, so a target that answers with one must fail
// here.
func verify(addr string, hdr map[string]string) error {
	c := h2c()
	defer c.CloseIdleConnections()
	for _, size := range sizes {
		if _, err := grpcCall(c, addr, pathUnary, hdr, unaryBody(size)); err != nil {
			return fmt.Errorf("unary %s: %w", sizeName(size), err)
		}
		if _, err := grpcCall(c, addr, pathStream, hdr, streamBody(size)); err != nil {
			return fmt.Errorf("stream %s: %w", sizeName(size), err)
		}
	}
	return nil
}

// firstCall makes the call that starts a tether session, and returns its token.
func firstCall(addr string) (string, error) {
	c := h2c()
	defer c.CloseIdleConnections()
	h, err := grpcCall(c, addr, pathUnary, map[string]string{"x-tether-cpu": "1", "x-tether-memory": "256Mi"}, unaryBody(64))
	if err != nil {
		return "", err
	}
	tok := h.Get("x-tether-session")
	if tok == "" {
		return "", fmt.Errorf("no x-tether-session in the first response: %v", h)
	}
	return tok, nil
}
