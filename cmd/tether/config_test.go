package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.IdleTimeout != 10*time.Minute || cfg.ActivationTime != 2*time.Minute || cfg.MaxLifetime != 0 {
		t.Fatalf("defaults differ from the design: %+v", cfg)
	}
	if cfg.bounds.DefaultCPU.String() != "500m" || cfg.bounds.MaxMemory.String() != "8Gi" {
		t.Fatalf("bounds %+v", cfg.bounds)
	}
}

// TestErrorsNameTheVariable checks that every way a setting can be wrong is
// reported with the variable's name, so an operator knows what to fix.
func TestErrorsNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"TETHER_IDLE_TIMEOUT": "ten minutes"}, "TETHER_IDLE_TIMEOUT"},
		{map[string]string{"TETHER_IDLE_TIMEOUT": ""}, "TETHER_IDLE_TIMEOUT is set but empty"},
		{map[string]string{"TETHER_ACTIVATION_TIMEOUT": "0s"}, "TETHER_ACTIVATION_TIMEOUT"},
		{map[string]string{"TETHER_MAX_LIFETIME": "-1h"}, "TETHER_MAX_LIFETIME"},
		{map[string]string{"TETHER_RUNTIME": "docker"}, "TETHER_RUNTIME"},
		{map[string]string{"TETHER_MAX_CPU": "lots"}, "TETHER_MAX_CPU"},
		{map[string]string{"TETHER_DEFAULT_CPU": "8"}, "TETHER_DEFAULT_CPU"},
		{map[string]string{"TETHER_MIN_IDLE_TIMEOUT": "2h", "TETHER_MAX_IDLE_TIMEOUT": "1h"}, "TETHER_MIN_IDLE_TIMEOUT"},
		{map[string]string{"TETHER_TLS_CERT": "/x.pem"}, "TETHER_TLS_CERT"},
		{map[string]string{"TETHER_LOG_FORMAT": "xml"}, "TETHER_LOG_FORMAT"},
		{map[string]string{"TETHER_LOG_LEVEL": "loud"}, "TETHER_LOG_LEVEL"},
		{map[string]string{"TETHER_STREAM_WINDOW": "1Ki"}, "TETHER_STREAM_WINDOW"},
		{map[string]string{"TETHER_MAX_INSTANCES": "many"}, "TETHER_MAX_INSTANCES"},
		{map[string]string{"TETHER_MAX_CONCURRENT_STREAMS": "0"}, "TETHER_MAX_CONCURRENT_STREAMS"},
		{map[string]string{"TETHER_LISTEN": "8080"}, "TETHER_LISTEN"},
	}
	for _, c := range cases {
		_, err := loadConfig(c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error naming %s", c.env, err, c.want)
		}
	}
}

func TestEmptyTLSMeansOff(t *testing.T) {
	if _, err := loadConfig(map[string]string{"TETHER_TLS_CERT": "", "TETHER_TLS_KEY": ""}); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownVariablesAreReported(t *testing.T) {
	got := unknownVars(map[string]string{"TETHER_IDLE_TIMOUT": "1m", "TETHER_IDLE_TIMEOUT": "1m", "TETHER_CPU_REQUEST": "1", "HOME": "/"})
	if !slices.Equal(got, []string{"TETHER_IDLE_TIMOUT"}) {
		t.Fatalf("got %v", got)
	}
}

// TestREADMEDocumentsEveryVariable keeps the README's environment table and the
// Config struct in step, both ways.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(TETHER_[A-Z_]+)`").FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	for _, name := range configVars() {
		if !documented[name] {
			t.Errorf("%s is read by the gateway but missing from the README's environment table", name)
		}
		delete(documented, name)
	}
	for name := range documented {
		t.Errorf("the README documents %s, which the gateway does not read", name)
	}
}

func TestIdleIgnoreMethods(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil || !setOf(cfg.IdleIgnore)["/grpc.health.v1.Health/Check"] {
		t.Fatalf("health checks count as activity by default: %v %v", cfg.IdleIgnore, err)
	}
	cfg, err = loadConfig(map[string]string{"TETHER_IDLE_IGNORE_METHODS": ","})
	if err != nil || len(setOf(cfg.IdleIgnore)) != 0 {
		t.Fatalf("',' should ignore nothing: %v %v", cfg.IdleIgnore, err)
	}
	if _, err := loadConfig(map[string]string{"TETHER_IDLE_IGNORE_METHODS": "Health/Check"}); err == nil || !strings.Contains(err.Error(), "TETHER_IDLE_IGNORE_METHODS") {
		t.Fatalf("got %v", err)
	}
}
