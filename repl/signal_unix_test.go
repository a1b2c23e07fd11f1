//go:build unix

package repl

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRestoreOnSignal: SIGHUP (or SIGTERM) while the prompt holds the
// terminal in raw mode restores the terminal before the process ends
// (it stayed raw); after the line is read, the handler is gone.
func TestRestoreOnSignal(t *testing.T) {
	restored := make(chan bool, 1)
	exited := make(chan os.Signal, 1)
	stop := restoreOnSignal(func() { restored <- true }, func(s os.Signal) { exited <- s })
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restored:
	case <-time.After(5 * time.Second):
		t.Fatal("the terminal was not restored on SIGHUP")
	}
	if s := <-exited; s != syscall.SIGHUP {
		t.Errorf("exit with %v, want SIGHUP", s)
	}
	stop()

	stop = restoreOnSignal(func() { t.Error("restored without a signal") }, func(os.Signal) { t.Error("exited without a signal") })
	stop()
}
