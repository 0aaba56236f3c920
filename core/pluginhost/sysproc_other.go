//go:build !linux

package pluginhost

import "syscall"

// sysProcAttr returns the process attributes of a plugin process. Without
// a parent-death signal outside Linux, a plugin relies on the SDK's Serve,
// which exits when its host goes away.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
