package hints

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
)

func quantity(t testing.TB, s string) resource.Quantity {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatalf("ParseQuantity(%q): %v", s, err)
	}
	return q
}

// testBounds are wide enough for every valid value of case B29: 1e3 cpu is a
// thousand cores, 1G memory is 10^9 bytes.
func testBounds(t testing.TB) Bounds {
	return Bounds{
		DefaultCPU: quantity(t, "1"), MinCPU: quantity(t, "1m"), MaxCPU: quantity(t, "1000"),
		DefaultMemory: quantity(t, "512Mi"), MinMemory: quantity(t, "1"), MaxMemory: quantity(t, "4Gi"),
		DefaultIdle: 10 * time.Minute, MinIdle: time.Minute, MaxIdle: time.Hour,
	}
}

func h(pairs ...string) []activator.Header {
	var hs []activator.Header
	for i := 0; i+1 < len(pairs); i += 2 {
		hs = append(hs, activator.Header{Name: pairs[i], Value: pairs[i+1]})
	}
	return hs
}

// hintErr fails the test unless err is a *activator.HintError for header.
func hintErr(t *testing.T, err error, header string) *activator.HintError {
	t.Helper()
	var he *activator.HintError
	if !errors.As(err, &he) {
		t.Fatalf("error = %v (%T), want *activator.HintError", err, err)
	}
	if he.Header != header {
		t.Errorf("HintError.Header = %q, want %q (error: %v)", he.Header, header, err)
	}
	return he
}

// TestB29Valid: valid quantities are kept exactly, in canonical form, for both the
// request and the limit that defaults to it.
func TestB29Valid(t *testing.T) {
	tests := []struct {
		header, value, want string
	}{
		{activator.HeaderCPU, "500m", "500m"},
		{activator.HeaderCPU, "1", "1"},
		{activator.HeaderCPU, "1.5", "1500m"},
		{activator.HeaderCPU, "2", "2"},
		{activator.HeaderCPU, "1e3", "1e3"},
		{activator.HeaderMemory, "1Gi", "1Gi"},
		{activator.HeaderMemory, "512Mi", "512Mi"},
		{activator.HeaderMemory, "1e3", "1e3"},
		{activator.HeaderMemory, "1G", "1G"},
		{activator.HeaderMemory, "2", "2"},
		// Kubernetes caches these spellings and would print them back as sent.
		{activator.HeaderCPU, "+1", "1"},
		{activator.HeaderCPU, "1.", "1"},
		{activator.HeaderCPU, ".5", "500m"},
		{activator.HeaderCPU, "0500m", "500m"},
		{activator.HeaderMemory, "1.5Gi", "1536Mi"},
		{activator.HeaderMemory, "0.5Ki", "512"},
		{activator.HeaderMemory, "10e-1", "1"},
		{activator.HeaderMemory, "1024Mi", "1Gi"},
		{activator.HeaderMemory, "4Gi", "4Gi"}, // the maximum itself
		{activator.HeaderCPU, "1m", "1m"},      // the minimum itself
		{activator.HeaderCPU, "1000e-3", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.header+"="+tt.value, func(t *testing.T) {
			r, err := Parse(h(tt.header, tt.value), testBounds(t))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			req, lim := r.Size.CPURequest, r.Size.CPULimit
			if tt.header == activator.HeaderMemory {
				req, lim = r.Size.MemoryRequest, r.Size.MemoryLimit
			}
			if got := req.String(); got != tt.want {
				t.Errorf("request = %q, want %q", got, tt.want)
			}
			if got := lim.String(); got != tt.want {
				t.Errorf("limit = %q, want %q (limits default to the request)", got, tt.want)
			}
		})
	}
}

// TestB29Invalid: every bad value is a HintError naming the header, quoting the value
// and saying why, whichever quantity header carries it.
func TestB29Invalid(t *testing.T) {
	tests := []struct {
		value      string
		cpuReason  string // exact, or a prefix when it ends in "..."
		memReason  string // "" means the same as cpuReason
		wantValue  string // "" means value
		skipMemory bool
	}{
		{value: "", cpuReason: "empty value"},
		{value: " ", cpuReason: "empty value (only white space)"},
		{value: "xxx", cpuReason: "not a number; write a quantity like 500m, 2, 512Mi or 4Gi"},
		{value: "banana", cpuReason: "not a number..."},
		{value: "2GB", cpuReason: `unknown suffix "GB"; use one of n u m k M G T P E Ki Mi Gi Ti Pi Ei, or an exponent like e3 (quantities have no B: 1G is 10^9 bytes, 1Gi is 2^30)`},
		{value: "10Gi,5Gi", cpuReason: "a list; send one quantity"},
		{value: "1Gi ", cpuReason: "leading or trailing white space"},
		{value: " 1", cpuReason: "leading or trailing white space"},
		{value: "-1", cpuReason: "negative; must be greater than zero"},
		{value: "0", cpuReason: "must be greater than zero"},
		{value: "-0", cpuReason: "must be greater than zero"},
		{value: "0.0", cpuReason: "must be greater than zero"},
		// ParseQuantity rounds it up to 100n rather than refusing it.
		{value: "0.0001m", cpuReason: "below the minimum 1m (TETHER_MIN_CPU)", memReason: "below the minimum 1 (TETHER_MIN_MEMORY)"},
		{value: "1e-30", cpuReason: "below the minimum 1m (TETHER_MIN_CPU)", memReason: "below the minimum 1 (TETHER_MIN_MEMORY)"},
		// Both wrap when converted to int64; Cmp sees them as they are.
		{value: "9223372036854775807", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "above the maximum 4Gi (TETHER_MAX_MEMORY)"},
		{value: "9223372036854775808", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "above the maximum 4Gi (TETHER_MAX_MEMORY)"},
		// Kubernetes prints 2000E as "2".
		{value: "2000E", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "above the maximum 4Gi (TETHER_MAX_MEMORY)"},
		{value: "9Ei", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "above the maximum 4Gi (TETHER_MAX_MEMORY)"},
		// 42 digits, which Kubernetes prints as "100".
		{value: "100000000000000000000000000000000000000000", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "above the maximum 4Gi (TETHER_MAX_MEMORY)"},
		// ParseQuantity accepts these; comparing 1e2147483647 never returns, and
		// 1e4294967297 wraps to 10.
		{value: "1e400", cpuReason: "exponent out of range; it must be between -30 and 30"},
		{value: "1e-400", cpuReason: "exponent out of range..."},
		{value: "1e2147483647", cpuReason: "exponent out of range..."},
		{value: "1e4294967297", cpuReason: "exponent out of range..."},
		{value: "1e99999999999999999999", cpuReason: "exponent out of range..."},
		{value: "NaN", cpuReason: "not a number..."},
		{value: "+Inf", cpuReason: "not a number..."},
		{value: "Inf", cpuReason: "not a number..."},
		{value: "1_000", cpuReason: `unknown suffix "_000"...`},
		{value: "0x10", cpuReason: `unknown suffix "x10"...`},
		{value: "١", cpuReason: "contains non-ASCII characters; write digits as 0-9"},
		{value: "1\u00a0", cpuReason: "leading or trailing white space"},
		{value: "1K", cpuReason: `unknown suffix "K"...`},
		{value: "1e", cpuReason: `unknown suffix "e"...`},
		{value: "1e+", cpuReason: `unknown suffix "e+"...`},
		{value: "1.2.3", cpuReason: `unknown suffix ".3"...`},
		// ParseQuantity reads each of these as zero.
		{value: ".", cpuReason: "not a number..."},
		{value: "+", cpuReason: "not a number..."},
		{value: "Gi", cpuReason: "not a number..."},
		{value: "m", cpuReason: "not a number..."},
		{value: "1500u", cpuReason: "finer than 1m, the smallest amount of CPU Kubernetes gives", skipMemory: true},
		// ParseQuantity rounds this up to 1m; the client did not ask for 1m.
		{value: "0.0009999999999", cpuReason: "finer than 1m, the smallest amount of CPU Kubernetes gives", skipMemory: true},
		{value: "1.0000000001", cpuReason: "finer than 1m...", memReason: "not a whole number of bytes..."},
		{value: "1.0000000001Gi", cpuReason: "above the maximum 1k (TETHER_MAX_CPU)", memReason: "not a whole number of bytes..."},
		{value: "1\x00", cpuReason: `unknown suffix "\x00"...`},
		{value: strings.Repeat("1", 65), cpuReason: "longer than 64 bytes", wantValue: strings.Repeat("1", 64) + "..."},
	}
	for _, header := range []string{activator.HeaderCPU, activator.HeaderCPULimit, activator.HeaderMemory, activator.HeaderMemoryLimit} {
		memory := strings.HasPrefix(header, activator.HeaderMemory)
		for _, tt := range tests {
			if memory && tt.skipMemory {
				continue
			}
			t.Run(header+"="+tt.value, func(t *testing.T) {
				_, err := Parse(h(header, tt.value), testBounds(t))
				he := hintErr(t, err, header)
				want := tt.cpuReason
				if memory && tt.memReason != "" {
					want = tt.memReason
				}
				if prefix, ok := strings.CutSuffix(want, "..."); ok {
					if !strings.HasPrefix(he.Reason, prefix) {
						t.Errorf("Reason = %q, want prefix %q", he.Reason, prefix)
					}
				} else if he.Reason != want {
					t.Errorf("Reason = %q, want %q", he.Reason, want)
				}
				wantValue := tt.value
				if tt.wantValue != "" {
					wantValue = tt.wantValue
				}
				if he.Value != wantValue {
					t.Errorf("Value = %q, want %q", he.Value, wantValue)
				}
			})
		}
	}
}

func TestMemoryMustBeWholeBytes(t *testing.T) {
	// "500m" of memory is half a byte; raise the minimum out of the way to reach
	// the check that explains the m.
	b := testBounds(t)
	b.MinMemory = quantity(t, "1m")
	_, err := Parse(h(activator.HeaderMemory, "1500m"), b)
	he := hintErr(t, err, activator.HeaderMemory)
	if !strings.Contains(he.Reason, "whole number of bytes") {
		t.Errorf("Reason = %q, want it to explain whole bytes", he.Reason)
	}
}

func TestDuplicateHeader(t *testing.T) {
	for _, tt := range []struct{ name, first, second string }{
		{activator.HeaderCPU, "1", "2"},
		{activator.HeaderCPU, "1", "1"},
		{activator.HeaderMemoryLimit, "1Gi", "2Gi"},
		{activator.HeaderIdleTimeout, "5m", "6m"},
		// The name differs only in case: still the same header.
		{"X-Tether-Memory", "1Gi", "1Gi"},
	} {
		t.Run(tt.name+"="+tt.first+","+tt.second, func(t *testing.T) {
			fields := h(strings.ToLower(tt.name), tt.first, tt.name, tt.second)
			_, err := Parse(fields, testBounds(t))
			he := hintErr(t, err, strings.ToLower(tt.name))
			if he.Value != tt.second || !strings.Contains(he.Reason, "more than once") || !strings.Contains(he.Reason, `"`+tt.first+`"`) {
				t.Errorf("got %v, want the second value, both values and \"more than once\"", err)
			}
		})
	}
}

func TestUnknownHeader(t *testing.T) {
	tests := []struct{ name, guess string }{
		{"x-tether-cpus", activator.HeaderCPU},
		{"x-tether-memroy", activator.HeaderMemory},
		{"X-Tether-Idle", ""},
		{"x-tether-instance", ""}, // a response header
		{"x-tether-", ""},
		{"x-tether-" + strings.Repeat("z", 1000), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name[:min(len(tt.name), 30)], func(t *testing.T) {
			_, err := Parse(h(activator.HeaderCPU, "1", tt.name, "v"), testBounds(t))
			he := hintErr(t, err, clip(strings.ToLower(tt.name)))
			if !strings.HasPrefix(he.Reason, "unknown header") {
				t.Errorf("Reason = %q, want it to start with unknown header", he.Reason)
			}
			for _, k := range known {
				if !strings.Contains(he.Reason, k) {
					t.Errorf("Reason = %q, want it to list %s", he.Reason, k)
				}
			}
			if tt.guess != "" && !strings.Contains(he.Reason, "did you mean "+tt.guess+"?") {
				t.Errorf("Reason = %q, want a guess of %s", he.Reason, tt.guess)
			}
			if tt.guess == "" && strings.Contains(he.Reason, "did you mean") {
				t.Errorf("Reason = %q, want no guess", he.Reason)
			}
		})
	}
}

func TestOtherHeadersIgnored(t *testing.T) {
	fields := h("content-type", "application/grpc", "x-tether", "not ours", "x-other-cpu", "banana",
		":path", "/svc/Method", "te", "trailers", "grpc-timeout", "1S")
	r, err := Parse(fields, testBounds(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := r.Size.String(); got != "cpu=1/1 memory=512Mi/512Mi" {
		t.Errorf("Size = %s, want the defaults", got)
	}
}

func TestHeaderNamesCaseInsensitive(t *testing.T) {
	r, err := Parse(h("X-Tether-CPU", "2", "X-TETHER-MEMORY-LIMIT", "1Gi"), testBounds(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := r.Size.String(); got != "cpu=2/2 memory=1Gi/1Gi" {
		t.Errorf("Size = %s", got)
	}
}

func TestDefaultsAndLimits(t *testing.T) {
	tests := []struct {
		name    string
		fields  []activator.Header
		want    string // Size.String()
		wantEnv []string
	}{
		{name: "no hints take the defaults", want: "cpu=1/1 memory=512Mi/512Mi",
			wantEnv: []string{"TETHER_CPU_REQUEST=1", "TETHER_CPU_LIMIT=1", "TETHER_MEMORY_REQUEST=512Mi", "TETHER_MEMORY_LIMIT=512Mi"}},
		{name: "limit defaults to the request", fields: h(activator.HeaderCPU, "2", activator.HeaderMemory, "1Gi"),
			want: "cpu=2/2 memory=1Gi/1Gi"},
		{name: "only the limit: the request follows it, as in Kubernetes",
			fields: h(activator.HeaderCPULimit, "4", activator.HeaderMemoryLimit, "2Gi"),
			want:   "cpu=4/4 memory=2Gi/2Gi"},
		{name: "both", fields: h(activator.HeaderCPU, "500m", activator.HeaderCPULimit, "1.5",
			activator.HeaderMemory, "256Mi", activator.HeaderMemoryLimit, "1Gi"),
			want: "cpu=500m/1500m memory=256Mi/1Gi",
			wantEnv: []string{"TETHER_CPU_REQUEST=500m", "TETHER_CPU_LIMIT=1500m",
				"TETHER_MEMORY_REQUEST=256Mi", "TETHER_MEMORY_LIMIT=1Gi"}},
		{name: "limit equal to the request, spelled differently",
			fields: h(activator.HeaderMemory, "1024Mi", activator.HeaderMemoryLimit, "1Gi"), want: "cpu=1/1 memory=1Gi/1Gi"},
		{name: "cpu sent, memory defaulted", fields: h(activator.HeaderCPU, "250m"), want: "cpu=250m/250m memory=512Mi/512Mi"},
		// The default request is kept even when a limit below it is sent alone.
		{name: "lone limit below the default request", fields: h(activator.HeaderCPULimit, "100m"), want: "cpu=100m/100m memory=512Mi/512Mi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse(tt.fields, testBounds(t))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := r.Size.String(); got != tt.want {
				t.Errorf("Size = %s, want %s", got, tt.want)
			}
			if tt.wantEnv != nil && strings.Join(r.Size.Env(), " ") != strings.Join(tt.wantEnv, " ") {
				t.Errorf("Env = %v, want %v", r.Size.Env(), tt.wantEnv)
			}
			if r.IdleTimeout != 10*time.Minute || r.Token != "" {
				t.Errorf("IdleTimeout, Token = %v, %q; want the default and none", r.IdleTimeout, r.Token)
			}
		})
	}
}

func TestLimitBelowRequest(t *testing.T) {
	for _, tt := range []struct{ req, lim, reqValue, limValue string }{
		{activator.HeaderCPU, activator.HeaderCPULimit, "2", "1500m"},
		{activator.HeaderMemory, activator.HeaderMemoryLimit, "1Gi", "1023Mi"},
	} {
		t.Run(tt.lim, func(t *testing.T) {
			_, err := Parse(h(tt.lim, tt.limValue, tt.req, tt.reqValue), testBounds(t))
			he := hintErr(t, err, tt.lim)
			if he.Value != tt.limValue {
				t.Errorf("Value = %q, want %q", he.Value, tt.limValue)
			}
			if !strings.Contains(he.Reason, tt.req+" "+tt.reqValue) || !strings.Contains(err.Error(), tt.lim) {
				t.Errorf("error %q must name both headers and the request", err)
			}
		})
	}
}

func TestOutOfBounds(t *testing.T) {
	b := testBounds(t)
	b.MinCPU, b.MaxCPU = quantity(t, "250m"), quantity(t, "4")
	b.MinMemory, b.MaxMemory = quantity(t, "64Mi"), quantity(t, "8Gi")
	tests := []struct{ header, value, reason string }{
		{activator.HeaderCPU, "4001m", "above the maximum 4 (TETHER_MAX_CPU)"},
		{activator.HeaderCPULimit, "5", "above the maximum 4 (TETHER_MAX_CPU)"},
		{activator.HeaderCPU, "249m", "below the minimum 250m (TETHER_MIN_CPU)"},
		{activator.HeaderCPULimit, "0.1", "below the minimum 250m (TETHER_MIN_CPU)"},
		{activator.HeaderMemory, "9Gi", "above the maximum 8Gi (TETHER_MAX_MEMORY)"},
		{activator.HeaderMemoryLimit, "8589934593", "above the maximum 8Gi (TETHER_MAX_MEMORY)"},
		{activator.HeaderMemory, "63Mi", "below the minimum 64Mi (TETHER_MIN_MEMORY)"},
		{activator.HeaderMemoryLimit, "1k", "below the minimum 64Mi (TETHER_MIN_MEMORY)"},
	}
	for _, tt := range tests {
		t.Run(tt.header+"="+tt.value, func(t *testing.T) {
			_, err := Parse(h(tt.header, tt.value), b)
			he := hintErr(t, err, tt.header)
			if he.Reason != tt.reason || he.Value != tt.value {
				t.Errorf("got %v, want reason %q", err, tt.reason)
			}
		})
	}
	// The bounds themselves are accepted.
	r, err := Parse(h(activator.HeaderCPU, "250m", activator.HeaderCPULimit, "4",
		activator.HeaderMemory, "64Mi", activator.HeaderMemoryLimit, "8Gi"), b)
	if err != nil || r.Size.String() != "cpu=250m/4 memory=64Mi/8Gi" {
		t.Errorf("Parse at the bounds = %v, %v", r.Size, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	tests := []struct {
		value  string
		want   time.Duration
		reason string
	}{
		{"30m", 30 * time.Minute, ""},
		{"1h", time.Hour, ""},
		{"1m", time.Minute, ""},
		{"1h30m", time.Hour, ""},   // clamped down to the maximum
		{"720h", time.Hour, ""},    // clamped down to the maximum
		{"1s", time.Minute, ""},    // clamped up to the minimum
		{"1ns", time.Minute, ""},   // clamped up to the minimum
		{"59.5s", time.Minute, ""}, // clamped up to the minimum
		{"0", 0, "must be greater than zero"},
		{"0s", 0, "must be greater than zero"},
		{"-5m", 0, "must be greater than zero"},
		{"banana", 0, "not a duration; write one like 30m or 1h30m"},
		{"30", 0, "not a duration; write one like 30m or 1h30m"},
		{"1e3s", 0, "not a duration; write one like 30m or 1h30m"},
		{"9999999999h", 0, "not a duration; write one like 30m or 1h30m"}, // overflows int64
		{"", 0, "empty value"},
		{" ", 0, "empty value (only white space)"},
		{"30m ", 0, "leading or trailing white space"},
		{strings.Repeat("1", 70) + "s", 0, "longer than 64 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			r, err := Parse(h(activator.HeaderIdleTimeout, tt.value), testBounds(t))
			if tt.reason == "" {
				if err != nil || r.IdleTimeout != tt.want {
					t.Errorf("Parse = %v, %v; want %v", r.IdleTimeout, err, tt.want)
				}
				return
			}
			he := hintErr(t, err, activator.HeaderIdleTimeout)
			if he.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", he.Reason, tt.reason)
			}
		})
	}
}

func TestToken(t *testing.T) {
	const token = "tok_3kTMd9X-fQ2"
	r, err := Parse(h(activator.HeaderSession, token, activator.HeaderCPU, "2"), testBounds(t))
	if err != nil || r.Token != token {
		t.Fatalf("Parse = %q, %v; want the token back", r.Token, err)
	}
	if r.Size.CPURequest.String() != "2" {
		t.Errorf("hints beside a token are still read: cpu = %s", r.Size.CPURequest.String())
	}

	// A token is a secret: no error may quote it.
	for _, fields := range [][]activator.Header{
		h(activator.HeaderSession, token, activator.HeaderSession, token+"x"),
		h(activator.HeaderSession, token+" "),
		h(activator.HeaderSession, ""),
	} {
		_, err := Parse(fields, testBounds(t))
		hintErr(t, err, activator.HeaderSession)
		if strings.Contains(err.Error(), token) {
			t.Errorf("error %q quotes the token", err)
		}
	}
}

func TestClipKeepsUTF8(t *testing.T) {
	v := strings.Repeat("a", MaxValueLen-1) + "é" + strings.Repeat("b", 1<<20)
	got := clip(v)
	if got != strings.Repeat("a", MaxValueLen-1)+"..." {
		t.Errorf("clip = %q", got)
	}
	_, err := Parse(h(activator.HeaderCPU, v), testBounds(t))
	if he := hintErr(t, err, activator.HeaderCPU); len(he.Value) > MaxValueLen+3 || len(err.Error()) > 1000 {
		t.Errorf("error is %d bytes, want it short", len(err.Error()))
	}
}

// TestResultSharesNothingWithBounds: the session package may adjust a Size in place;
// that must not move the operator's default.
func TestResultSharesNothingWithBounds(t *testing.T) {
	b := testBounds(t)
	b.DefaultCPU = quantity(t, "100000000000000000000m")
	b.MaxCPU = quantity(t, "1000000000")
	r, err := Parse(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	r.Size.CPURequest.Add(quantity(t, "1"))
	r.Size.CPULimit.Neg()
	if b.DefaultCPU.Cmp(quantity(t, "100000000000000000000m")) != 0 {
		t.Errorf("DefaultCPU = %s after changing the result", b.DefaultCPU.String())
	}
}

func TestParseConcurrent(t *testing.T) {
	b := testBounds(t)
	// Values past int64 are held as inf.Dec pointers, shared by every copy of b.
	b.MaxMemory = quantity(t, "100000000000000000000000")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 200 {
				fields := h(activator.HeaderMemory, "1G", activator.HeaderCPULimit, "1.5")
				if i%2 == 0 {
					fields = h(activator.HeaderMemory, "100000000000000000000001")
				}
				r, err := Parse(fields, b)
				if err == nil {
					_ = r.Size.String()
				}
			}
		})
	}
	wg.Wait()
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"x-tether-cpus", "x-tether-cpu", 1}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
