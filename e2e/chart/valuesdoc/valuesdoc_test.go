package valuesdoc

import (
	"strings"
	"testing"
)

func TestRows(t *testing.T) {
	rows, err := Rows([]byte(`# The file's own comment, not a value's.

# -- Number of pods.
replicaCount: 1
# Keys below are documented one by one.
config:
  # -- The idle timeout,
  # on two lines.
  idleTimeout: 10m
  # -- (int) A port; null lets Kubernetes choose.
  nodePort: null
  # -- Methods | ignored.
  methods: ["/a.B/C"]
# -- A Kubernetes object, documented whole.
securityContext:
  runAsNonRoot: true
`))
	if err != nil {
		t.Fatal(err)
	}
	got := Table(rows)
	want := "| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n" +
		"| `replicaCount` | int | `1` | Number of pods. |\n" +
		"| `config.idleTimeout` | string | `\"10m\"` | The idle timeout, on two lines. |\n" +
		"| `config.nodePort` | int | `null` | A port; null lets Kubernetes choose. |\n" +
		"| `config.methods` | list | `[\"/a.B/C\"]` | Methods \\| ignored. |\n" +
		"| `securityContext` | object | `{\"runAsNonRoot\":true}` | A Kubernetes object, documented whole. |\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRowsRefuseUndocumentedValues(t *testing.T) {
	for name, values := range map[string]string{
		"undocumented":        "# a plain comment\nreplicaCount: 1\n",
		"in a section":        "config:\n  # -- Documented.\n  a: 1\n  b: 2\n",
		"null without a type": "# -- Port.\nnodePort: null\n",
		"documented section":  "# -- A section.\nconfig:\n  # -- Documented.\n  a: 1\n",
	} {
		if _, err := Rows([]byte(values)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSplice(t *testing.T) {
	readme := "# x\n" + Begin + "\nold table\n" + End + "\nafter\n"
	got, err := Splice([]byte(readme), "| new |\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), Begin+"\n<!--") || !strings.Contains(string(got), "| new |\n"+End+"\nafter\n") || strings.Contains(string(got), "old table") {
		t.Errorf("got %q", got)
	}
	if _, err := Splice([]byte("no markers"), ""); err == nil {
		t.Error("no error without markers")
	}
}
