package termimg

import (
	"encoding/base64"
	"fmt"
	"image"
)

// ITerm draws img at the cursor with iTerm2's inline image escape (OSC
// 1337 File=…, PNG payload), sized in cells to fit cols×rows with the
// image's aspect ratio. WezTerm and others understand it too.
func ITerm(img image.Image, cols, rows int) string {
	c, r := CellSizeOptions(img, cols, rows, Options{Mode: ModeITerm})
	if c == 0 {
		return ""
	}
	data := encodePNG(img)
	if data == nil {
		return ""
	}
	return fmt.Sprintf("\x1b]1337;File=inline=1;size=%d;width=%d;height=%d;preserveAspectRatio=1:%s\a",
		len(data), c, r, base64.StdEncoding.EncodeToString(data))
}
