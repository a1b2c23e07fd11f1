//go:build unix

package tui

import (
	"os"

	"golang.org/x/sys/unix"
)

// ttyCellSize returns the terminal's cell size in pixels from the tty's
// window size (TIOCGWINSZ), or zeros when the terminal does not fill in
// the pixel fields.
func ttyCellSize(f *os.File) (w, h int) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 || ws.Xpixel == 0 || ws.Ypixel == 0 {
		return 0, 0
	}
	return int(ws.Xpixel) / int(ws.Col), int(ws.Ypixel) / int(ws.Row)
}
