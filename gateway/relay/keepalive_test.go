package relay_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tetherhq/tether/gateway/relay"
)

type noStreams struct{}

func (noStreams) OpenStream(s *relay.Stream) { s.Fail(14, "no streams in this test") }

// keepaliveConn serves one relay connection to a raw HTTP/2 client that has sent
// its preface and SETTINGS and then reads, but never writes, unless told to.
func keepaliveConn(t *testing.T) (*relay.Downstream, net.Conn, *http2.Framer, chan error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(server)
	client.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(client, client)
	fr.WriteSettings()
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, pre); err != nil {
		t.Fatal(err)
	}
	d := relay.NewDownstream(server, br, relay.Config{}.WithDefaults(), noStreams{})
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	// Once the relay acknowledges our SETTINGS it has read all we sent, so the
	// silence that follows is real.
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
			break
		}
	}
	t.Cleanup(func() {
		client.Close()
		d.Close()
		<-served
	})
	return d, client, fr, served
}

// readPing reads frames until a PING (not an ACK) arrives.
func readPing(t *testing.T, c net.Conn, fr *http2.Framer) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no keepalive PING: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			return
		}
	}
}

// TestKeepaliveClosesVanishedClient: a client that stops answering is found and
// its connection closed, so its streams end and its instance can go idle.
func TestKeepaliveClosesVanishedClient(t *testing.T) {
	d, client, fr, _ := keepaliveConn(t)
	const idle, timeout = time.Minute, 20 * time.Second
	now := time.Now()
	if d.CheckAlive(now, idle, timeout) {
		t.Fatal("closed a connection that was just active")
	}
	if d.CheckAlive(now.Add(idle), idle, timeout) {
		t.Fatal("closed instead of pinging")
	}
	readPing(t, client, fr)
	if d.CheckAlive(now.Add(idle+timeout/2), idle, timeout) {
		t.Fatal("closed before the timeout")
	}
	if !d.CheckAlive(now.Add(2*idle+timeout), idle, timeout) {
		t.Fatal("a client that never answered is still connected")
	}
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := fr.ReadFrame(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return
			}
			t.Fatalf("client read: %v", err)
		}
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

// TestKeepaliveAnsweredKeepsClient: a client that answers the PING stays.
func TestKeepaliveAnsweredKeepsClient(t *testing.T) {
	d, client, fr, _ := keepaliveConn(t)
	const idle, timeout = time.Minute, 20 * time.Second
	now := time.Now()
	d.CheckAlive(now.Add(idle), idle, timeout)
	readPing(t, client, fr)
	// The ACK is a frame from the client: proof of life.
	if err := fr.WritePing(true, [8]byte{}); err != nil {
		t.Fatal(err)
	}
	// The relay reads the ACK on its own goroutine; a PING of ours round-trips
	// behind it, so once its ACK is back the relay has read the client's frame.
	if err := fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == [8]byte{1} {
			break
		}
	}
	later := time.Now().Add(idle/2 + timeout)
	if d.CheckAlive(later, idle, timeout) {
		t.Fatal("closed a client that answered")
	}
	select {
	case <-d.Done():
		t.Fatal("connection closed")
	default:
	}
}
