//go:build linux

package termimg

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal's master and slave ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func TestQuerySixelOn(t *testing.T) {
	tests := []struct {
		name  string
		reply string
		want  bool
		err   bool
	}{
		{"vt340", "\x1b[?63;1;2;4;6;9;15;22c", true, false},
		{"no sixel", "\x1b[?65;1;9c", false, false},
		{"silent", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, slave := openPTY(t)
			go func() {
				buf := make([]byte, 16)
				n, _ := master.Read(buf)
				if string(buf[:n]) == RequestDA1 && tt.reply != "" {
					master.WriteString(tt.reply)
				}
			}()
			got, err := QuerySixelOn(slave, 300*time.Millisecond)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("QuerySixelOn = %v, %v; want %v, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}
