package clamdtest

import "syscall"

// sysProcAttr has the kernel kill clamd if the process that started it dies
// without stopping it (a test binary killed at its -timeout, a benchmark
// harness killed), and puts clamd in a process group of its own, so that a
// Ctrl-C in the terminal reaches only that process, which stops clamd
// itself (or dies, and takes clamd with it).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
