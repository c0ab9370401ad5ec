// Package gateway is tether's front door: one address that every client dials.
//
// It accepts h2c with prior knowledge, or TLS with ALPN h2, and gives each client
// connection its own instance. The first stream on a new connection starts an
// activation: the hints are checked at once, then the stream is held, without
// its body being read beyond the window it was granted, while the instance cold
// starts; other streams that arrive meanwhile wait for the same activation, so
// one connection never starts two instances. Once the instance is ready the held
// streams are forwarded and the connection is pinned: every later stream on it
// goes to the same instance. The first response carries the session token, and
// a new connection that presents it is pinned to the same instance.
//
// A held stream waits no longer than its grpc-timeout, and no activation lasts
// longer than TETHER_ACTIVATION_TIMEOUT. The activation belongs to the connection,
// not to the stream that started it: a client whose first call gave up still
// finds its instance on the next call. A connection that goes away before its
// token was delivered takes its session with it, because nobody could ever
// re-attach to it.
//
// Every error the gateway makes is a gRPC status, Trailers-Only with
// content-type application/grpc (see Status). An HTTP/1 client gets a quick 505.
//
// The bytes themselves move through package relay.
package gateway
