// Package valuesdoc turns a chart's values.yaml into the Markdown table of its
// values, from `# --` comments in the style of ingress-nginx (helm-docs):
//
//	# -- Number of gateway pods.
//	replicaCount: 1
//	service:
//	  # -- (int) Node port; null lets Kubernetes choose.
//	  nodePort: null
//
// A key with a `# --` comment is one row: its dotted path, its type (from the
// YAML, or the `(type)` that starts the comment), its default and the comment.
// A map whose keys carry the comments is a section: it has no row of its own,
// and each of its keys must be documented. A key that is neither documented nor
// a section is an error, so a value cannot be added without its documentation.
package valuesdoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Row is one documented value.
type Row struct {
	Key         string // dotted path, such as config.idleTimeout
	Type        string
	Default     string // JSON
	Description string
}

// Begin and End mark the generated table in a README.
const (
	Begin = "<!-- values:begin -->"
	End   = "<!-- values:end -->"
)

var typeOverride = regexp.MustCompile(`^\(([a-z/]+)\)\s*`)

// Rows parses values.yaml into its documented values, in file order.
func Rows(values []byte) ([]Row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("values.yaml is not a map")
	}
	var rows []Row
	var errs []error
	walk(doc.Content[0], "", &rows, &errs)
	return rows, errors.Join(errs...)
}

func walk(m *yaml.Node, prefix string, rows *[]Row, errs *[]error) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		path := prefix + k.Value
		desc, documented := description(k.HeadComment)
		section := v.Kind == yaml.MappingNode && hasDocumented(v)
		switch {
		case section && documented:
			*errs = append(*errs, fmt.Errorf("%s (line %d): a map whose keys are documented takes a plain comment, not `# --`", path, k.Line))
		case section:
			walk(v, path+".", rows, errs)
		case !documented:
			*errs = append(*errs, fmt.Errorf("%s (line %d): not documented; add a `# --` comment above it", path, k.Line))
		default:
			row, err := newRow(path, desc, v)
			if err != nil {
				*errs = append(*errs, fmt.Errorf("%s (line %d): %w", path, k.Line, err))
				continue
			}
			*rows = append(*rows, row)
		}
	}
}

func hasDocumented(m *yaml.Node) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if _, ok := description(m.Content[i].HeadComment); ok {
			return true
		}
		if v := m.Content[i+1]; v.Kind == yaml.MappingNode && hasDocumented(v) {
			return true
		}
	}
	return false
}

// description returns the text of the last `# --` comment block above a key: its
// first line starts with `# --`, and the comment lines after it continue it.
// Comment paragraphs before it (separated by a blank line) are for readers of
// values.yaml only.
func description(comment string) (string, bool) {
	lines := strings.Split(comment, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var parts []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		l = strings.TrimPrefix(l, "#")
		if i == 0 {
			l = strings.TrimPrefix(strings.TrimSpace(l), "--")
		}
		parts = append(parts, strings.TrimSpace(l))
	}
	return strings.Join(parts, " "), true
}

func newRow(path, desc string, v *yaml.Node) (Row, error) {
	row := Row{Key: path, Description: desc}
	if m := typeOverride.FindStringSubmatch(desc); m != nil {
		row.Type = m[1]
		row.Description = strings.TrimSpace(desc[len(m[0]):])
	}
	if row.Description == "" {
		return row, errors.New("empty `# --` comment")
	}
	if row.Type == "" {
		switch {
		case v.Kind == yaml.SequenceNode:
			row.Type = "list"
		case v.Kind == yaml.MappingNode:
			row.Type = "object"
		case v.Tag == "!!str":
			row.Type = "string"
		case v.Tag == "!!int":
			row.Type = "int"
		case v.Tag == "!!float":
			row.Type = "float"
		case v.Tag == "!!bool":
			row.Type = "bool"
		default:
			return row, fmt.Errorf("cannot tell the type of %s; start the comment with `(type)`", v.Tag)
		}
	}
	var value any
	if err := v.Decode(&value); err != nil {
		return row, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(value); err != nil {
		return row, err
	}
	row.Default = strings.TrimSpace(b.String())
	return row, nil
}

// Table renders rows as a Markdown table.
func Table(rows []Row) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", r.Key, r.Type, cell(r.Default), cell(r.Description))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Splice replaces what lies between the Begin and End markers of readme with
// table, and says so in a comment.
func Splice(readme []byte, table string) ([]byte, error) {
	s := string(readme)
	i := strings.Index(s, Begin)
	j := strings.Index(s, End)
	if i < 0 || j < i || strings.Count(s, Begin) != 1 || strings.Count(s, End) != 1 {
		return nil, fmt.Errorf("the README needs exactly one %s and one %s after it", Begin, End)
	}
	var b strings.Builder
	b.WriteString(s[:i+len(Begin)])
	b.WriteString("\n<!-- Generated from charts/tether/values.yaml by `make chart-docs`; edit values.yaml, not this table. -->\n")
	b.WriteString(table)
	b.WriteString(s[j:])
	return []byte(b.String()), nil
}
