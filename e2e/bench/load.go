package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// h2loadResult is what one h2load run reports.
type h2loadResult struct {
	Requests  int
	Succeeded int
	Failed    int
	Errored   int
	Timeout   int
	Status2xx int
	DataBytes int64
	ReqPerSec float64
	Elapsed   time.Duration
}

var (
	reFinished = regexp.MustCompile(`finished in ([0-9.]+)(s|ms|us), ([0-9.]+) req/s`)
	reRequests = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reStatus   = regexp.MustCompile(`status codes: (\d+) 2xx`)
	reTraffic  = regexp.MustCompile(`traffic: .*\((\d+)\) data`)
)

func parseH2load(out string) (h2loadResult, error) {
	var r h2loadResult
	m := reFinished.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load output not understood:\n%s", lastLines(out, 12))
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	unit := map[string]time.Duration{"s": time.Second, "ms": time.Millisecond, "us": time.Microsecond}[m[2]]
	r.Elapsed = time.Duration(v * float64(unit))
	r.ReqPerSec, _ = strconv.ParseFloat(m[3], 64)
	if m = reRequests.FindStringSubmatch(out); m == nil {
		return r, fmt.Errorf("h2load requests line not found:\n%s", lastLines(out, 12))
	}
	r.Requests, _ = strconv.Atoi(m[1])
	r.Succeeded, _ = strconv.Atoi(m[2])
	r.Failed, _ = strconv.Atoi(m[3])
	r.Errored, _ = strconv.Atoi(m[4])
	r.Timeout, _ = strconv.Atoi(m[5])
	if m = reStatus.FindStringSubmatch(out); m != nil {
		r.Status2xx, _ = strconv.Atoi(m[1])
	}
	if m = reTraffic.FindStringSubmatch(out); m != nil {
		r.DataBytes, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// h2load runs n requests of body on path with c connections and m streams each.
// h2load takes a gRPC error for a success, so the run is also checked against the
// bytes the echo backend must send back: every response carries the request's
// body, and a gRPC error carries none.
func h2load(b bins, t *target, path string, body []byte, bodyFile string, n, c, m int) (h2loadResult, error) {
	args := []string{b.h2load, "-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "-m", strconv.Itoa(m), "-t", "1",
		"-H", "content-type: application/grpc", "-H", "te: trailers", "-d", bodyFile}
	for k, v := range t.hdr() {
		args = append(args, "-H", k+": "+v)
	}
	args = append(args, "http://"+t.addr+path)
	out, err := runCmd(loadCPU, 5*time.Minute, args...)
	if err != nil {
		return h2loadResult{}, err
	}
	r, err := parseH2load(out)
	if err != nil {
		return r, err
	}
	want := int64(n) * int64(len(body))
	switch {
	case r.Succeeded != n || r.Failed+r.Errored+r.Timeout > 0 || r.Status2xx != n:
		return r, fmt.Errorf("h2load %s: %d of %d succeeded, %d failed, %d errored, %d timeout, %d 2xx", path, r.Succeeded, n, r.Failed, r.Errored, r.Timeout, r.Status2xx)
	case r.DataBytes != want:
		return r, fmt.Errorf("h2load %s: %d data bytes back, want %d: some responses were gRPC errors or cut short", path, r.DataBytes, want)
	}
	return r, nil
}

// ghzResult is the part of ghz's JSON report the harness reads.
type ghzResult struct {
	Count             int64            `json:"count"`
	Total             time.Duration    `json:"total"`
	Average           time.Duration    `json:"average"`
	RPS               float64          `json:"rps"`
	ErrorDistribution map[string]int   `json:"errorDistribution"`
	StatusCodes       map[string]int64 `json:"statusCodeDistribution"`
	Details           []struct {
		Latency time.Duration `json:"latency"`
	} `json:"details"`
}

// ghz runs ghz against t and fails on any response that is not OK.
func ghz(b bins, t *target, protoFile, call, msgFile string, extra ...string) (ghzResult, error) {
	// Every call here takes milliseconds: a call stalled for 5 s is an error, and
	// a whole run is killed after 90 s.
	args := []string{b.ghz, "--insecure", "--proto", protoFile, "--call", call, "-B", msgFile, "-O", "json", "--count-errors", "-t", "5s"}
	if h := t.hdr(); h != nil {
		md, _ := json.Marshal(h)
		args = append(args, "-m", string(md))
	}
	args = append(args, extra...)
	args = append(args, t.addr)
	out, err := runCmd(loadCPU, 90*time.Second, args...)
	var g ghzResult
	if jerr := json.Unmarshal([]byte(out), &g); jerr != nil {
		if err == nil {
			err = jerr
		}
		return g, fmt.Errorf("ghz %s: %w", call, err)
	}
	var bad []string
	for st, n := range g.StatusCodes {
		if st != "OK" && n > 0 {
			bad = append(bad, fmt.Sprintf("%s×%d", st, n))
		}
	}
	for e, n := range g.ErrorDistribution {
		bad = append(bad, fmt.Sprintf("%q×%d", e, n))
	}
	if len(bad) > 0 || g.StatusCodes["OK"] != g.Count || g.Count == 0 {
		return g, fmt.Errorf("ghz %s on %s: %d calls, OK %d, errors: %s", call, t.name, g.Count, g.StatusCodes["OK"], strings.Join(bad, ", "))
	}
	return g, nil
}

// files holds the request bodies and messages, written once per run.
type files struct {
	dir   string
	proto string
}

func (f files) unaryBody(size int) string {
	return filepath.Join(f.dir, "unary-"+sizeName(size)+".body")
}
func (f files) streamBody(size int) string {
	return filepath.Join(f.dir, "stream-"+sizeName(size)+".body")
}
func (f files) msg(size int) string { return filepath.Join(f.dir, "msg-"+sizeName(size)+".bin") }

func writeFiles(dir string) (files, error) {
	f := files{dir: dir, proto: filepath.Join(dir, "bench.proto")}
	if err := os.WriteFile(f.proto, []byte(benchProto), 0o644); err != nil {
		return f, err
	}
	for _, s := range sizes {
		if err := os.WriteFile(f.unaryBody(s), unaryBody(s), 0o644); err != nil {
			return f, err
		}
		if err := os.WriteFile(f.streamBody(s), streamBody(s), 0o644); err != nil {
			return f, err
		}
		if err := os.WriteFile(f.msg(s), blob(s), 0o644); err != nil {
			return f, err
		}
	}
	return f, nil
}
