// Package session issues session tokens, starts each session's instance through a
// runtime, and keeps the table of live sessions.
//
// A session starts with the first request on a new client connection and lives
// until its instance is reaped or goes away. Its token is "<id>.<secret>": the id
// names the session in logs, labels and the sessions view, and only the SHA-256
// of the whole token is kept, so a table, a log line or a pod annotation never
// holds a usable token. A client that reconnects presents the token to re-attach;
// an unknown token, or one whose session has ended, is NOT_FOUND, never a fresh
// instance.
//
// A session counts its open streams. The idle clock runs only while none is
// open, so a stream that stays quiet for hours keeps its instance; HTTP/2 PINGs
// are not streams and never count. Ending a session for idleness is atomic with
// a stream opening: either the stream is counted and the session lives, or the
// session has ended and the stream is refused.
package session
