package clamdtest

import "syscall"

// sysProcAttr has the kernel kill clamd if the test process dies without
// stopping it (a test binary killed at its -timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
