package pgtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
)

// watchdogScript waits until its standard input closes, which happens when
// this process ends however it ends (a test timeout's panic, a kill), and
// then stops the cluster and removes its temp dir: no orphan server is left
// behind. Close kills it first, so on the normal path it does nothing.
const watchdogScript = `read -r line; "$0" stop -D "$1" -m immediate -w >/dev/null 2>&1; rm -rf "$2"`

// watchdog is the shell running watchdogScript for one local cluster, or
// dockerWatchdogScript for one container.
type watchdog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // held open for the life of this process
}

// ownerWatchdogScript is watchdogScript for a cluster owned by another
// process (WithOwner): it waits until that process has ended. Running as
// the server's user, it may not signal a root owner: /proc tells then.
const ownerWatchdogScript = `while kill -0 "$3" 2>/dev/null || [ -e "/proc/$3" ]; do sleep 1; done; "$0" stop -D "$1" -m immediate -w >/dev/null 2>&1; rm -rf "$2"`

func startWatchdog(lc *localCluster) (*watchdog, error) {
	if lc.opts.owner != 0 {
		cmd := exec.Command("/bin/sh", "-c", ownerWatchdogScript, lc.bins.pgCtl, lc.dataDir, lc.dir, strconv.Itoa(lc.opts.owner))
		cmd.Dir = lc.dir
		cmd.Env = serverEnv()
		detach(cmd)
		if lc.as != nil {
			setCredential(cmd, lc.as.uid, lc.as.gid)
		}
		// Not waited for: it outlives this process, and a goroutine waiting
		// for it would too.
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("pgtest: watchdog: %w", err)
		}
		return nil, nil
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, lc.bins.pgCtl, lc.dataDir, lc.dir)
	cmd.Dir = lc.dir
	cmd.Env = serverEnv()
	detach(cmd) // a Ctrl-C to the test must not end the watchdog first
	if lc.as != nil {
		setCredential(cmd, lc.as.uid, lc.as.gid)
	}
	return runWatchdog(cmd)
}

// dockerWatchdogScript is watchdogScript for a container: it removes the
// container and its anonymous volumes.
const dockerWatchdogScript = `read -r line; "$0" rm -f -v "$1" >/dev/null 2>&1`

// startDockerWatchdog starts a watchdog that removes container id with the
// docker program at bin when this process ends.
func startDockerWatchdog(bin, id string) (*watchdog, error) {
	cmd := exec.Command("/bin/sh", "-c", dockerWatchdogScript, bin, id)
	detach(cmd)
	return runWatchdog(cmd)
}

// runWatchdog starts cmd with a pipe on its standard input that stays open
// for the life of this process.
func runWatchdog(cmd *exec.Cmd) (*watchdog, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("pgtest: watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		_ = stdin.Close()
		return nil, fmt.Errorf("pgtest: watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, stdin: stdin}, nil
}

// stop ends the watchdog without letting it act.
func (w *watchdog) stop() {
	if w == nil {
		return
	}
	if err := w.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = w.stdin.Close() // it will act, harmlessly, on what is already gone
	}
	_ = w.cmd.Wait()
	_ = w.stdin.Close()
}
