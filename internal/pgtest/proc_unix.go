//go:build unix && !linux

package pgtest

import (
	"os/exec"
	"syscall"
)

// setCredential makes cmd run as the given user and group.
func setCredential(cmd *exec.Cmd, uid, gid int) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// dieWithParent does nothing: only Linux can tie a child's life to its
// parent's.
func dieWithParent(*exec.Cmd) {}

// detach puts cmd in a process group of its own, out of reach of the
// signals a terminal sends to the test's group.
func detach(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}
