//go:build !linux

package jetbridge

import "os/exec"

// dieWithParent is best effort: only Linux can tie the server's life to
// the test process.
func dieWithParent(*exec.Cmd) {}
