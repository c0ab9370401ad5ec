// Package hints turns a client's x-tether-* request headers into the size and idle
// timeout of its instance, within the operator's Bounds. It does no I/O: the gateway
// calls Parse before it starts anything, and a *activator.HintError from Parse becomes
// INVALID_ARGUMENT.
//
// Header values are untrusted, and Kubernetes' quantity parser was not written for
// them (case B29: resource.MustParse on user input crashed controllers; values near
// 2^63 wrapped; "2000E" prints back as "2"). So every decision below errs towards
// rejecting a value with a reason the client can act on, and never guesses:
//
//   - Every header whose name starts with x-tether- is read, case-insensitively,
//     because a typo such as x-tether-cpus silently ignored would start an instance
//     of the wrong size. An unknown one is an error that lists the known ones. Other
//     headers are not looked at.
//   - Each header may be sent once. A repeat is an error even with the same value:
//     two values are a client bug, and picking one would hide it.
//   - A value must not be empty and must not have leading or trailing white space
//     (HTTP/2 forbids it, and "1Gi " is more likely a templating bug than a size).
//     A quantity or duration must be at most MaxValueLen bytes.
//   - Quantities (x-tether-cpu, x-tether-memory and their -limit forms) must match
//     [+-]digits[.digits][suffix], in ASCII, with a suffix from n u m k M G T P E
//     Ki Mi Gi Ti Pi Ei or a decimal exponent e<n> with |n| <= MaxExponent. The
//     grammar is checked before resource.ParseQuantity sees the value, because
//     ParseQuantity accepts "." and "Gi" as zero, wraps exponents beyond int32, and a
//     huge exponent makes a later Cmp build a number with that many digits
//     ("1e2147483647" never returns).
//   - A quantity must be greater than zero, and is then compared with Quantity.Cmp,
//     never through an int64, against the minimum and maximum; a value too small to
//     represent ("0.0001m" of cpu, rounded up to 100n by ParseQuantity) is below the
//     minimum. The reason names the bound and its variable, for example
//     "above the maximum 4 (TETHER_MAX_CPU)".
//   - CPU must be a whole number of millicores and memory a whole number of bytes:
//     Kubernetes cannot give an instance 1500u of CPU, and "500m" of memory is half a
//     byte, almost always meant as megabytes. This is judged on the value as sent,
//     which ParseQuantity would round up (0.0009999999999 to 1m).
//   - The result holds each quantity in canonical form ("1.5" becomes 1500m, "+1"
//     becomes 1), so that what the instance reads from TETHER_CPU_REQUEST is exactly
//     what the client asked. A value whose canonical form does not parse back to the
//     same amount is rejected rather than printed wrong.
//   - Limits default to the request. If only a limit is sent, the request defaults to
//     the limit, as Kubernetes does. Otherwise a missing request takes the operator's
//     default. Limits have the same bounds as requests, and a limit below its request
//     is an error naming both headers.
//   - x-tether-idle-timeout is a Go duration (30m, 1h30m) greater than zero. Unlike
//     sizes it is clamped into [MinIdle, MaxIdle], not rejected: a client asking to
//     be kept longer than allowed still gets a working session. Missing, it is
//     DefaultIdle.
//   - x-tether-session is passed through untouched; the session package judges it.
//     Being a secret, it is never echoed in an error.
//   - Values quoted in errors are cut to MaxValueLen bytes, so a client cannot make
//     the gateway log or return megabytes.
//
// Bounds.Validate is for the config layer. Parse assumes the bounds passed it; with
// invalid bounds it still never panics, but its answers mean nothing.
package hints
