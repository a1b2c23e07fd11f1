package termimg

import (
	"image"
	"strconv"
	"strings"
)

// Halfblock draws img with Unicode half-blocks: each cell shows two
// vertically stacked pixels, the upper as the foreground of ▀ and the
// lower as its background, in 24-bit colour. Transparent pixels (alpha <
// 128) show the terminal background. Lines are joined by "\n" and each ends
// with an SGR reset; the result is at most cols wide and rows high.
func Halfblock(img image.Image, cols, rows int) string {
	if img == nil || img.Bounds().Empty() || cols <= 0 || rows <= 0 {
		return ""
	}
	px := fitPixels(img, cols, rows, 1, 2)
	w, h := px.Bounds().Dx(), px.Bounds().Dy()
	var sb strings.Builder
	sb.Grow(w * (h + 1) / 2 * 40)
	for y := 0; y < h; y += 2 {
		if y > 0 {
			sb.WriteByte('\n')
		}
		var fg, bg [4]uint8 // current colours; [3]==0 means default
		fgSet, bgSet := false, false
		for x := range w {
			top := pixel(px, x, y)
			bot := [4]uint8{}
			if y+1 < h {
				bot = pixel(px, x, y+1)
			}
			topOn, botOn := top[3] >= 128, bot[3] >= 128
			var glyph string
			var wantFg, wantBg [4]uint8
			switch {
			case topOn && botOn:
				glyph, wantFg, wantBg = "▀", opaque(top), opaque(bot)
			case topOn:
				glyph, wantFg = "▀", opaque(top)
			case botOn:
				glyph, wantFg = "▄", opaque(bot)
			default:
				glyph = " "
			}
			if wantFg != fg || !fgSet {
				writeColor(&sb, 38, wantFg)
				fg, fgSet = wantFg, true
			}
			if wantBg != bg || !bgSet {
				writeColor(&sb, 48, wantBg)
				bg, bgSet = wantBg, true
			}
			sb.WriteString(glyph)
		}
		sb.WriteString("\x1b[0m")
	}
	return sb.String()
}

func pixel(img *image.NRGBA, x, y int) [4]uint8 {
	i := y*img.Stride + x*4
	return [4]uint8{img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3]}
}

func opaque(p [4]uint8) [4]uint8 { p[3] = 255; return p }

// writeColor writes an SGR sequence setting the foreground (base 38) or
// background (48) to c, or to the default colour when c[3] is 0.
func writeColor(sb *strings.Builder, base int, c [4]uint8) {
	if c[3] == 0 {
		sb.WriteString("\x1b[")
		sb.WriteString(strconv.Itoa(base + 1))
		sb.WriteByte('m')
		return
	}
	sb.WriteString("\x1b[")
	sb.WriteString(strconv.Itoa(base))
	sb.WriteString(";2;")
	sb.WriteString(strconv.Itoa(int(c[0])))
	sb.WriteByte(';')
	sb.WriteString(strconv.Itoa(int(c[1])))
	sb.WriteByte(';')
	sb.WriteString(strconv.Itoa(int(c[2])))
	sb.WriteByte('m')
}
