package chart

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// Setting is one environment variable the gateway reads.
type Setting struct {
	Var        string // TETHER_IDLE_TIMEOUT
	Default    string // its envDefault, if HasDefault
	HasDefault bool
}

// GatewaySettings reads the gateway's Config struct from cmd/tether/config.go in
// the repository at root, so that the chart is checked against the variables the
// gateway really reads, in declaration order. (configVars() in that package does
// the same by reflection, but package main cannot be imported.)
func GatewaySettings(root string) ([]Setting, error) {
	path := filepath.Join(root, "cmd", "tether", "config.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []Setting
	var found bool
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		found = true
		for _, field := range st.Fields.List {
			if field.Tag == nil {
				continue
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				continue
			}
			tag := reflect.StructTag(raw)
			name := tag.Get("env")
			if name == "" {
				continue
			}
			def, has := tag.Lookup("envDefault")
			out = append(out, Setting{Var: name, Default: def, HasDefault: has})
		}
		return false
	})
	if !found || len(out) == 0 {
		return nil, fmt.Errorf("%s: no Config struct with env tags", path)
	}
	return out, nil
}

// VarOfKey is the variable a key of the chart's `config` value becomes:
// TETHER_ and the key in upper snake case, as the Deployment template does with
// sprig's snakecase ("kubeQps" is TETHER_KUBE_QPS).
func VarOfKey(key string) string {
	var b strings.Builder
	for i, r := range key {
		if r >= 'A' && r <= 'Z' && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return "TETHER_" + strings.ToUpper(b.String())
}
