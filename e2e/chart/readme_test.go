package chart_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tetherhq/tether/e2e/chart/valuesdoc"
)

// TestREADMEValuesTable fails when the README's values table is not the one
// generated from values.yaml (run `make chart-docs`), or when a value has no
// `# --` documentation.
func TestREADMEValuesTable(t *testing.T) {
	values, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := valuesdoc.Rows(values)
	if err != nil {
		t.Fatalf("values.yaml:\n%v", err)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := valuesdoc.Splice(readme, valuesdoc.Table(rows))
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(readme) {
		t.Error("the README's values table differs from charts/tether/values.yaml: run `make chart-docs`")
	}
}
