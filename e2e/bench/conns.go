package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The connection holder (`bench conns`) opens HTTP/2 connections to a target and
// keeps them: each makes one call and stays open idle (mode idle), or opens one
// bidi stream, exchanges one message and keeps the stream open (mode stream). It
// is a process of its own so that its open files do not count against the
// harness's. The harness drives it over stdin ("grow N") and reads one line back
// per command: "held N" or "fail N reason".

type holder struct {
	addr, src, mode, token string
	msg                    []byte
	conns                  []net.Conn
	mu                     sync.Mutex
	dead                   atomic.Int64 // connections the proxy has closed since
	deadWhy                atomic.Value // the first reason seen
}

func connsMain(args []string) error {
	h := &holder{}
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-addr":
			h.addr = args[i+1]
		case "-src":
			h.src = args[i+1]
		case "-mode":
			h.mode = args[i+1]
		case "-token":
			h.token = args[i+1]
		}
	}
	h.msg = grpcFrame(blob(64))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] != "grow" {
			fmt.Println("fail 0 bad command")
			continue
		}
		n, _ := strconv.Atoi(f[1])
		if n < 0 {
			// "grow -1": report only.
			n = len(h.conns)
		}
		if err := h.grow(n); err != nil {
			fmt.Printf("fail %d %s\n", h.live(), strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		if d := h.dead.Load(); d > 0 {
			why, _ := h.deadWhy.Load().(string)
			fmt.Printf("fail %d the proxy closed %d of the %d connections opened: %s\n", h.live(), d, len(h.conns), why)
			continue
		}
		fmt.Printf("held %d\n", h.live())
	}
	for _, c := range h.conns {
		c.Close()
	}
	return nil
}

func (h *holder) live() int { return len(h.conns) - int(h.dead.Load()) }

// watch reads what the proxy sends on an open connection, answers its PINGs
// (tether's keepalive sends them), and counts the connection dead once the proxy
// closes it.
func (h *holder) watch(nc net.Conn) {
	var hdr [9]byte
	var buf [512]byte
	for {
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			h.deadWhy.CompareAndSwap(nil, err.Error())
			h.dead.Add(1)
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := http2.FrameType(hdr[3]), http2.Flags(hdr[4])
		if typ == http2.FrameGoAway {
			h.deadWhy.CompareAndSwap(nil, "GOAWAY")
		}
		var payload []byte
		if n <= len(buf) {
			payload = buf[:n]
		} else {
			payload = make([]byte, n)
		}
		if _, err := io.ReadFull(nc, payload); err != nil {
			h.deadWhy.CompareAndSwap(nil, err.Error())
			h.dead.Add(1)
			return
		}
		if typ == http2.FramePing && !flags.Has(http2.FlagPingAck) && n == 8 {
			ack := append([]byte{0, 0, 8, byte(http2.FramePing), byte(http2.FlagPingAck), 0, 0, 0, 0}, payload...)
			nc.Write(ack)
		}
	}
}

// grow opens connections until n are held, 32 at a time. It stops at the first
// failure.
func (h *holder) grow(n int) error {
	need := n - len(h.conns)
	if need <= 0 {
		return nil
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() && next.Add(1) <= int64(need) {
				c, err := h.open()
				if err != nil {
					failed.Store(true)
					errOnce.Do(func() { firstErr = err })
					return
				}
				h.mu.Lock()
				h.conns = append(h.conns, c)
				h.mu.Unlock()
				go h.watch(c)
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// open makes one connection and its call, and returns once the call has been
// answered: trailers with grpc-status 0 (idle), or the echo of the message on the
// still open stream (stream).
func (h *holder) open() (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if h.src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(h.src)}
		// Pick the port at connect time, by the whole 4-tuple, not at bind time:
		// ports left in TIME_WAIT by an earlier run stay usable.
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			return serr
		}
	}
	nc, err := d.Dial("tcp", h.addr)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	bw := bufio.NewWriterSize(nc, 1024)
	bw.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(bw, bufio.NewReaderSize(nc, 4096))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	path := pathUnary
	if h.mode == "stream" {
		path = pathStream
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", h.addr},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if h.token != "" {
		enc.WriteField(hpack.HeaderField{Name: "x-tether-session", Value: h.token})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, h.mode != "stream", h.msg)
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	got := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("connection closed by the proxy before the answer")
			}
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
				bw.Flush()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
				bw.Flush()
			}
		case *http2.GoAwayFrame:
			return nil, fmt.Errorf("GOAWAY %v %q", f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			return nil, fmt.Errorf("RST_STREAM %v", f.ErrCode)
		case *http2.MetaHeadersFrame:
			if st := f.PseudoValue("status"); st != "" && st != "200" {
				return nil, fmt.Errorf("HTTP status %s", st)
			}
			if f.StreamEnded() {
				gs := ""
				for _, hf := range f.Fields {
					if hf.Name == "grpc-status" {
						gs = hf.Value
					}
				}
				if gs != "0" || h.mode == "stream" || got != len(h.msg) {
					return nil, fmt.Errorf("call ended: grpc-status %q, %d bytes", gs, got)
				}
				nc.SetDeadline(time.Time{})
				ok = true
				return nc, nil
			}
		case *http2.DataFrame:
			got += len(f.Data())
			if h.mode == "stream" && got == len(h.msg) {
				nc.SetDeadline(time.Time{})
				ok = true
				return nc, nil
			}
		}
	}
}

// holderProc is the harness's side of a connection holder.
type holderProc struct {
	live int // connections open at the last answer
	p    *proc
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startHolder(self, addr, src, mode, token string) (*holderProc, error) {
	args := []string{self, "conns", "-addr", addr, "-src", src, "-mode", mode}
	if token != "" {
		args = append(args, "-token", token)
	}
	full := append([]string{"taskset", "-c", strconv.Itoa(loadCPU)}, args...)
	p2, in, out, err := startPiped("conns", full)
	if err != nil {
		return nil, err
	}
	return &holderProc{p: p2, in: in, out: bufio.NewScanner(out)}, nil
}

// grow asks for n connections in all and returns how many are held.
func (h *holderProc) grow(n int) (int, error) {
	if _, err := fmt.Fprintf(h.in, "grow %d\n", n); err != nil {
		return 0, err
	}
	if !h.out.Scan() {
		return 0, fmt.Errorf("connection holder exited: %v", h.p.exited())
	}
	f := strings.SplitN(h.out.Text(), " ", 3)
	held, _ := strconv.Atoi(f[1])
	h.live = held
	if f[0] == "held" {
		return held, nil
	}
	reason := ""
	if len(f) > 2 {
		reason = f[2]
	}
	return held, errors.New(reason)
}

func (h *holderProc) close() {
	h.in.Close()
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-h.p.done:
	case <-t.C:
		h.p.stop(time.Second)
	}
}
