package termimg

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Detect picks the best mode the terminal is known to support from its
// environment (getenv is usually os.Getenv):
//
//   - inside tmux or screen (TMUX, TERM=screen*/tmux*): half-blocks, since
//     images need passthrough that is off by default;
//   - kitty (KITTY_WINDOW_ID, TERM=xterm-kitty) and Ghostty: kitty;
//   - iTerm2 (TERM_PROGRAM=iTerm.app, LC_TERMINAL=iTerm2), WezTerm, VS Code
//     and mintty: iTerm2 inline images;
//   - foot, mlterm, contour, Konsole, Windows Terminal: sixel;
//   - anything else (xterm, VTE, linux console, plain SSH): half-blocks.
//     xterm's sixel support depends on how it was started; ask with a DA1
//     query (QuerySixel, or HasSixel on the reply) to upgrade.
//
// NO_COLOR or TERM=dumb give ModeNone.
func Detect(getenv func(string) string) Mode {
	termName := strings.ToLower(getenv("TERM"))
	prog := getenv("TERM_PROGRAM")
	switch {
	case termName == "dumb" || getenv("NO_COLOR") != "":
		return ModeNone
	case InTmux(getenv):
		return ModeHalfblock
	case getenv("KITTY_WINDOW_ID") != "" || termName == "xterm-kitty" || termName == "xterm-ghostty" || prog == "ghostty":
		return ModeKitty
	case prog == "iTerm.app" || getenv("LC_TERMINAL") == "iTerm2" || prog == "WezTerm" || prog == "vscode" || prog == "mintty":
		return ModeITerm
	case strings.HasPrefix(termName, "foot") || strings.HasPrefix(termName, "mlterm") || strings.HasPrefix(termName, "contour") ||
		getenv("KONSOLE_VERSION") != "" || getenv("WT_SESSION") != "":
		return ModeSixel
	}
	return ModeHalfblock
}

// Resolve turns ModeAuto into Detect's choice and returns other modes as
// they are.
func Resolve(m Mode, getenv func(string) string) Mode {
	if m == ModeAuto {
		return Detect(getenv)
	}
	return m
}

// InTmux reports whether the program runs inside tmux or GNU screen.
func InTmux(getenv func(string) string) bool {
	t := strings.ToLower(getenv("TERM"))
	return getenv("TMUX") != "" || strings.HasPrefix(t, "screen") || strings.HasPrefix(t, "tmux")
}

// RequestDA1 is the Primary Device Attributes query; terminals answer
// CSI ? Pp ; … c, where attribute 4 means sixel graphics.
const RequestDA1 = "\x1b[c"

// ParseDA1 parses a Primary Device Attributes reply ("\x1b[?63;1;4c") into
// its attributes.
func ParseDA1(reply string) ([]int, error) {
	i := strings.Index(reply, "\x1b[?")
	if i < 0 {
		return nil, errors.New("da1 reply: no CSI ? prefix")
	}
	rest := reply[i+3:]
	j := strings.IndexByte(rest, 'c')
	if j < 0 {
		return nil, errors.New("da1 reply: unterminated")
	}
	var attrs []int
	for f := range strings.SplitSeq(rest[:j], ";") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("da1 reply: attribute %q: %w", f, err)
		}
		attrs = append(attrs, n)
	}
	return attrs, nil
}

// HasSixel reports whether Primary Device Attributes include sixel (4).
func HasSixel(attrs []int) bool { return slices.Contains(attrs, 4) }
