package hints_test

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tetherhq/tether/activator"
	"github.com/tetherhq/tether/activator/hints"
)

func ExampleParse() {
	b := hints.Bounds{
		DefaultCPU: *resource.NewMilliQuantity(500, resource.DecimalSI),
		MinCPU:     *resource.NewMilliQuantity(100, resource.DecimalSI),
		MaxCPU:     *resource.NewQuantity(4, resource.DecimalSI),

		DefaultMemory: *resource.NewQuantity(512<<20, resource.BinarySI),
		MinMemory:     *resource.NewQuantity(64<<20, resource.BinarySI),
		MaxMemory:     *resource.NewQuantity(8<<30, resource.BinarySI),

		DefaultIdle: 10 * time.Minute, MinIdle: time.Minute, MaxIdle: time.Hour,
	}
	if err := b.Validate(); err != nil {
		panic(err)
	}

	r, err := hints.Parse([]activator.Header{
		{Name: "content-type", Value: "application/grpc"},
		{Name: activator.HeaderCPU, Value: "1.5"},
		{Name: activator.HeaderMemoryLimit, Value: "2Gi"},
		{Name: activator.HeaderIdleTimeout, Value: "24h"},
	}, b)
	fmt.Println(r.Size, r.IdleTimeout, err)

	_, err = hints.Parse([]activator.Header{{Name: activator.HeaderCPU, Value: "8"}}, b)
	fmt.Println(err)

	_, err = hints.Parse([]activator.Header{{Name: "x-tether-cpus", Value: "2"}}, b)
	fmt.Println(err)
	// Output:
	// cpu=1500m/1500m memory=2Gi/2Gi 1h0m0s <nil>
	// x-tether-cpu: "8": above the maximum 4 (TETHER_MAX_CPU)
	// x-tether-cpus: "2": unknown header (did you mean x-tether-cpu?); the request headers are x-tether-cpu, x-tether-cpu-limit, x-tether-memory, x-tether-memory-limit, x-tether-idle-timeout and x-tether-session
}
