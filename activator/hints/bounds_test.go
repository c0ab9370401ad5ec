package hints

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Bounds)
		want   []string // each must appear in the error; none means valid
	}{
		{name: "valid", change: func(*Bounds) {}},
		{name: "all equal", change: func(b *Bounds) {
			b.MinCPU, b.MaxCPU = b.DefaultCPU, b.DefaultCPU
			b.MinMemory, b.MaxMemory = b.DefaultMemory, b.DefaultMemory
			b.MinIdle, b.MaxIdle = b.DefaultIdle, b.DefaultIdle
		}},
		{name: "at the ceilings", change: func(b *Bounds) {
			b.MaxCPU = *resource.NewQuantity(1_000_000, resource.DecimalSI)
			b.MaxMemory = *resource.NewQuantity(1<<60, resource.BinarySI)
		}},
		{name: "unset", change: func(b *Bounds) { *b = Bounds{} }, want: []string{
			"TETHER_DEFAULT_CPU: 0: must be greater than zero",
			"TETHER_MIN_CPU: 0: must be greater than zero",
			"TETHER_MAX_CPU: 0: must be greater than zero",
			"TETHER_DEFAULT_MEMORY: 0: must be greater than zero",
			"TETHER_MIN_MEMORY: 0: must be greater than zero",
			"TETHER_MAX_MEMORY: 0: must be greater than zero",
			"TETHER_IDLE_TIMEOUT: 0s: must be greater than zero",
			"TETHER_MIN_IDLE_TIMEOUT: 0s: must be greater than zero",
			"TETHER_MAX_IDLE_TIMEOUT: 0s: must be greater than zero",
		}},
		{name: "negative", change: func(b *Bounds) {
			b.MinCPU = quantity(t, "-1")
			b.MaxIdle = -time.Hour
		}, want: []string{"TETHER_MIN_CPU: -1: must be greater than zero", "TETHER_MAX_IDLE_TIMEOUT: -1h0m0s: must be greater than zero"}},
		{name: "default below min", change: func(b *Bounds) { b.DefaultCPU = quantity(t, "100m"); b.MinCPU = quantity(t, "250m") },
			want: []string{"TETHER_DEFAULT_CPU: 100m: below TETHER_MIN_CPU (250m)"}},
		{name: "default above max", change: func(b *Bounds) { b.DefaultMemory = quantity(t, "8Gi") },
			want: []string{"TETHER_DEFAULT_MEMORY: 8Gi: above TETHER_MAX_MEMORY (4Gi)"}},
		{name: "min above max", change: func(b *Bounds) { b.MinMemory = quantity(t, "8Gi"); b.DefaultMemory = quantity(t, "8Gi") },
			want: []string{"TETHER_MIN_MEMORY: 8Gi: above TETHER_MAX_MEMORY (4Gi)", "TETHER_DEFAULT_MEMORY: 8Gi: above TETHER_MAX_MEMORY (4Gi)"}},
		{name: "cpu past the ceiling", change: func(b *Bounds) { b.MaxCPU = quantity(t, "9223372036854775807") },
			want: []string{"TETHER_MAX_CPU: 9223372036854775807: above 1M, the largest supported"}},
		{name: "memory past the ceiling", change: func(b *Bounds) { b.MaxMemory = quantity(t, "8Ei") },
			want: []string{"TETHER_MAX_MEMORY: 9223372036854775807: above 1Ei, the largest supported"}},
		{name: "cpu finer than 1m", change: func(b *Bounds) { b.MinCPU = quantity(t, "1500u") },
			want: []string{"TETHER_MIN_CPU: 1500u: finer than 1m"}},
		{name: "memory in millibytes", change: func(b *Bounds) { b.MinMemory = quantity(t, "500m") },
			want: []string{"TETHER_MIN_MEMORY: 500m: not a whole number of bytes"}},
		{name: "idle default outside", change: func(b *Bounds) { b.DefaultIdle = 2 * time.Hour },
			want: []string{"TETHER_IDLE_TIMEOUT: 2h0m0s: above TETHER_MAX_IDLE_TIMEOUT (1h0m0s)"}},
		{name: "idle default below min", change: func(b *Bounds) { b.DefaultIdle = time.Second },
			want: []string{"TETHER_IDLE_TIMEOUT: 1s: below TETHER_MIN_IDLE_TIMEOUT (1m0s)"}},
		{name: "idle min above max", change: func(b *Bounds) { b.MinIdle = 2 * time.Hour },
			want: []string{"TETHER_MIN_IDLE_TIMEOUT: 2h0m0s: above TETHER_MAX_IDLE_TIMEOUT (1h0m0s)",
				"TETHER_IDLE_TIMEOUT: 10m0s: below TETHER_MIN_IDLE_TIMEOUT (2h0m0s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBounds(t)
			tt.change(&b)
			err := b.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to contain %q", err, w)
				}
			}
			if got, want := strings.Count(err.Error(), "\n")+1, len(tt.want); got != want {
				t.Errorf("Validate reported %d problems, want %d:\n%v", got, want, err)
			}
		})
	}
}

// TestValidBoundsParse: whatever Validate accepts, Parse takes its defaults without
// error, so the config layer's check is the only one an operator meets.
func TestValidBoundsParse(t *testing.T) {
	b := testBounds(t)
	b.DefaultCPU, b.MinCPU, b.MaxCPU = quantity(t, "1M"), quantity(t, "1m"), quantity(t, "1M")
	b.DefaultMemory, b.MinMemory, b.MaxMemory = quantity(t, "1Ei"), quantity(t, "1"), quantity(t, "1Ei")
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := Parse(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Size.String(); got != "cpu=1M/1M memory=1Ei/1Ei" {
		t.Errorf("Size = %s", got)
	}
	if r.Size.CPULimit.MilliValue() != 1_000_000_000 || r.Size.MemoryLimit.Value() != 1<<60 {
		t.Errorf("the largest bounds no longer fit an int64")
	}
}
