package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const startTimeout = 30 * time.Second

// ForTest starts an agent for tb and stops it in tb's cleanup, after the cluster
// it talks to has been set up (cleanups run last first, so start the cluster
// before the agent). The agent's own log and the container logs go to a directory
// that is printed, in part, when the test has failed.
func ForTest(tb testing.TB, opts Options) *Agent {
	tb.Helper()
	if opts.LogDir == "" {
		opts.LogDir = tb.TempDir()
	}
	var logFile *os.File
	if opts.Logger == nil {
		f, err := os.Create(filepath.Join(opts.LogDir, "agent.log"))
		if err != nil {
			tb.Fatal(err)
		}
		logFile = f
		opts.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	a, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start node agent: %v", err)
	}
	tb.Cleanup(func() {
		a.Stop()
		if logFile != nil {
			logFile.Close()
		}
		if tb.Failed() {
			tb.Logf("node agent logs:\n%s", dumpLogs(opts.LogDir, 40))
		}
	})
	return a
}

// dumpLogs returns the last lines of every .log file under dir.
func dumpLogs(dir string, lines int) string {
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".log") {
			files = append(files, path)
		}
		return nil
	})
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(all) > lines {
			all = all[len(all)-lines:]
		}
		fmt.Fprintf(&b, "----- %s\n%s\n", filepath.Base(f), strings.Join(all, "\n"))
	}
	return b.String()
}
