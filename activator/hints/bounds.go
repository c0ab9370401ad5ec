package hints

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The largest maxima Validate accepts. They are far beyond any instance, and low
// enough that every quantity Parse lets through fits Kubernetes' int64 fields:
// MilliValue of a CPU amount and Value of a memory amount cannot overflow, and a
// value ParseQuantity capped at 2^63-1 bytes can never pass as in bounds.
var (
	ceilingCPU    = *resource.NewQuantity(1_000_000, resource.DecimalSI) // cores
	ceilingMemory = *resource.NewQuantity(1<<60, resource.BinarySI)      // 1Ei
)

// Validate reports every problem with b, each naming its variable, so an operator
// fixes them in one pass. Parse relies on b being valid.
func (b Bounds) Validate() error {
	var errs []error
	errs = append(errs, validateQuantities(cpuKind(b), EnvDefaultCPU, ceilingCPU)...)
	errs = append(errs, validateQuantities(memoryKind(b), EnvDefaultMemory, ceilingMemory)...)
	errs = append(errs, validateDurations(b)...)
	return errors.Join(errs...)
}

func validateQuantities(k kind, envDef string, ceiling resource.Quantity) []error {
	var errs []error
	vals := []struct {
		env string
		q   resource.Quantity
	}{{envDef, k.def}, {k.envMin, k.min}, {k.envMax, k.max}}
	good := true
	for _, v := range vals {
		var reason string
		switch {
		case v.q.Sign() <= 0:
			reason = "must be greater than zero"
		case v.q.Cmp(ceiling) > 0:
			reason = "above " + ceiling.String() + ", the largest supported"
		case !roundsExactly(v.q, k.unit):
			reason = k.tooFine
		}
		if reason != "" {
			good = false
			errs = append(errs, fmt.Errorf("%s: %s: %s", v.env, v.q.String(), reason))
		}
	}
	if !good {
		return errs
	}
	if k.min.Cmp(k.max) > 0 {
		errs = append(errs, fmt.Errorf("%s: %s: above %s (%s)", k.envMin, k.min.String(), k.envMax, k.max.String()))
	}
	if k.def.Cmp(k.min) < 0 {
		errs = append(errs, fmt.Errorf("%s: %s: below %s (%s)", envDef, k.def.String(), k.envMin, k.min.String()))
	}
	if k.def.Cmp(k.max) > 0 {
		errs = append(errs, fmt.Errorf("%s: %s: above %s (%s)", envDef, k.def.String(), k.envMax, k.max.String()))
	}
	return errs
}

func validateDurations(b Bounds) []error {
	var errs []error
	vals := []struct {
		env string
		d   time.Duration
	}{{EnvDefaultIdle, b.DefaultIdle}, {EnvMinIdle, b.MinIdle}, {EnvMaxIdle, b.MaxIdle}}
	for _, v := range vals {
		if v.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s: must be greater than zero", v.env, v.d))
		}
	}
	if errs != nil {
		return errs
	}
	if b.MinIdle > b.MaxIdle {
		errs = append(errs, fmt.Errorf("%s: %s: above %s (%s)", EnvMinIdle, b.MinIdle, EnvMaxIdle, b.MaxIdle))
	}
	if b.DefaultIdle < b.MinIdle {
		errs = append(errs, fmt.Errorf("%s: %s: below %s (%s)", EnvDefaultIdle, b.DefaultIdle, EnvMinIdle, b.MinIdle))
	}
	if b.DefaultIdle > b.MaxIdle {
		errs = append(errs, fmt.Errorf("%s: %s: above %s (%s)", EnvDefaultIdle, b.DefaultIdle, EnvMaxIdle, b.MaxIdle))
	}
	return errs
}

// roundsExactly reports whether q is a whole number of 10^unit.
func roundsExactly(q resource.Quantity, unit resource.Scale) bool {
	r := q.DeepCopy()
	return r.RoundUp(unit)
}
