package grid

import (
	"image"
	"image/color"
	"path/filepath"
	"strings"
	"testing"
)

func solid(w, h int, c color.NRGBA) image.Image {
	im := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(im.Pix); i += 4 {
		im.Pix[i], im.Pix[i+1], im.Pix[i+2], im.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return im
}

var red = color.NRGBA{R: 255, A: 255}

func TestFontCoversPrintableASCII(t *testing.T) {
	for r := rune(32); r <= 126; r++ {
		g, ok := font[r]
		if !ok {
			t.Errorf("no glyph for %q", r)
			continue
		}
		for i, row := range g {
			if len(row) != glyphW || strings.Trim(row, ".#") != "" {
				t.Errorf("glyph %q row %d = %q: want %d of '.' or '#'", r, i, row, glyphW)
			}
		}
	}
	if len(font) != 95 {
		t.Errorf("font has %d glyphs, want 95", len(font))
	}
}

func TestDrawText(t *testing.T) {
	dst := image.NewNRGBA(image.Rect(0, 0, 20, 10))
	DrawText(dst, 1, 1, "1", red, 1)
	// '1' is ..#.. on rows 0-5 with .##.. on row 1 and .###. on row 6.
	tests := []struct {
		x, y int
		ink  bool
	}{{3, 1, true}, {2, 2, true}, {1, 2, false}, {3, 4, true}, {1, 4, false}, {2, 7, true}, {4, 7, true}, {5, 7, false}, {3, 8, false}}
	for _, tc := range tests {
		got := dst.NRGBAAt(tc.x, tc.y) == red
		if got != tc.ink {
			t.Errorf("pixel (%d,%d) ink = %v, want %v", tc.x, tc.y, got, tc.ink)
		}
	}
	// Scale 2 makes 2×2 blocks; drawing off the edge is clipped, not a panic.
	dst2 := image.NewNRGBA(image.Rect(0, 0, 20, 20))
	DrawText(dst2, 0, 0, "|", red, 2)
	for _, p := range []image.Point{{4, 0}, {5, 0}, {4, 1}, {5, 13}} {
		if dst2.NRGBAAt(p.X, p.Y) != red {
			t.Errorf("scale 2: pixel %v not inked", p)
		}
	}
	DrawText(dst2, 15, 15, "WWW\u00e9", red, 3)
}

func TestTextSize(t *testing.T) {
	tests := []struct {
		text  string
		scale int
		w, h  int
	}{{"", 1, 0, 7}, {"a", 1, 5, 7}, {"ab", 1, 11, 7}, {"ab", 2, 22, 14}, {"seed 42", 0, 41, 7}}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			w, h := TextSize(tc.text, tc.scale)
			if w != tc.w || h != tc.h {
				t.Errorf("TextSize(%q, %d) = %d×%d, want %d×%d", tc.text, tc.scale, w, h, tc.w, tc.h)
			}
		})
	}
}

func TestSheetLayout(t *testing.T) {
	imgs := []image.Image{solid(64, 64, red), solid(64, 64, red), solid(32, 48, red)}
	tests := []struct {
		name   string
		labels []string
		opt    Options
		w, h   int
	}{
		// 2 cols (ceil sqrt 3), 2 rows, pad 4, no captions.
		{"auto", nil, Options{}, 4 + 2*68, 4 + 2*68},
		{"one row no pad", nil, Options{Cols: 3, Pad: -1}, 3 * 64, 64},
		// caption height (7+4)*1.
		{"labels", []string{"a", "", "c"}, Options{Cols: 3}, 4 + 3*68, 4 + 64 + 11 + 4},
		{"cols beyond n", nil, Options{Cols: 10, Pad: 2}, 2 + 3*66, 2 + 66},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Sheet(imgs, tc.labels, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Bounds().Size(); got != image.Pt(tc.w, tc.h) {
				t.Errorf("size %v, want %dx%d", got, tc.w, tc.h)
			}
		})
	}
	s, err := Sheet(imgs, []string{"x"}, Options{Cols: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.NRGBAAt(4+10, 4+10); c != red {
		t.Errorf("cell 0 pixel = %v, want red", c)
	}
	if c := s.NRGBAAt(1, 1); c != (color.NRGBA{R: 24, G: 24, B: 24, A: 255}) {
		t.Errorf("padding pixel = %v, want default background", c)
	}
	// The 32×48 image is centred in its 64×64 cell: its left margin is background.
	if c := s.NRGBAAt(4+2*68+5, 4+32); c == red {
		t.Errorf("small image not centred")
	}
}

func TestLabelsWidenCells(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		label string
		w     int
	}{
		{"fits", 64, "seed 1", 4 + 68},
		{"widened", 32, "seed 1", 4 + 35 + 4}, // "seed 1" is 35 px
		{"capped", 8, "seed 1", 4 + 16 + 4},   // at most twice the image
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Sheet([]image.Image{solid(tc.size, tc.size, red)}, []string{tc.label}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Bounds().Dx(); got != tc.w {
				t.Errorf("width %d, want %d", got, tc.w)
			}
		})
	}
	g, err := Grid([][]image.Image{{solid(8, 8, red)}}, nil, []string{"ab"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Bounds().Dx(); got != 4+11+4 { // "ab" is 11 px
		t.Errorf("grid width %d, want %d", got, 4+11+4)
	}
}

func TestSheetErrors(t *testing.T) {
	if _, err := Sheet(nil, nil, Options{}); err == nil {
		t.Error("no images: want error")
	}
	if _, err := Sheet([]image.Image{solid(8, 8, red)}, []string{"a", "b"}, Options{}); err == nil {
		t.Error("too many labels: want error")
	}
	if _, err := Sheet([]image.Image{nil}, nil, Options{}); err == nil {
		t.Error("nil image only: want error")
	}
	if _, err := Grid([][]image.Image{{solid(8, 8, red)}}, []string{"a", "b"}, nil, Options{}); err == nil {
		t.Error("too many row labels: want error")
	}
	if _, err := Grid(nil, nil, nil, Options{}); err == nil {
		t.Error("empty grid: want error")
	}
}

func TestGridLayout(t *testing.T) {
	im := solid(64, 64, red)
	cells := [][]image.Image{{im, im, im}, {im, nil}}
	g, err := Grid(cells, []string{"euler", "dpm++ 2m"}, []string{"normal", "karras", "exp"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	headW := 8*6 - 1 + 4 // "dpm++ 2m" + pad
	headH := 9 + 4
	want := image.Pt(4+headW+3*68, 4+headH+2*68)
	if got := g.Bounds().Size(); got != want {
		t.Errorf("size %v, want %v", got, want)
	}
	// Row 1, column 1 is nil: background.
	x, y := 4+headW+68+30, 4+headH+68+30
	if c := g.NRGBAAt(x, y); c == red {
		t.Errorf("nil cell drawn")
	}
	if c := g.NRGBAAt(x-68, y); c != red {
		t.Errorf("cell (1,0) = %v, want red", c)
	}
}

func TestSave(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.png")
	if err := Save(p, solid(4, 4, red)); err != nil {
		t.Fatal(err)
	}
	if err := Save(filepath.Join(t.TempDir(), "no", "dir.png"), solid(4, 4, red)); err == nil {
		t.Error("missing dir: want error")
	}
}
