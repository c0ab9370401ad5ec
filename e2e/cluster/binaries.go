package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// EnvBinDir names a directory holding etcd, kube-apiserver and kube-scheduler. When
// it is unset, the harness asks e2e/controlplane/build.sh, which builds them into a
// cache once and then only prints where they are.
const EnvBinDir = "TETHER_CONTROLPLANE_BIN"

var binaries = []string{"etcd", "kube-apiserver", "kube-scheduler"}

// BinDir returns the directory of the control-plane binaries: dir if it is not
// empty, else TETHER_CONTROLPLANE_BIN, else the output of controlplane/build.sh,
// which builds them on first use (5 to 12 minutes) and is quick afterwards.
func BinDir(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvBinDir)
	}
	if dir == "" {
		script, err := findBuildScript()
		if err != nil {
			return "", err
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, script)
		cmd.Stdout = &stdout
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		dir = lines[len(lines)-1]
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("control-plane binary %s: %w (run `make controlplane`)", b, err)
		}
	}
	return dir, nil
}

// findBuildScript looks for controlplane/build.sh from the working directory up,
// which is where `go test` runs a package of the e2e module.
func findBuildScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		for _, rel := range []string{"controlplane/build.sh", "e2e/controlplane/build.sh"} {
			p := filepath.Join(d, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", errors.New("e2e/controlplane/build.sh not found above " + wd + "; set " + EnvBinDir)
		}
	}
}
