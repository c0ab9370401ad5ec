package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// profile runs tetherprof (the gateway with net/http/pprof, built only for this)
// on the proxy CPU, pins a session as the full benchmark does, and takes a CPU
// profile under unary load and under streaming load (64 B messages), and an
// allocation profile of the unary hot path. It prints each profile's top 10.
func profile(b bins, f files, out string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	pport, err := freePort()
	if err != nil {
		return err
	}
	t := &target{name: "tether", addr: "127.0.0.1:" + strconv.Itoa(port)}
	defer t.stop()
	env := []string{
		"GOMAXPROCS=1",
		"TETHER_LISTEN=" + t.addr,
		"TETHER_LOCAL_COMMAND=taskset -c " + strconv.Itoa(loadCPU) + " " + b.backend + " -listen 127.0.0.1:{port}",
	}
	pprofAddr := "127.0.0.1:" + strconv.Itoa(pport)
	if t.proxy, err = start("tetherprof", proxyCPU, env, "", b.tetherprof, "-pprof", pprofAddr); err != nil {
		return err
	}
	if err := waitListening(t.addr, []*proc{t.proxy}, 30*time.Second); err != nil {
		return err
	}
	if t.token, err = firstCall(t.addr); err != nil {
		return err
	}
	if err := verify(t.addr, t.hdr()); err != nil {
		return err
	}
	const secs = 10
	stamp := time.Now().UTC().Format("20060102T150405Z")
	// CPU under each kind of load: h2load runs a little longer than the profile.
	for _, kind := range []struct{ name, path, body string }{
		{"unary", pathUnary, f.unaryBody(64)},
		{"stream", pathStream, f.streamBody(64)},
	} {
		conns, streams := unaryConns, unaryStreams
		if kind.name == "stream" {
			conns, streams = streamConns, streamStreams
		}
		done := make(chan error, 1)
		go func() {
			_, err := h2loadFor(b, t, kind.path, kind.body, secs+2, conns, streams)
			done <- err
		}()
		p := filepath.Join(out, "cpu-"+kind.name+"-"+stamp+".pprof")
		if err := fetch("http://"+pprofAddr+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), p); err != nil {
			return err
		}
		if err := <-done; err != nil {
			return err
		}
		fmt.Printf("\n=== CPU profile, %s load, 64 B messages (%s) ===\n", kind.name, p)
		if err := pprofTop(p, "-top", "-nodecount=10"); err != nil {
			return err
		}
		fmt.Printf("\n--- same profile, cumulative, relay and gateway only ---\n")
		if err := pprofTop(p, "-top", "-cum", "-nodecount=15", "-focus=tether"); err != nil {
			return err
		}
	}
	// Allocations of the unary hot path: the difference between two snapshots
	// around a fixed number of calls.
	before := filepath.Join(out, "allocs-before-"+stamp+".pprof")
	after := filepath.Join(out, "allocs-unary-"+stamp+".pprof")
	if err := fetch("http://"+pprofAddr+"/debug/pprof/allocs", before); err != nil {
		return err
	}
	const calls = 20000
	if _, err := h2load(b, t, pathUnary, unaryBody(64), f.unaryBody(64), calls, unaryConns, unaryStreams); err != nil {
		return err
	}
	if err := fetch("http://"+pprofAddr+"/debug/pprof/allocs", after); err != nil {
		return err
	}
	fmt.Printf("\n=== allocations during %d unary calls, 64 B (objects; divide by %d for per call) ===\n", calls, calls)
	if err := pprofTop(after, "-top", "-nodecount=15", "-sample_index=alloc_objects", "-base", before); err != nil {
		return err
	}
	fmt.Printf("\n=== the same, bytes ===\n")
	return pprofTop(after, "-top", "-nodecount=10", "-sample_index=alloc_space", "-base", before)
}

// h2loadFor runs h2load for secs seconds and checks every response as h2load does.
func h2loadFor(b bins, t *target, path, bodyFile string, secs, c, m int) (h2loadResult, error) {
	args := []string{b.h2load, "-D", strconv.Itoa(secs), "-c", strconv.Itoa(c), "-m", strconv.Itoa(m), "-t", "1",
		"-H", "content-type: application/grpc", "-H", "te: trailers", "-d", bodyFile}
	for k, v := range t.hdr() {
		args = append(args, "-H", k+": "+v)
	}
	args = append(args, "http://"+t.addr+path)
	out, err := runCmd(loadCPU, time.Duration(secs+60)*time.Second, args...)
	if err != nil {
		return h2loadResult{}, err
	}
	r, err := parseH2load(out)
	if err != nil {
		return r, err
	}
	// Streams cut at the end of the duration are not failures; errors are.
	if r.Errored > 0 || r.Succeeded == 0 || r.Status2xx != r.Succeeded {
		return r, fmt.Errorf("h2load %s: %d succeeded, %d errored, %d 2xx", path, r.Succeeded, r.Errored, r.Status2xx)
	}
	return r, nil
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func pprofTop(profilePath string, args ...string) error {
	cmd := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), profilePath)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
