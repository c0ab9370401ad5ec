// Command tether-example is the example backend that tether puts behind its gateway:
// `make run` serves it, and the end-to-end tests start it as instances. It is an
// example, not part of the gateway, and is kept small enough to read in one sitting.
//
// Each instance belongs to one session, so the state it keeps (a counter and a
// key-value map, see examplepb) is that session's state and dies with the instance.
// The Session service has a method of every gRPC kind so that tests can exercise
// each path through the gateway; Info reports the size the instance was started
// with (the TETHER_* environment) and timestamps that let a benchmark measure
// activation overhead on the instance's own clock.
//
// It also serves grpc.health.v1, which reports SERVING once it listens, and server
// reflection, so that `grpcurl -plaintext ADDR list` works.
//
// Usage:
//
//	tether-example [-listen ADDR] [-startup-delay DURATION]
//
// -listen defaults to :$PORT, and PORT to 50051. -startup-delay sleeps before
// listening, to simulate a slow cold start. SIGTERM or SIGINT stops it gracefully,
// within 10 seconds.
package main
