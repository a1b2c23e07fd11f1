package termimg

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"strings"
)

// KittyChunk is the most base64 bytes one kitty graphics escape carries.
const KittyChunk = 4096

// KittyPlaceholder is the Unicode placeholder character of kitty's
// virtual placements.
const KittyPlaceholder = '\U0010EEEE'

// encodePNG encodes img as PNG with fast compression.
func encodePNG(img image.Image) []byte {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil
	}
	return buf.Bytes()
}

// kittyAPC writes payload as a sequence of kitty graphics escapes: the
// first carries keys, payloads are split in KittyChunk pieces with m=1 on
// all but the last.
func kittyAPC(keys string, payload []byte) string {
	data := base64.StdEncoding.EncodeToString(payload)
	var sb strings.Builder
	sb.Grow(len(data) + (len(data)/KittyChunk+1)*16 + len(keys))
	if len(data) <= KittyChunk {
		fmt.Fprintf(&sb, "\x1b_G%s;%s\x1b\\", keys, data)
		return sb.String()
	}
	for i := 0; i < len(data); i += KittyChunk {
		end := min(i+KittyChunk, len(data))
		more := 1
		if end == len(data) {
			more = 0
		}
		if i == 0 {
			fmt.Fprintf(&sb, "\x1b_G%s,m=%d;%s\x1b\\", keys, more, data[i:end])
		} else {
			fmt.Fprintf(&sb, "\x1b_Gm=%d;%s\x1b\\", more, data[i:end])
		}
	}
	return sb.String()
}

// Kitty draws img at the cursor with the kitty graphics protocol (PNG,
// transmitted and displayed at once), scaled by the terminal to the cells
// that fit cols×rows with the image's aspect ratio.
func Kitty(img image.Image, cols, rows int) string {
	c, r := CellSizeOptions(img, cols, rows, Options{Mode: ModeKitty})
	if c == 0 {
		return ""
	}
	data := encodePNG(img)
	if data == nil {
		return ""
	}
	return kittyAPC(fmt.Sprintf("a=T,f=100,c=%d,r=%d,q=2", c, r), data)
}

// KittyTransmit uploads img as kitty image id (1..255 keeps the id
// encodable as a 256-colour index) with a virtual placement of cols×rows
// cells, to be shown by KittyPlaceholders. Re-transmitting an id replaces
// the image in place.
func KittyTransmit(img image.Image, id uint32, cols, rows int) string {
	if img == nil || img.Bounds().Empty() || cols <= 0 || rows <= 0 {
		return ""
	}
	data := encodePNG(img)
	if data == nil {
		return ""
	}
	return kittyAPC(fmt.Sprintf("a=T,U=1,f=100,i=%d,c=%d,r=%d,q=2", id, cols, rows), data)
}

// KittyDelete frees kitty image id and its placements.
func KittyDelete(id uint32) string {
	return fmt.Sprintf("\x1b_Ga=d,d=I,i=%d,q=2\x1b\\", id)
}

// MaxPlaceholderCells is the largest row or column count that
// KittyPlaceholders can address.
var MaxPlaceholderCells = len(diacritics())

// KittyPlaceholders returns rows lines of cols placeholder cells that show
// the virtual placement of image id: every cell is U+10EEEE followed by
// the diacritics for its row and column, coloured with the image id
// (256-colour index for ids below 256, else 24-bit). Rows and columns are
// capped at MaxPlaceholderCells.
func KittyPlaceholders(id uint32, cols, rows int) string {
	d := diacritics()
	cols, rows = min(cols, len(d)), min(rows, len(d))
	if cols <= 0 || rows <= 0 {
		return ""
	}
	fg := fmt.Sprintf("\x1b[38;5;%dm", id)
	if id > 255 {
		fg = fmt.Sprintf("\x1b[38;2;%d;%d;%dm", (id>>16)&255, (id>>8)&255, id&255)
	}
	var sb strings.Builder
	for r := range rows {
		if r > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteString(fg)
		for c := range cols {
			sb.WriteRune(KittyPlaceholder)
			sb.WriteRune(d[r])
			sb.WriteRune(d[c])
		}
		sb.WriteString("\x1b[39m")
	}
	return sb.String()
}

// diacriticRanges are the first 100 entries of kitty's row/column
// diacritics table (combining marks of class 230), as inclusive ranges.
var diacriticRanges = [][2]rune{
	{0x0305, 0x0305}, {0x030D, 0x030E}, {0x0310, 0x0310}, {0x0312, 0x0312},
	{0x033D, 0x033F}, {0x0346, 0x0346}, {0x034A, 0x034C}, {0x0350, 0x0352},
	{0x0357, 0x0357}, {0x035B, 0x035B}, {0x0363, 0x036F}, {0x0483, 0x0487},
	{0x0592, 0x0595}, {0x0597, 0x0599}, {0x059C, 0x05A1}, {0x05A8, 0x05A9},
	{0x05AB, 0x05AC}, {0x05AF, 0x05AF}, {0x05C4, 0x05C4}, {0x0610, 0x0617},
	{0x0657, 0x065B}, {0x065D, 0x065E}, {0x06D6, 0x06DC}, {0x06DF, 0x06E2},
	{0x06E4, 0x06E4}, {0x06E7, 0x06E8}, {0x06EB, 0x06EC}, {0x0730, 0x0730},
	{0x0732, 0x0733}, {0x0735, 0x0736}, {0x073A, 0x073A}, {0x073D, 0x073D},
	{0x073F, 0x0741}, {0x0743, 0x0743}, {0x0745, 0x0745}, {0x0747, 0x0747},
	{0x0749, 0x074A},
}

// diacritics expands diacriticRanges.
func diacritics() []rune {
	var out []rune
	for _, r := range diacriticRanges {
		for c := r[0]; c <= r[1]; c++ {
			out = append(out, c)
		}
	}
	return out
}
