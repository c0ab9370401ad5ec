package cluster

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Time limits for ForTest. A cold build of the binaries takes 5 to 12 minutes on
// two cores; starting from the cache takes a few seconds.
const (
	buildTimeout = 30 * time.Minute
	startTimeout = 2 * time.Minute
)

// ForTest starts a cluster for tb and stops it in tb's cleanup. If the test has
// failed by then, the tail of each component's log is printed first.
func ForTest(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	buildCtx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bin, err := BinDir(buildCtx, opts.BinDir)
	if err != nil {
		tb.Fatalf("control-plane binaries: %v", err)
	}
	opts.BinDir = bin

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start cluster: %v", err)
	}
	tb.Logf("control plane ready in %v at %s (kubeconfig %s)", time.Since(start).Round(time.Millisecond), c.Host(), c.Kubeconfig())
	tb.Cleanup(func() {
		if tb.Failed() {
			var b strings.Builder
			c.WriteLogs(&b, 60)
			tb.Logf("control-plane logs:\n%s", b.String())
		}
		c.Stop()
	})
	return c
}
