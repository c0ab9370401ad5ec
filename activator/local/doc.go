// Package local is the runtime that gives each session its own child process on the
// gateway's machine. It is tether's default runtime: it needs no cluster.
//
// # The command
//
// The operator's command line (TETHER_LOCAL_COMMAND) is split into words the way a
// POSIX shell splits them: blanks separate words, single quotes keep everything
// literally, double quotes keep everything but \" \\ \$ \` literally, and a backslash
// outside quotes escapes the next character. Nothing is expanded and nothing is
// globbed. Where a shell would do more than split (pipes, redirections, ;, &,
// $VAR, `cmd`, comments), New refuses the command rather than run something other
// than what the operator meant; such a command needs a shell of its own:
//
//	sh -c 'exec my-server --listen 127.0.0.1:$PORT 2>>/var/log/my-server.log'
//
// (exec matters: it makes the server the process the gateway watches and signals.)
// The program is looked up in PATH once, by New, so that a typo fails at startup and
// not on the first call.
//
// Each instance gets a free loopback port. "{port}" in any argument after the first
// is replaced by it, and it is also in the instance's environment as PORT. The port
// is found by binding 127.0.0.1:0 and closing the socket again, so another process
// on the machine may take it before the instance binds it. The runtime never hands
// the same port to two of its own live instances; against other processes the
// window is a few milliseconds, and losing it makes the instance fail to bind and
// exit, which Start reports as a *activator.StartError.
//
// The instance's environment is Config.Env, then PORT, the four TETHER_* size
// variables and TETHER_SESSION; later entries win over earlier ones with the same
// name.
//
// # Lifecycle
//
// Start reports PhaseRequested, PhaseScheduled (always "local"), PhaseStarted with
// the pid, and PhaseReady once the Prober accepts the instance's address. The probe
// is retried every 100µs for the first 250ms, then on a backoff growing to 5ms,
// so a cold start costs little
// more than the instance's own start-up. If the process exits first, Start returns a
// *activator.StartError at once, with the exit code or signal and the last lines the
// process wrote to stderr. If ctx ends first, Start stops the process and returns
// ctx.Err().
//
// Once an instance's process has exited and been reaped, Done is closed and Err is
// a *activator.GoneError whose reason is "stopped: <reason given to Stop>", or how
// the process ended ("exit code 2", "killed by SIGSEGV") followed by its last
// stderr lines.
//
// An instance is its process group: it is started with Setpgid, Stop signals the
// whole group (SIGTERM, then SIGKILL after Config.StopGrace), and when the main
// process exits, whatever is left of its group is killed before the process is
// reaped, so that a pid still held by the zombie can never name an unrelated group.
//
// # Surviving the gateway's death
//
// Each child is started with Pdeathsig SIGKILL, so the kernel kills it when the
// gateway dies, even by SIGKILL or OOM kill. Linux sends that signal when the thread
// that forked the child exits, not the process. Go threads normally live as long as
// the process, but a goroutine that exits while locked to its thread
// (runtime.LockOSThread) takes the thread with it, and any code in the gateway may
// do that on any thread. So each instance is forked from a goroutine that locks its
// own thread and keeps it locked until the child has been reaped: no other goroutine
// can run on that thread, so only the gateway's death or the child's exit can end
// it. The cost is one OS thread per live instance, which waiting for the child
// would hold anyway.
//
// Pdeathsig reaches only the direct child. Processes it starts itself survive a
// SIGKILL of the gateway unless they set up their own way to die with their
// parent; a plain Stop or Close still reaches them through the process group.
//
// # Output
//
// Each non-empty line an instance writes to stdout or stderr becomes one log record
// at Info, with the attributes session, instance and stream. Lines longer than 64 KiB are
// cut, logged with truncated=true, and the rest of the line is skipped.
package local
