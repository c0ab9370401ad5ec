// Package relay is tether's data path: an HTTP/2 relay that terminates the client's
// connection and the connection to its instance, and moves frames between them.
//
// It works on frames rather than on requests and response bodies. A DATA frame
// read from one side is written to the other from the read buffer, without an
// allocation; trailers, Trailers-Only responses, RST_STREAM and GOAWAY keep their
// exact meaning because they are relayed as what they are, not rebuilt from an
// http.Response. Each side has its own flow control: bytes a peer sends are
// granted back only once they have left the gateway, so a slow reader slows its
// writer instead of filling memory, and a request held during a cold start is
// bounded by the window the client was granted. Writes are batched: the goroutine
// reading a connection flushes what it wrote only when it has nothing more
// buffered to read, so a burst of messages costs one write per connection.
//
// There are no timeouts on streams. A quiet stream stays open for as long as both
// ends want it; deadlines come from the client's grpc-timeout and from the limits
// in Config, each of which says what it bounds. The one read deadline the relay
// sets on a connection never ends anything: it only moves an idle connection's
// wait to a goroutine with a smaller stack (see Config.ParkAfter).
//
// The relay holds no policy. A Handler decides where each new stream goes; the
// gateway package implements it with sessions and activation.
package relay
