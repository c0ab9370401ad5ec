package nodeagent

import (
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"POD_IP": "127.9.0.1", "PORT": "8080"}
	for _, tc := range []struct{ in, want string }{
		{"-listen=$(POD_IP):$(PORT)", "-listen=127.9.0.1:8080"},
		{"$(MISSING)", "$(MISSING)"},
		{"$$(POD_IP)", "$(POD_IP)"},
		{"cost $5", "cost $5"},
		{"$(UNCLOSED", "$(UNCLOSED"},
		{"trailing $", "trailing $"},
	} {
		if got := expand(tc.in, env); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCommand(t *testing.T) {
	const bin = "/tmp/build/tether-example"
	env := map[string]string{"POD_IP": "127.9.0.1"}
	for _, tc := range []struct {
		name string
		spec corev1.Container
		want []string
	}{
		{"args only", corev1.Container{Args: []string{"-listen=$(POD_IP):1"}}, []string{bin, "-listen=127.9.0.1:1"}},
		{"command is the image's executable", corev1.Container{Command: []string{"/tether-example", "-v"}, Args: []string{"x"}}, []string{bin, "-v", "x"}},
		{"host command", corev1.Container{Command: []string{"sh", "-c", "exit 3"}}, []string{"sh", "-c", "exit 3"}},
	} {
		got, err := command(tc.spec, bin, env)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if filepath.IsAbs(got[0]) && !filepath.IsAbs(tc.want[0]) {
			got[0] = filepath.Base(got[0]) // found in the host's PATH
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: argv = %q, want %q", tc.name, got, tc.want)
		}
	}
	if _, err := command(corev1.Container{Command: []string{"no-such-binary-anywhere"}}, bin, env); err == nil {
		t.Error("a command missing from the host was accepted")
	}
}
