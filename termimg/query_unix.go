//go:build unix

package termimg

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/term"
)

// QuerySixel asks the controlling terminal (/dev/tty) whether it draws
// sixel, waiting at most timeout for the DA1 reply. It puts the terminal in
// raw mode for the query; do not use it while a TUI owns the terminal (the
// TUI sends RequestDA1 itself and reads the reply as an event).
func QuerySixel(timeout time.Duration) (bool, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("query sixel: %w", err)
	}
	defer tty.Close()
	return QuerySixelOn(tty, timeout)
}

// QuerySixelOn is QuerySixel on an open terminal device.
func QuerySixelOn(tty *os.File, timeout time.Duration) (bool, error) {
	old, err := term.MakeRaw(int(tty.Fd()))
	if err != nil {
		return false, fmt.Errorf("query sixel: raw mode: %w", err)
	}
	defer term.Restore(int(tty.Fd()), old)
	// A non-blocking duplicate goes through the runtime poller, so the
	// read deadline holds even for a terminal that never answers.
	fd, err := syscall.Dup(int(tty.Fd()))
	if err != nil {
		return false, fmt.Errorf("query sixel: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return false, fmt.Errorf("query sixel: %w", err)
	}
	nb := os.NewFile(uintptr(fd), tty.Name())
	defer func() {
		syscall.SetNonblock(fd, false) // O_NONBLOCK is shared with tty
		nb.Close()
	}()
	if _, err := nb.WriteString(RequestDA1); err != nil {
		return false, fmt.Errorf("query sixel: %w", err)
	}
	if err := nb.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return false, fmt.Errorf("query sixel: %w", err)
	}
	var reply []byte
	buf := make([]byte, 64)
	for {
		n, err := nb.Read(buf)
		reply = append(reply, buf[:n]...)
		if attrs, perr := ParseDA1(string(reply)); perr == nil {
			return HasSixel(attrs), nil
		}
		if err != nil {
			return false, fmt.Errorf("query sixel: no reply: %w", err)
		}
		if len(reply) > 256 {
			return false, fmt.Errorf("query sixel: unexpected reply %q", reply)
		}
	}
}
