package chart_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/e2e/chart"
)

// notValues are the gateway settings the chart does not expose as values, and why.
var notValues = map[string]string{
	"TETHER_LOCAL_COMMAND": "the local runtime only; the chart runs the kubernetes runtime",
}

// chartDefaults are the settings whose value in the chart differs from the
// gateway's own default on purpose, and why.
var chartDefaults = map[string]string{
	"TETHER_RUNTIME":     "kubernetes: the chart's reason to be",
	"TETHER_POD_PORT":    "sessionPod.grpcPort, the template's port named grpc",
	"TETHER_LOG_FORMAT":  "json: log pipelines read it; the gateway's auto picks JSON off a terminal anyway",
	"TETHER_DRAIN_DELAY": "5s: Services take a moment to stop sending a terminating pod connections",
}

// TestEveryGatewaySettingIsRendered reads the variables the gateway reads (its
// Config struct in cmd/tether/config.go) and checks that the chart renders each
// into the gateway's environment, renders nothing else, and renders the gateway's
// own default unless chartDefaults says why not. A setting added to the gateway
// fails this test until the chart has a value for it.
func TestEveryGatewaySettingIsRendered(t *testing.T) {
	settings, err := chart.GatewaySettings(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	h := newHelm(t)
	for _, scenario := range []string{"default", "tls"} {
		t.Run(scenario, func(t *testing.T) {
			_, c, err := render(t, h, scenario).Gateway()
			if err != nil {
				t.Fatal(err)
			}
			env, err := chart.Env(c)
			if err != nil {
				t.Fatal(err)
			}
			known := map[string]bool{}
			for _, s := range settings {
				known[s.Var] = true
				v, rendered := env[s.Var]
				switch {
				case notValues[s.Var] != "":
					if rendered {
						t.Errorf("%s is rendered, but notValues says: %s", s.Var, notValues[s.Var])
					}
				case (s.Var == "TETHER_TLS_CERT" || s.Var == "TETHER_TLS_KEY") && scenario != "tls":
					if rendered {
						t.Errorf("%s is rendered without TLS", s.Var)
					}
				case !rendered:
					t.Errorf("the gateway reads %s, but no chart value renders it", s.Var)
				case s.HasDefault && chartDefaults[s.Var] == "" && !sameSetting(v, s.Default):
					t.Errorf("%s: the chart renders %q by default, the gateway's default is %q; make them equal or say why in chartDefaults", s.Var, v, s.Default)
				}
			}
			for name := range env {
				if strings.HasPrefix(name, "TETHER_") && !known[name] {
					t.Errorf("the chart renders %s, which the gateway does not read", name)
				}
			}
			for name := range chartDefaults {
				if !known[name] {
					t.Errorf("chartDefaults names %s, which the gateway does not read", name)
				}
			}
		})
	}
}

// sameSetting compares two values of a setting by meaning: durations, quantities,
// numbers, then text.
func sameSetting(a, b string) bool {
	if a == b {
		return true
	}
	if da, err := time.ParseDuration(a); err == nil {
		db, err := time.ParseDuration(b)
		return err == nil && da == db
	}
	if qa, err := resource.ParseQuantity(a); err == nil {
		qb, err := resource.ParseQuantity(b)
		return err == nil && qa.Cmp(qb) == 0
	}
	return false
}

// TestEveryValueReachesItsVariable changes every key of the `config` value, and
// every other value that feeds a variable, to a value of its own, renders once,
// and checks that each change arrived in the gateway's environment: a value that
// reaches no variable fails. The new values come from values.schema.json, so they
// are values an operator could set.
func TestEveryValueReachesItsVariable(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir(t), "values.yaml"))
	config, ok := values["config"].(map[string]any)
	if !ok || len(config) == 0 {
		t.Fatal("values.yaml has no config map")
	}
	schema := readSchema(t)
	props := schema.Properties["config"].Properties

	changed := map[string]any{}
	want := map[string]string{}
	keys := slices.Sorted(maps.Keys(config))
	for i, key := range keys {
		p, ok := props[key]
		if !ok {
			t.Errorf("config.%s is not in values.schema.json", key)
			continue
		}
		v, rendered := p.another(schema, config[key], i)
		changed[key] = v
		want[chart.VarOfKey(key)] = rendered
	}
	setJSON := []string{"config=" + mustJSON(t, changed)}
	// The values that feed a variable from outside `config`, and what they render.
	for _, o := range []struct{ set, variable, want string }{
		{`containerPort=8443`, "TETHER_LISTEN", ":8443"},
		{`metrics.port=9191`, "TETHER_METRICS_LISTEN", ":9191"},
		{`sessionsNamespace="elsewhere"`, "TETHER_NAMESPACE", "elsewhere"},
		{`sessionPod.grpcPort=6000`, "TETHER_POD_PORT", "6000"},
		{`tls.enabled=true`, "TETHER_TLS_CERT", "/etc/tether/tls/tls.crt"},
		{`tls.secretName="x"`, "TETHER_TLS_KEY", "/etc/tether/tls/tls.key"},
	} {
		setJSON = append(setJSON, o.set)
		want[o.variable] = o.want
	}
	setJSON = append(setJSON, `sessionPod.readinessProbe.grpc.port=6000`, `terminationGracePeriodSeconds=100000`)

	_, c, err := render(t, newHelm(t), "default", setJSON...).Gateway()
	if err != nil {
		t.Fatal(err)
	}
	env, err := chart.Env(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if env[name] != want[name] {
			t.Errorf("%s = %q, want %q: the value does not reach the variable", name, env[name], want[name])
		}
	}

	// metrics.enabled=false turns the listener off; the probes, which default to
	// the metrics port, must then be pointed elsewhere, and the chart says so.
	set := []string{`metrics.enabled=false`}
	for _, p := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
		set = append(set, p+".httpGet=null", p+`.tcpSocket={"port":"grpc"}`)
	}
	_, c, err = render(t, newHelm(t), "default", set...).Gateway()
	if err != nil {
		t.Fatal(err)
	}
	if env, _ := chart.Env(c); env["TETHER_METRICS_LISTEN"] != "off" {
		t.Errorf("metrics.enabled=false: TETHER_METRICS_LISTEN = %q, want off", env["TETHER_METRICS_LISTEN"])
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// jsonSchema is the part of JSON Schema that values.schema.json uses for config.
type jsonSchema struct {
	Ref         string                 `json:"$ref"`
	Type        any                    `json:"type"`
	Enum        []any                  `json:"enum"`
	Pattern     string                 `json:"pattern"`
	OneOf       []jsonSchema           `json:"oneOf"`
	Items       *jsonSchema            `json:"items"`
	Properties  map[string]*jsonSchema `json:"properties"`
	Definitions map[string]*jsonSchema `json:"definitions"`
}

func readSchema(t *testing.T) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s jsonSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// another returns a valid value for the property that differs from old and from
// the other keys' (by n), and how the gateway's environment should show it.
func (p *jsonSchema) another(root *jsonSchema, old any, n int) (any, string) {
	if p.Ref != "" {
		name := strings.TrimPrefix(p.Ref, "#/definitions/")
		return root.Definitions[name].another(root, old, n)
	}
	switch {
	case len(p.Enum) > 0:
		for _, e := range p.Enum {
			if e != old {
				return e, fmt.Sprint(e)
			}
		}
	case len(p.OneOf) > 0: // a quantity
		v := strconv.Itoa(1000+n) + "Mi"
		return v, v
	case p.Pattern != "" && strings.Contains(p.Pattern, "ms|s|m|h"): // a duration
		v := fmt.Sprintf("%dm%ds", n+1, n+7)
		return v, v
	case p.Type == "integer":
		v := 1000 + n
		return v, strconv.Itoa(v)
	case p.Type == "number":
		v := 1000.5 + float64(n)
		return v, strconv.FormatFloat(v, 'f', -1, 64)
	case p.Type == "array":
		v := []string{fmt.Sprintf("/chart.Test/Method%d", n), "/chart.Test/Other"}
		return v, strings.Join(v, ",")
	case p.Type == "string":
		v := fmt.Sprintf("value-%d", n)
		return v, v
	}
	panic(fmt.Sprintf("config value schema %+v: teach another() about it", *p))
}

// TestValuesAreDocumentedAndInTheSchema checks that values.yaml and the schema
// list the same keys: a key missing from values.yaml has no documentation row,
// and one missing from the schema is refused by additionalProperties.
func TestValuesAreDocumentedAndInTheSchema(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir(t), "values.yaml"))
	schema := readSchema(t)
	var walk func(path string, v map[string]any, s *jsonSchema)
	walk = func(path string, v map[string]any, s *jsonSchema) {
		for k := range s.Properties {
			if _, ok := v[k]; !ok {
				t.Errorf("%s%s is in values.schema.json but not in values.yaml", path, k)
			}
		}
		for k, child := range v {
			ps, ok := s.Properties[k]
			if !ok {
				t.Errorf("%s%s is in values.yaml but not in values.schema.json", path, k)
				continue
			}
			if m, ok := child.(map[string]any); ok && len(ps.Properties) > 0 {
				walk(path+k+".", m, ps)
			}
		}
	}
	walk("", values, schema)
}
