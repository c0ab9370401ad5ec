package main

import _ "embed"

// benchProto is the service ghz calls; the backend echoes it without decoding.
//
//go:embed bench.proto
var benchProto string
