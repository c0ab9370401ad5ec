package local

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/tetherhq/tether/activator"
)

// The tests start the test binary itself as the instance (and, once, as a gateway).
// helperEnv in its environment makes TestMain run a helper role instead of tests.
const helperEnv = "TETHER_LOCAL_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// helperMain runs one helper role:
//
//	serve [-listen addr] [-ignore-term] [-long-line n]
//	    a line server on addr (default 127.0.0.1:$PORT): "env" answers the
//	    environment as JSON, "ping" answers "pong", "exit N" exits with N.
//	hang
//	    never listens; dies of SIGTERM.
//	gateway
//	    starts one "serve" instance through a Runtime, prints its pid, and blocks
//	    until stdin ends.
func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no role")
		return 2
	}
	switch args[0] {
	case "serve":
		return helperServe(args[1:])
	case "hang":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1) // keeps the runtime from calling this a deadlock
		<-c
		return 0
	case "gateway":
		return helperGateway()
	}
	fmt.Fprintln(os.Stderr, "helper: unknown role", args[0])
	return 2
}

func helperServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:"+os.Getenv("PORT"), "address")
	ignoreTerm := fs.Bool("ignore-term", false, "log SIGTERM and keep running")
	longLine := fs.Int("long-line", 0, "write a stdout line this long first")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ignoreTerm {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		go func() {
			for range c {
				fmt.Println("got SIGTERM")
			}
		}()
	}
	fmt.Println("hello stdout")
	fmt.Fprintln(os.Stderr, "hello stderr")
	if *longLine > 0 {
		fmt.Println(strings.Repeat("x", *longLine))
		fmt.Println("after long line")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			switch cmd := strings.TrimSpace(line); {
			case cmd == "env":
				env := map[string]string{}
				for _, kv := range os.Environ() {
					k, v, _ := strings.Cut(kv, "=")
					env[k] = v
				}
				_ = json.NewEncoder(c).Encode(env)
			case cmd == "ping":
				_, _ = io.WriteString(c, "pong\n")
			case strings.HasPrefix(cmd, "exit "):
				code, _ := strconv.Atoi(strings.TrimPrefix(cmd, "exit "))
				os.Exit(code)
			}
		}()
	}
}

func helperGateway() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := New(Config{Command: shellQuote(exe) + " serve", Env: os.Environ()}, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	inst, err := r.Start(context.Background(), activator.Spec{Session: "gateway-test"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(inst.(*instance).pid)
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = r.Close(context.Background())
	return 0
}

// shellQuote quotes s as one word for splitWords (and for sh).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// helperCommand is the command line that runs this test binary in a helper role.
func helperCommand(t testing.TB, args ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	words := []string{shellQuote(exe)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

// helperEnviron is the base environment for instances that run helper roles.
func helperEnviron(extra ...string) []string {
	return slices.Concat(os.Environ(), []string{helperEnv + "=1"}, extra)
}

// logStore collects log records so that tests can wait for one to arrive.
type logStore struct {
	mu      sync.Mutex
	recs    []logRec
	changed chan struct{} // closed and replaced on every record
}

type logRec struct {
	msg   string
	attrs map[string]any
}

func newLogStore() *logStore { return &logStore{changed: make(chan struct{})} }

func (s *logStore) logger() *slog.Logger { return slog.New(recHandler{s: s}) }

// wait returns the first record that match accepts, waiting for it until ctx ends.
func (s *logStore) wait(ctx context.Context, match func(logRec) bool) (logRec, error) {
	for {
		s.mu.Lock()
		for _, r := range s.recs {
			if match(r) {
				s.mu.Unlock()
				return r, nil
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return logRec{}, ctx.Err()
		}
	}
}

func (s *logStore) find(match func(logRec) bool) (logRec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if match(r) {
			return r, true
		}
	}
	return logRec{}, false
}

type recHandler struct {
	s     *logStore
	attrs []slog.Attr
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{msg: r.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Any()
		return true
	})
	h.s.mu.Lock()
	h.s.recs = append(h.s.recs, rec)
	close(h.s.changed)
	h.s.changed = make(chan struct{})
	h.s.mu.Unlock()
	return nil
}

func (h recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recHandler{s: h.s, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h recHandler) WithGroup(string) slog.Handler { return h }
