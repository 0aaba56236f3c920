package pluginhost

import "syscall"

// sysProcAttr returns the process attributes of a plugin process. On Linux
// the kernel sends it SIGKILL when the thread that started it ends (the
// parent-death signal), so that a plugin never outlives its host, even one
// that is killed with SIGKILL or by the OOM killer. start keeps that thread
// alive for as long as the plugin runs (see startOnOwnThread). The kernel
// clears the signal when the credentials change; Go sets it in the child
// after switching user (SysProcAttr.Credential), so the two combine.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
