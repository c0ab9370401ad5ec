package relay

import (
	"syscall"
	"unsafe"
)

// readFD and writeFD are read(2) and write(2) on a non-blocking socket, made
// without telling the Go scheduler that a system call is under way, as
// syscall.Read and syscall.Write do. On a non-blocking socket they never block,
// so there is nothing for the scheduler to hand over, and telling it is not
// free: on a process with nothing else to do, the first system call after a
// wait wakes the runtime's monitor thread (sysmon), which then polls every
// 20 µs until the process is idle again. With the gateway on one core, that
// was two context switches and a few microseconds of latency per request at
// low rates, 5% of a small call's whole trip through the gateway.
//
// The poller still does the waiting: both are only called from inside
// syscall.RawConn's Read and Write callbacks, which park on EAGAIN.

func readFD(fd uintptr, p []byte) (int, error)  { return rawIO(syscall.SYS_READ, fd, p) }
func writeFD(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, p) }

func rawIO(trap, fd uintptr, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
}
