// Package gobuild compiles the commands an end-to-end test runs as processes or as
// pods: the gateway, the example server, the test server.
package gobuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	buildTimeout  = 5 * time.Minute
	productModule = "github.com/tetherhq/tether"
)

// Build compiles the main packages pkgs into outDir, running `go build` in
// moduleDir (empty: the working directory), and returns each executable's path by
// the last element of its package path.
func Build(ctx context.Context, moduleDir, outDir string, pkgs ...string) (map[string]string, error) {
	args := append([]string{"build", "-o", outDir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), moduleDir, err, out.String())
	}
	bins := map[string]string{}
	for _, p := range pkgs {
		bins[path.Base(p)] = filepath.Join(outDir, path.Base(p))
	}
	return bins, nil
}

// ForTest builds packages of the e2e module, such as
// "github.com/tetherhq/tether/e2e/internal/testserver", into a temporary directory.
func ForTest(tb testing.TB, pkgs ...string) map[string]string {
	tb.Helper()
	return buildForTest(tb, "", pkgs)
}

// ProductForTest builds packages of the product module, such as
// "./cmd/tether-example", in the product module's own directory, so that they
// build with its go.mod and not the e2e module's.
func ProductForTest(tb testing.TB, pkgs ...string) map[string]string {
	tb.Helper()
	dir, err := ProductDir()
	if err != nil {
		tb.Fatal(err)
	}
	return buildForTest(tb, dir, pkgs)
}

func buildForTest(tb testing.TB, moduleDir string, pkgs []string) map[string]string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bins, err := Build(ctx, moduleDir, tb.TempDir(), pkgs...)
	if err != nil {
		tb.Fatal(err)
	}
	return bins
}

// ProductDir finds the product module's root: the nearest directory above the
// working directory whose go.mod declares github.com/tetherhq/tether.
func ProductDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			for line := range strings.Lines(string(data)) {
				if strings.TrimSpace(line) == "module "+productModule {
					return d, nil
				}
			}
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod of module " + productModule + " above " + wd)
		}
	}
}
