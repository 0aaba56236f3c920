//go:build !linux

package clamdtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
