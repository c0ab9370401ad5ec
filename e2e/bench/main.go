// Command bench measures tether against a direct connection, nginx (grpc_pass),
// HAProxy (proto h2) and Caddy, side by side in one run, on 127.0.0.1 only.
//
//	bench -mode full   -bin DIR -ghz PATH -out DIR   # make bench
//	bench -mode smoke  -bin DIR -ghz PATH -out DIR   # make bench-smoke: correctness only
//	bench -mode profile -bin DIR -out DIR            # make bench-profile: pprof of tether under load
//
// Method. Every round starts fresh processes for each target, in a shuffled order.
// The proxy under test runs alone on CPU 1 (GOMAXPROCS=1 for tether and Caddy,
// one nginx worker with worker_cpu_affinity, HAProxy nbthread 1 with cpu-map);
// the backend, the load generators and this harness run on CPU 0. The primary
// metric is the proxy's CPU time per operation: the first field of
// /proc/<pid>/task/*/schedstat (ns on CPU), summed over the proxy's threads (and
// nginx's worker), its change over the measured window divided by the operations
// completed in it. Ratios to nginx are computed within each round, and the
// summary reports the median over rounds. Every target must answer grpc-status 0
// to unary and streaming calls, checked on raw HTTP/2 before anything is timed,
// by ghz on every run, and on every h2load run by the bytes echoed back; any
// gRPC error fails the run.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type options struct {
	mode    string
	rounds  int
	targets []string
	out     string
	bin     string
	ghz     string
	m3      bool
	maxConn int
	m3Only  string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "conns" {
		if err := connsMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "conns:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var targets string
	flag.StringVar(&o.mode, "mode", "full", "full, smoke or profile")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds (full mode), each with fresh processes in a shuffled order")
	flag.StringVar(&targets, "targets", "direct,tether,nginx,haproxy,caddy", "targets for M1; caddy is skipped if not installed; empty for cold starts (M2, M4) only")
	flag.StringVar(&o.out, "out", "", "results directory: one JSON-lines file per run")
	flag.StringVar(&o.bin, "bin", "", "directory holding tether, tether-example, backend and tetherprof")
	flag.StringVar(&o.ghz, "ghz", "ghz", "ghz executable (v0.120.0)")
	flag.BoolVar(&o.m3, "m3", true, "measure memory per connection and the largest connection count (full mode)")
	flag.IntVar(&o.maxConn, "max-conns", 24000, "M3: stop looking for the largest connection count here")
	flag.StringVar(&o.m3Only, "m3-only", "", "run only M3, for these comma-separated proxies (a check of M3 itself)")
	flag.Parse()
	for _, t := range strings.Split(targets, ",") {
		if t != "" {
			o.targets = append(o.targets, t)
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAIL:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	b, err := findBins(o)
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(os.TempDir(), "tether-bench")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	runID := time.Now().UTC().Format("20060102T150405Z")
	tmp, err := os.MkdirTemp("", "tether-bench-files-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := writeFiles(tmp)
	if err != nil {
		return err
	}
	if o.mode == "profile" {
		return profile(b, f, o.out)
	}
	rep, err := newReport(filepath.Join(o.out, runID+"-"+o.mode+".jsonl"), runID)
	if err != nil {
		return err
	}
	defer rep.close()
	rep.note("load", loadAvg())
	if b.caddy == "" {
		o.targets = without(o.targets, "caddy")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	smoke := o.mode == "smoke"
	rounds := o.rounds
	if smoke {
		rounds = 1
	}
	m := &measurer{b: b, f: f, rep: rep, smoke: smoke, self: self}
	order := append(append([]string{}, o.targets...), "tether-cold")
	m3Targets := []string{"tether", "nginx", "haproxy"}
	if o.m3Only != "" {
		rounds, m3Targets = 0, strings.Split(o.m3Only, ",")
	}
	for r := 1; r <= rounds; r++ {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		fmt.Printf("round %d/%d: %s (load average %s)\n", r, rounds, strings.Join(order, ", "), loadAvg())
		for _, name := range order {
			var err error
			if name == "tether-cold" {
				err = m.cold(r)
			} else {
				err = m.m1(r, name)
			}
			if err != nil {
				rep.record(record{Round: r, Target: name, Metric: "errors", Value: 1, Unit: "count", Note: err.Error()})
				if smoke {
					return fmt.Errorf("round %d, %s: %w", r, name, err)
				}
				fmt.Printf("ERROR round %d, %s: %s\n", r, name, strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}
		if !smoke {
			m.latency(r, o.targets)
		}
	}
	if !smoke && o.m3 {
		for _, name := range m3Targets {
			if err := m.m3(name, o.maxConn); err != nil {
				rep.record(record{Target: name, Metric: "errors", Value: 1, Unit: "count", Note: err.Error()})
				return fmt.Errorf("M3 %s: %w", name, err)
			}
		}
	} else if smoke {
		// Correctness of the connection holder against every proxy, a few connections each.
		for _, name := range []string{"tether", "nginx", "haproxy"} {
			if err := m.m3smoke(name); err != nil {
				return fmt.Errorf("M3 smoke %s: %w", name, err)
			}
		}
	}
	rep.note("load_after", loadAvg())
	if smoke {
		fmt.Printf("bench-smoke: PASS: every target answered grpc-status 0 to unary and streaming calls (h2load, ghz, raw HTTP/2), results in %s\n", rep.path)
		return nil
	}
	return rep.summary(o.targets)
}

func findBins(o options) (bins, error) {
	b := bins{
		tether:     filepath.Join(o.bin, "tether"),
		example:    filepath.Join(o.bin, "tether-example"),
		backend:    filepath.Join(o.bin, "backend"),
		tetherprof: filepath.Join(o.bin, "tetherprof"),
		ghz:        o.ghz,
	}
	for _, p := range []string{b.tether, b.example, b.backend} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("-bin: %w", err)
		}
	}
	if o.mode == "profile" {
		var err error
		b.h2load, err = lookTool("h2load")
		return b, err
	}
	var err error
	for _, t := range []struct {
		name string
		dst  *string
	}{{"nginx", &b.nginx}, {"haproxy", &b.haproxy}, {"h2load", &b.h2load}} {
		if *t.dst, err = lookTool(t.name); err != nil {
			return b, err
		}
	}
	if p, err := lookTool(b.ghz); err == nil {
		b.ghz = p
	} else {
		return b, err
	}
	b.caddy, _ = lookTool("caddy") // optional
	return b, nil
}

func without(list []string, x string) []string {
	var out []string
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
