// Command chart-docs regenerates the values table in the README from
// charts/tether/values.yaml (`make chart-docs`). A test in e2e/chart fails when
// the two differ.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetherhq/tether/e2e/chart"
	"github.com/tetherhq/tether/e2e/chart/valuesdoc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chart-docs:", err)
		os.Exit(1)
	}
}

func run() error {
	root, _ := chart.RepoRoot()
	values := flag.String("values", filepath.Join(root, "charts", "tether", "values.yaml"), "the chart's `values.yaml`")
	readme := flag.String("readme", filepath.Join(root, "README.md"), "the `README` to update between "+valuesdoc.Begin+" and "+valuesdoc.End)
	flag.Parse()
	v, err := os.ReadFile(*values)
	if err != nil {
		return err
	}
	rows, err := valuesdoc.Rows(v)
	if err != nil {
		return fmt.Errorf("%s:\n%w", *values, err)
	}
	old, err := os.ReadFile(*readme)
	if err != nil {
		return err
	}
	updated, err := valuesdoc.Splice(old, valuesdoc.Table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", *readme, err)
	}
	if string(updated) == string(old) {
		return nil
	}
	info, err := os.Stat(*readme)
	if err != nil {
		return err
	}
	return os.WriteFile(*readme, updated, info.Mode().Perm())
}
