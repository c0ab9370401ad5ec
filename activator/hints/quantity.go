package hints

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
)

// MaxExponent bounds n in a quantity such as 1e<n>. Kubernetes' own range is about
// 1e-9 to 1e18, while the cost of comparing a quantity grows with its exponent:
// 1e999999 takes 30ms, and 1e2147483647 does not finish.
const MaxExponent = 30

// kind is one resource with its headers and the operator's bounds for it.
type kind struct {
	request, limit string // header names
	def, min, max  resource.Quantity
	envMin, envMax string
	unit           resource.Scale // the finest amount Kubernetes can give
	tooFine        string
}

func cpuKind(b Bounds) kind {
	return kind{
		request: activator.HeaderCPU, limit: activator.HeaderCPULimit,
		def: b.DefaultCPU, min: b.MinCPU, max: b.MaxCPU,
		envMin: EnvMinCPU, envMax: EnvMaxCPU,
		unit:    resource.Milli,
		tooFine: "finer than 1m, the smallest amount of CPU Kubernetes gives",
	}
}

func memoryKind(b Bounds) kind {
	return kind{
		request: activator.HeaderMemory, limit: activator.HeaderMemoryLimit,
		def: b.DefaultMemory, min: b.MinMemory, max: b.MaxMemory,
		envMin: EnvMinMemory, envMax: EnvMaxMemory,
		unit:    0,
		tooFine: "not a whole number of bytes (m means milli; for megabytes write M or Mi)",
	}
}

type pair struct{ request, limit resource.Quantity }

// sizeOf applies Kubernetes' defaulting: a limit defaults to the request and a request
// to the limit, and only when neither is sent does the operator's default apply.
func sizeOf(k kind, req string, reqSent bool, lim string, limSent bool) (pair, error) {
	var p pair
	var err error
	if reqSent {
		if p.request, err = k.parse(k.request, req); err != nil {
			return pair{}, err
		}
	}
	if limSent {
		if p.limit, err = k.parse(k.limit, lim); err != nil {
			return pair{}, err
		}
	}
	switch {
	case reqSent && limSent:
		if p.limit.Cmp(p.request) < 0 {
			return pair{}, hintError(k.limit, lim, fmt.Sprintf(
				"below %s %s; a limit must be at least its request", k.request, p.request.String()))
		}
	case reqSent:
		p.limit = p.request.DeepCopy()
	case limSent:
		p.request = p.limit.DeepCopy()
	default:
		// The copy is canonical and shares no memory with b, so a caller that
		// changes the Size in place cannot change the operator's default.
		d, ok := canonical(k.def)
		if !ok {
			d = k.def.DeepCopy()
		}
		p.request, p.limit = d, d.DeepCopy()
	}
	return p, nil
}

// parse judges one quantity header. The order of the checks decides which reason a
// client reads, from the most basic to the most specific.
func (k kind) parse(header, v string) (resource.Quantity, error) {
	exact, reason := lexQuantity(v)
	if reason != "" {
		return resource.Quantity{}, hintError(header, v, reason)
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return resource.Quantity{}, hintError(header, v, "not a Kubernetes quantity; write one like 500m, 2, 512Mi or 4Gi")
	}
	switch exact.Sign() {
	case 0:
		return resource.Quantity{}, hintError(header, v, "must be greater than zero")
	case -1:
		return resource.Quantity{}, hintError(header, v, "negative; must be greater than zero")
	}
	// q may be rounded up to a whole nanounit, never down, so against bounds that
	// are whole units it is below or above exactly when the value sent is.
	if q.Cmp(k.min) < 0 {
		return resource.Quantity{}, hintError(header, v, fmt.Sprintf("below the minimum %s (%s)", k.min.String(), k.envMin))
	}
	if q.Cmp(k.max) > 0 {
		return resource.Quantity{}, hintError(header, v, fmt.Sprintf("above the maximum %s (%s)", k.max.String(), k.envMax))
	}
	if !isMultiple(exact, k.unit) {
		return resource.Quantity{}, hintError(header, v, k.tooFine)
	}
	c, ok := canonical(q)
	if ok {
		back, _ := lexQuantity(c.String())
		ok = back != nil && back.Cmp(exact) == 0
	}
	if !ok {
		// Kubernetes rounds and caps some values silently and prints others
		// wrong ("2000E" as "2"). The bounds should refuse all of those first; this
		// is the last guard that an instance is told the size it was sent.
		return resource.Quantity{}, hintError(header, v, "cannot be written back exactly as a Kubernetes quantity")
	}
	return c, nil
}

// canonical returns q re-parsed from its canonical spelling, which drops the string
// ParseQuantity caches ("+1" would otherwise print as "+1") and proves the spelling
// means the same amount.
func canonical(q resource.Quantity) (resource.Quantity, bool) {
	num, suf := q.CanonicalizeBytes(make([]byte, 0, 24))
	s := string(num) + string(suf)
	c, err := resource.ParseQuantity(s)
	if err != nil || c.Cmp(q) != 0 || c.String() != s {
		return resource.Quantity{}, false
	}
	return c, true
}

// isMultiple reports whether x is a whole number of 10^unit.
func isMultiple(x *big.Rat, unit resource.Scale) bool {
	y := new(big.Rat).Mul(x, pow(10, -int(unit)))
	return y.IsInt()
}

// pow returns base^n as a fraction; n may be negative.
func pow(base int64, n int) *big.Rat {
	p := new(big.Int).Exp(big.NewInt(base), big.NewInt(int64(abs(n))), nil)
	if n < 0 {
		return new(big.Rat).SetFrac(big.NewInt(1), p)
	}
	return new(big.Rat).SetInt(p)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// lexQuantity checks the grammar Parse accepts, a subset of Kubernetes', and says
// what is wrong in words a client can act on. For a good value it returns the amount
// exactly, which ParseQuantity does not: it rounds up to a nanounit and caps binary
// values at 2^63-1.
func lexQuantity(v string) (*big.Rat, string) {
	if reason := blankReason(v); reason != "" {
		return nil, reason
	}
	if len(v) > MaxValueLen {
		return nil, fmt.Sprintf("longer than %d bytes", MaxValueLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return nil, "contains non-ASCII characters; write digits as 0-9"
		}
	}
	if strings.ContainsAny(v, ",;") {
		return nil, "a list; send one quantity"
	}
	i := 0
	negative := v[0] == '-'
	if v[0] == '+' || v[0] == '-' {
		i++
	}
	start := i
	for i < len(v) && isDigit(v[i]) {
		i++
	}
	whole, frac := v[start:i], ""
	if i < len(v) && v[i] == '.' {
		i++
		start = i
		for i < len(v) && isDigit(v[i]) {
			i++
		}
		frac = v[start:i]
	}
	if whole == "" && frac == "" {
		return nil, "not a number; write a quantity like 500m, 2, 512Mi or 4Gi"
	}
	digits, ok := new(big.Int).SetString("0"+whole+frac, 10)
	if !ok {
		return nil, "not a number; write a quantity like 500m, 2, 512Mi or 4Gi"
	}
	x := new(big.Rat).SetFrac(digits, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
	if negative {
		x.Neg(x)
	}

	suf := v[i:]
	if m, ok := multipliers[suf]; ok {
		return x.Mul(x, m), ""
	}
	if exp, ok := exponent(suf); ok {
		n, err := strconv.Atoi(exp)
		if err != nil || n < -MaxExponent || n > MaxExponent {
			return nil, fmt.Sprintf("exponent out of range; it must be between -%d and %d", MaxExponent, MaxExponent)
		}
		return x.Mul(x, pow(10, n)), ""
	}
	reason := fmt.Sprintf("unknown suffix %q; use one of n u m k M G T P E Ki Mi Gi Ti Pi Ei, or an exponent like e3", suf)
	if strings.HasSuffix(suf, "B") || strings.HasSuffix(suf, "b") {
		reason += " (quantities have no B: 1G is 10^9 bytes, 1Gi is 2^30)"
	}
	return nil, reason
}

// multipliers are Kubernetes' suffixes, besides a decimal exponent.
var multipliers = map[string]*big.Rat{
	"": pow(10, 0), "n": pow(10, -9), "u": pow(10, -6), "m": pow(10, -3),
	"k": pow(10, 3), "M": pow(10, 6), "G": pow(10, 9), "T": pow(10, 12), "P": pow(10, 15), "E": pow(10, 18),
	"Ki": pow(2, 10), "Mi": pow(2, 20), "Gi": pow(2, 30), "Ti": pow(2, 40), "Pi": pow(2, 50), "Ei": pow(2, 60),
}

// exponent returns the signed digits of a suffix e<n> or E<n>.
func exponent(suf string) (string, bool) {
	if len(suf) < 2 || (suf[0] != 'e' && suf[0] != 'E') {
		return "", false
	}
	n := suf[1:]
	digits := n
	if n[0] == '+' || n[0] == '-' {
		digits = n[1:]
	}
	if digits == "" {
		return "", false
	}
	for i := 0; i < len(digits); i++ {
		if !isDigit(digits[i]) {
			return "", false
		}
	}
	return n, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
