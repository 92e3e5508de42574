package devstack

import "syscall"

// childAttr puts the child in its own process group and has the kernel
// terminate it when this process dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
