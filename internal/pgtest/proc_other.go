//go:build !unix

package pgtest

import "os/exec"

// setCredential does nothing: only Unix runs this process as root, the one
// case that needs another user.
func setCredential(*exec.Cmd, int, int) {}

// dieWithParent does nothing: only Linux can tie a child's life to its
// parent's.
func dieWithParent(*exec.Cmd) {}

// detach does nothing outside Unix.
func detach(*exec.Cmd) {}
