package hints

import (
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
)

// Which headers a fuzz input sends.
const (
	sendCPU = 1 << iota
	sendCPULimit
	sendMemory
	sendMemoryLimit
	sendIdle
	sendSession
	sendExtra    // one more header, named by the fuzzer
	sendCPUTwice // x-tether-cpu again, with the limit's value
	narrowBounds // a second, tighter set of bounds
)

// FuzzParse checks that Parse never panics, that everything it accepts respects the
// bounds, and, against an independent reading of each value through big.Rat, that it
// accepts exactly the values it should and keeps them exact.
func FuzzParse(f *testing.F) {
	all := sendCPU | sendCPULimit | sendMemory | sendMemoryLimit | sendIdle | sendSession
	seeds := []string{"500m", "1", "1.5", "2", "1Gi", "512Mi", "1e3", "1G", "", " ", "xxx", "2GB",
		"10Gi,5Gi", "1Gi ", "-1", "0", "0.0001m", "9223372036854775807", "9223372036854775808",
		"2000E", "1e400", "NaN", "+Inf", "1_000", "0x10", "١", "banana", "+1", "1.", ".", "Gi",
		"1e2147483647", "1e4294967297", "0.0009999999999", "1500u", "9Ei", "8Ei", "1e-30"}
	for _, s := range seeds {
		f.Add(s, "4", s, "4Gi", "30m", "tok", "x-tether-cpus", uint16(sendCPU|sendMemory))
		f.Add("1", s, "1Gi", s, s, s, "X-Tether-Cpu", uint16(all|narrowBounds))
	}
	f.Add("1", "2", "1Gi", "2Gi", "1h", "t", "x-tether-", uint16(all|sendExtra|sendCPUTwice))

	f.Fuzz(func(t *testing.T, cpu, cpuLimit, mem, memLimit, idle, token, extra string, send uint16) {
		b := testBounds(t)
		if send&narrowBounds != 0 {
			b.DefaultCPU, b.MinCPU, b.MaxCPU = quantity(t, "500m"), quantity(t, "250m"), quantity(t, "4")
			b.DefaultMemory, b.MinMemory, b.MaxMemory = quantity(t, "256Mi"), quantity(t, "64Mi"), quantity(t, "8Gi")
			b.DefaultIdle, b.MinIdle, b.MaxIdle = time.Minute, time.Second, 10*time.Minute
		}
		var fields []activator.Header
		add := func(bit uint16, name, value string) {
			if send&bit != 0 {
				fields = append(fields, activator.Header{Name: name, Value: value})
			}
		}
		add(sendCPU, activator.HeaderCPU, cpu)
		add(sendCPULimit, activator.HeaderCPULimit, cpuLimit)
		add(sendMemory, activator.HeaderMemory, mem)
		add(sendMemoryLimit, activator.HeaderMemoryLimit, memLimit)
		add(sendIdle, activator.HeaderIdleTimeout, idle)
		add(sendSession, activator.HeaderSession, token)
		add(sendExtra, extra, "v")
		add(sendCPUTwice, activator.HeaderCPU, cpuLimit)

		r, err := Parse(fields, b)

		if err != nil {
			var he *activator.HintError
			if !errors.As(err, &he) {
				t.Fatalf("error %v is a %T, want *activator.HintError", err, err)
			}
			if he.Header == "" || he.Reason == "" || len(he.Header) > MaxValueLen+3 || len(he.Value) > MaxValueLen+3 {
				t.Fatalf("HintError %+v: want a header and a reason, each value short", he)
			}
			if he.Header == activator.HeaderSession && he.Value != redacted {
				t.Fatalf("error %q quotes the session token", err)
			}
		}
		if want := shouldAccept(fields, b); want != (err == nil) {
			t.Fatalf("Parse(%q) error = %v, want accepted = %v", fields, err, want)
		}
		if err != nil {
			return
		}

		checkSize(t, "cpu", r.Size.CPURequest, r.Size.CPULimit, b.MinCPU, b.MaxCPU, 3)
		checkSize(t, "memory", r.Size.MemoryRequest, r.Size.MemoryLimit, b.MinMemory, b.MaxMemory, 0)
		for _, c := range []struct {
			bit   uint16
			value string
			got   resource.Quantity
		}{
			{sendCPU, cpu, r.Size.CPURequest}, {sendCPULimit, cpuLimit, r.Size.CPULimit},
			{sendMemory, mem, r.Size.MemoryRequest}, {sendMemoryLimit, memLimit, r.Size.MemoryLimit},
		} {
			if send&c.bit == 0 {
				continue
			}
			sent, _ := exactValue(c.value)
			got, ok := exactValue(c.got.String())
			if !ok || got.Cmp(sent) != 0 {
				t.Fatalf("%q came back as %q", c.value, c.got.String())
			}
		}
		if r.IdleTimeout < b.MinIdle || r.IdleTimeout > b.MaxIdle {
			t.Fatalf("IdleTimeout %v outside [%v, %v]", r.IdleTimeout, b.MinIdle, b.MaxIdle)
		}
		wantToken := ""
		for _, f := range fields {
			if strings.EqualFold(f.Name, activator.HeaderSession) {
				wantToken = f.Value
			}
		}
		if r.Token != wantToken {
			t.Fatalf("Token = %q, want %q", r.Token, wantToken)
		}
	})
}

// checkSize checks one resource of an accepted result, with exact arithmetic.
func checkSize(t *testing.T, what string, req, lim, lo, hi resource.Quantity, unitDigits int) {
	t.Helper()
	lor, _ := exactValue(lo.String())
	hir, _ := exactValue(hi.String())
	for _, q := range []resource.Quantity{req, lim} {
		s := q.String()
		x, ok := exactValue(s)
		if !ok {
			t.Fatalf("%s %q does not read back", what, s)
		}
		if x.Cmp(lor) < 0 || x.Cmp(hir) > 0 {
			t.Fatalf("%s %s outside [%s, %s]", what, s, lo.String(), hi.String())
		}
		if !new(big.Rat).Mul(x, new(big.Rat).SetFrac64(pow10(unitDigits), 1)).IsInt() {
			t.Fatalf("%s %s is finer than its unit", what, s)
		}
		// Neg drops the string ParseQuantity caches, so String recomputes it.
		fresh := q.DeepCopy()
		fresh.Neg()
		fresh.Neg()
		if fresh.String() != s {
			t.Fatalf("%s %q is not canonical; Kubernetes writes it %q", what, s, fresh.String())
		}
	}
	if req.Cmp(lim) > 0 {
		t.Fatalf("%s request %s above limit %s", what, req.String(), lim.String())
	}
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// shouldAccept restates the rules of the package doc, using exactValue for amounts.
func shouldAccept(fields []activator.Header, b Bounds) bool {
	vals := map[string]string{}
	for _, f := range fields {
		if !hasPrefixFold(f.Name, activator.HeaderPrefix) {
			continue
		}
		name := strings.ToLower(f.Name)
		if indexOf(name) < 0 {
			return false
		}
		if _, dup := vals[name]; dup {
			return false
		}
		vals[name] = f.Value
	}
	for _, k := range []struct {
		req, lim   string
		lo, hi     resource.Quantity
		unitDigits int
	}{
		{activator.HeaderCPU, activator.HeaderCPULimit, b.MinCPU, b.MaxCPU, 3},
		{activator.HeaderMemory, activator.HeaderMemoryLimit, b.MinMemory, b.MaxMemory, 0},
	} {
		lo, _ := exactValue(k.lo.String())
		hi, _ := exactValue(k.hi.String())
		var amounts []*big.Rat
		for _, h := range []string{k.req, k.lim} {
			v, sent := vals[h]
			if !sent {
				continue
			}
			x, ok := exactValue(v)
			if !ok || x.Cmp(lo) < 0 || x.Cmp(hi) > 0 ||
				!new(big.Rat).Mul(x, new(big.Rat).SetFrac64(pow10(k.unitDigits), 1)).IsInt() {
				return false
			}
			amounts = append(amounts, x)
		}
		if len(amounts) == 2 && amounts[1].Cmp(amounts[0]) < 0 {
			return false
		}
	}
	if v, sent := vals[activator.HeaderIdleTimeout]; sent {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || len(v) > MaxValueLen || strings.TrimSpace(v) != v {
			return false
		}
	}
	if v, sent := vals[activator.HeaderSession]; sent && (v == "" || strings.TrimSpace(v) != v) {
		return false
	}
	return true
}

// exactValue reads a quantity as the package doc defines it, without
// k8s.io/apimachinery: the mantissa and a power of ten go through big.Rat's own
// decimal parser, and a binary suffix multiplies the result.
func exactValue(s string) (*big.Rat, bool) {
	if s == "" || len(s) > MaxValueLen || strings.TrimSpace(s) != s {
		return nil, false
	}
	i := 0
	if s[0] == '+' || s[0] == '-' {
		i++
	}
	for i < len(s) && strings.IndexByte("0123456789.", s[i]) >= 0 {
		i++
	}
	mantissa, suffix := s[:i], s[i:]
	if strings.Count(mantissa, ".") > 1 || strings.Trim(mantissa, "+-.") == "" {
		return nil, false
	}
	exp, binary := "", 0
	decimal := map[string]string{"": "0", "n": "-9", "u": "-6", "m": "-3", "k": "3", "M": "6", "G": "9", "T": "12", "P": "15", "E": "18"}
	binaries := map[string]int{"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
	if e, ok := decimal[suffix]; ok {
		exp = e
	} else if k, ok := binaries[suffix]; ok {
		exp, binary = "0", k
	} else if len(suffix) > 1 && (suffix[0] == 'e' || suffix[0] == 'E') {
		n, err := strconv.Atoi(suffix[1:])
		if err != nil || n < -MaxExponent || n > MaxExponent {
			return nil, false
		}
		exp = strconv.Itoa(n)
	} else {
		return nil, false
	}
	x, ok := new(big.Rat).SetString(mantissa + "e" + exp)
	if !ok {
		return nil, false
	}
	if binary > 0 {
		x.Mul(x, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(binary))))
	}
	return x, true
}
