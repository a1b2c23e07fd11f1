package termimg

import (
	"bytes"
	"encoding/base64"
	"flag"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mattn/go-sixel"
)

var update = flag.Bool("update", false, "rewrite golden files")

// gradient returns a w×h test image with a distinct colour per pixel.
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{R: uint8(x * 255 / max(1, w-1)), G: uint8(y * 255 / max(1, h-1)), B: uint8((x + y) * 7), A: 255})
		}
	}
	return img
}

// noise returns a w×h image of random colours (incompressible PNG).
func noise(w, h int) *image.NRGBA {
	r := rand.New(rand.NewPCG(1, 2))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.UintN(256))
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	return img
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s: output differs from golden\n got: %q\nwant: %q", name, got, want)
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"", ModeAuto, false}, {"auto", ModeAuto, false}, {"kitty", ModeKitty, false},
		{"SIXEL", ModeSixel, false}, {"iterm", ModeITerm, false}, {"halfblock", ModeHalfblock, false},
		{"none", ModeNone, false}, {"png", ModeNone, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseMode(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil && tt.in != "" && !strings.EqualFold(got.String(), tt.in) {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Mode
	}{
		{"xterm", map[string]string{"TERM": "xterm-256color"}, ModeHalfblock},
		{"kitty", map[string]string{"TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1"}, ModeKitty},
		{"kitty over ssh", map[string]string{"TERM": "xterm-kitty"}, ModeKitty},
		{"ghostty", map[string]string{"TERM": "xterm-ghostty"}, ModeKitty},
		{"iterm2", map[string]string{"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, ModeITerm},
		{"iterm2 over ssh", map[string]string{"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, ModeITerm},
		{"wezterm", map[string]string{"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, ModeITerm},
		{"foot", map[string]string{"TERM": "foot"}, ModeSixel},
		{"konsole", map[string]string{"TERM": "xterm-256color", "KONSOLE_VERSION": "230800"}, ModeSixel},
		{"tmux in kitty", map[string]string{"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,1,0", "KITTY_WINDOW_ID": "1"}, ModeHalfblock},
		{"screen", map[string]string{"TERM": "screen"}, ModeHalfblock},
		{"dumb", map[string]string{"TERM": "dumb"}, ModeNone},
		{"no color", map[string]string{"TERM": "xterm", "NO_COLOR": "1"}, ModeNone},
		{"empty", map[string]string{}, ModeHalfblock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			if got := Detect(getenv); got != tt.want {
				t.Errorf("Detect = %v, want %v", got, tt.want)
			}
			if got := Resolve(ModeAuto, getenv); got != tt.want {
				t.Errorf("Resolve(auto) = %v, want %v", got, tt.want)
			}
			if got := Resolve(ModeSixel, getenv); got != ModeSixel {
				t.Errorf("Resolve(sixel) = %v, want sixel", got)
			}
		})
	}
}

func TestParseDA1(t *testing.T) {
	tests := []struct {
		reply string
		sixel bool
		err   bool
	}{
		{"\x1b[?63;1;2;4;6;9;15;22c", true, false}, // xterm -ti vt340
		{"\x1b[?65;1;9c", false, false},
		{"junk\x1b[?62;4c", true, false},
		{"\x1b[?62;4", false, true},
		{"hello", false, true},
		{"\x1b[?6x;4c", false, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.reply), func(t *testing.T) {
			attrs, err := ParseDA1(tt.reply)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if got := HasSixel(attrs); got != tt.sixel {
				t.Errorf("HasSixel(%v) = %v, want %v", attrs, got, tt.sixel)
			}
		})
	}
}

func TestFit(t *testing.T) {
	tests := []struct{ iw, ih, w, h, ww, wh int }{
		{64, 64, 40, 40, 40, 40},
		{64, 64, 40, 20, 20, 20},
		{512, 768, 100, 100, 67, 100},
		{768, 512, 100, 100, 100, 67},
		{1000, 1, 10, 10, 10, 1},
		{0, 5, 10, 10, 0, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join([]string{strconv.Itoa(tt.iw), strconv.Itoa(tt.ih), strconv.Itoa(tt.w), strconv.Itoa(tt.h)}, "x"), func(t *testing.T) {
			w, h := Fit(tt.iw, tt.ih, tt.w, tt.h)
			if w != tt.ww || h != tt.wh {
				t.Errorf("Fit = %dx%d, want %dx%d", w, h, tt.ww, tt.wh)
			}
		})
	}
}

func TestScale(t *testing.T) {
	src := image.NewNRGBA(image.Rect(0, 0, 4, 1))
	vals := []uint8{0, 100, 200, 255}
	for x, v := range vals {
		src.SetNRGBA(x, 0, color.NRGBA{R: v, G: 255 - v, B: 7, A: 255})
	}
	down := Scale(src, 2, 1)
	if got := down.NRGBAAt(0, 0); got != (color.NRGBA{50, 205, 7, 255}) {
		t.Errorf("down(0) = %v, want {50 205 7 255}", got)
	}
	if got := down.NRGBAAt(1, 0); got != (color.NRGBA{228, 28, 7, 255}) {
		t.Errorf("down(1) = %v, want {228 28 7 255}", got)
	}
	up := Scale(src, 8, 2)
	for y := range 2 {
		for x := range 8 {
			if got, want := up.NRGBAAt(x, y).R, vals[x/2]; got != want {
				t.Errorf("up(%d,%d).R = %d, want %d", x, y, got, want)
			}
		}
	}
	// A transparent pixel does not darken its opaque neighbour.
	src.SetNRGBA(0, 0, color.NRGBA{})
	if got := Scale(src, 2, 1).NRGBAAt(0, 0); got.R != 100 || got.A != 128 {
		t.Errorf("alpha-weighted mean = %v, want R=100 A=128", got)
	}
	if src.NRGBAAt(1, 0).R != 100 {
		t.Error("Scale modified its input")
	}
}

func TestHalfblockExact(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 2, 2))
	img.SetNRGBA(0, 0, color.NRGBA{255, 0, 0, 255})
	img.SetNRGBA(1, 0, color.NRGBA{255, 0, 0, 255})
	img.SetNRGBA(0, 1, color.NRGBA{0, 0, 255, 255})
	img.SetNRGBA(1, 1, color.NRGBA{0, 255, 0, 255})
	got := Halfblock(img, 2, 1)
	want := "\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m▀\x1b[48;2;0;255;0m▀\x1b[0m"
	if got != want {
		t.Errorf("Halfblock =\n%q\nwant\n%q", got, want)
	}
	// Transparent top: lower half block in the bottom colour, default bg.
	img.SetNRGBA(0, 0, color.NRGBA{})
	img.SetNRGBA(1, 0, color.NRGBA{})
	img.SetNRGBA(1, 1, color.NRGBA{})
	got = Halfblock(img, 2, 1)
	want = "\x1b[38;2;0;0;255m\x1b[49m▄\x1b[39m \x1b[0m"
	if got != want {
		t.Errorf("transparent Halfblock =\n%q\nwant\n%q", got, want)
	}
}

func TestHalfblockGolden(t *testing.T) {
	tests := []struct {
		name       string
		img        image.Image
		cols, rows int
		wantW      int
		wantH      int
	}{
		{"square_8x4", gradient(16, 16), 8, 4, 8, 4},
		{"wide_10x3", gradient(20, 5), 10, 3, 10, 2},
		{"tall_6x6", gradient(4, 12), 6, 6, 4, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Render(tt.img, tt.cols, tt.rows, ModeHalfblock)
			lines := strings.Split(got, "\n")
			if len(lines) != tt.wantH {
				t.Errorf("%d lines, want %d", len(lines), tt.wantH)
			}
			for i, l := range lines {
				if n := strings.Count(l, "▀") + strings.Count(l, "▄") + strings.Count(l, " "); n != tt.wantW {
					t.Errorf("line %d has %d cells, want %d", i, n, tt.wantW)
				}
			}
			if c, r := CellSize(tt.img, tt.cols, tt.rows, ModeHalfblock); c != tt.wantW || r != tt.wantH {
				t.Errorf("CellSize = %dx%d, want %dx%d", c, r, tt.wantW, tt.wantH)
			}
			golden(t, "halfblock_"+tt.name, got)
		})
	}
}

func TestRenderEmpty(t *testing.T) {
	img := gradient(4, 4)
	for _, m := range []Mode{ModeHalfblock, ModeSixel, ModeKitty, ModeITerm, ModeNone} {
		t.Run(m.String(), func(t *testing.T) {
			if got := Render(img, 0, 5, m); got != "" {
				t.Errorf("0 cols: %q", got)
			}
			if got := Render(image.NewNRGBA(image.Rect(0, 0, 0, 0)), 5, 5, m); got != "" {
				t.Errorf("empty image: %q", got)
			}
			if got := Render(nil, 5, 5, m); got != "" {
				t.Errorf("nil image: %q", got)
			}
			if got := Render(img, 5, 5, m); (got == "") != (m == ModeNone) {
				t.Errorf("Render(%v) empty=%v", m, got == "")
			}
		})
	}
}

func TestSixel(t *testing.T) {
	img := gradient(64, 64)
	o := Options{Mode: ModeSixel, CellWidth: 8, CellHeight: 16}
	got := RenderOptions(img, 10, 4, o) // box 80×64 px → 64×64
	if !strings.HasPrefix(got, "\x1bP") || !strings.HasSuffix(got, "\x1b\\") {
		t.Fatalf("missing DCS framing: %q…%q", got[:min(len(got), 12)], got[max(0, len(got)-4):])
	}
	if i := strings.IndexByte(got, 'q'); i < 0 || i > 10 {
		t.Fatalf("no sixel introducer q near the start: %q", got[:12])
	}
	if n := strings.Count(got, "#"); n < 2 {
		t.Errorf("only %d colour selections", n)
	}
	var dec image.Image
	if err := sixel.NewDecoder(strings.NewReader(got)).Decode(&dec); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if b := dec.Bounds(); b.Dx() != 64 || b.Dy() < 64 || b.Dy() > 66 {
		t.Fatalf("decoded %v, want 64×64 (height rounded to sixel rows)", b)
	}
	// Every pixel is no farther from the source than the nearest colour of
	// the 6×6×6 cube, i.e. within half a cube step (25.5) in each channel:
	// squared RGB distance ≤ 3·26².
	maxDist := 0
	for y := range 64 {
		for x := range 64 {
			r, g, b, _ := dec.At(x, y).RGBA()
			s := img.NRGBAAt(x, y)
			d := 0
			for _, c := range []int{int(r>>8) - int(s.R), int(g>>8) - int(s.G), int(b>>8) - int(s.B)} {
				d += c * c
			}
			maxDist = max(maxDist, d)
		}
	}
	if maxDist > 3*26*26 {
		t.Errorf("max squared colour error %d, want ≤ %d (half a cube step per channel)", maxDist, 3*26*26)
	}
	// Greys stay neutral and within half a step of the 36-grey ramp (3.5)
	// plus the rounding of sixel's percent colour registers (1.3).
	grey := image.NewNRGBA(image.Rect(0, 0, 64, 8))
	for x := range 64 {
		for y := range 8 {
			v := uint8(x * 4)
			grey.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
		}
	}
	var gdec image.Image
	if err := sixel.NewDecoder(strings.NewReader(RenderOptions(grey, 8, 1, o))).Decode(&gdec); err != nil {
		t.Fatalf("decode greys: %v", err)
	}
	for x := range 64 {
		r, g, b, _ := gdec.At(x, 0).RGBA()
		if r != g || g != b {
			t.Fatalf("grey %d decoded as (%d,%d,%d), not neutral", x*4, r>>8, g>>8, b>>8)
		}
		if d := abs(int(r>>8) - x*4); d > 5 {
			t.Errorf("grey %d decoded as %d, want within 5", x*4, r>>8)
		}
	}
	if c, r := CellSizeOptions(img, 10, 4, o); c != 8 || r != 4 {
		t.Errorf("CellSize = %dx%d, want 8x4", c, r)
	}
	if p := SixelPalette(); len(p) != 252 || p[0] != (color.RGBA{0, 0, 0, 255}) || p[251] != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("palette: len %d, first %v, last %v", len(p), p[0], p[len(p)-1])
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

var apcRE = regexp.MustCompile(`\x1b_G([^;]*);([^\x1b]*)\x1b\\`)

// kittyChunks splits s into its graphics escapes, checking nothing lies
// between them.
func kittyChunks(t *testing.T, s string) (keys []string, payloads []string) {
	t.Helper()
	ms := apcRE.FindAllStringSubmatchIndex(s, -1)
	end := 0
	for _, m := range ms {
		if m[0] != end {
			t.Fatalf("bytes between escapes at %d", end)
		}
		end = m[1]
		keys = append(keys, s[m[2]:m[3]])
		payloads = append(payloads, s[m[4]:m[5]])
	}
	if end != len(s) {
		t.Fatalf("trailing bytes after %d of %d", end, len(s))
	}
	return keys, payloads
}

func decodePNG(t *testing.T, b64 string) image.Image {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("png: %v", err)
	}
	return img
}

func sameImage(t *testing.T, got image.Image, want *image.NRGBA) {
	t.Helper()
	if got.Bounds() != want.Bounds() {
		t.Fatalf("bounds %v, want %v", got.Bounds(), want.Bounds())
	}
	for y := range want.Bounds().Dy() {
		for x := range want.Bounds().Dx() {
			if g := color.NRGBAModel.Convert(got.At(x, y)); g != want.NRGBAAt(x, y) {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, g, want.NRGBAAt(x, y))
			}
		}
	}
}

func TestKittyChunking(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		img := gradient(8, 8)
		keys, payloads := kittyChunks(t, Render(img, 4, 2, ModeKitty))
		if len(keys) != 1 || keys[0] != "a=T,f=100,c=4,r=2,q=2" {
			t.Fatalf("keys = %q, want one escape a=T,f=100,c=4,r=2,q=2", keys)
		}
		sameImage(t, decodePNG(t, payloads[0]), img)
	})
	t.Run("chunked", func(t *testing.T) {
		img := noise(96, 96) // ~37 KB of PNG → ~12 chunks
		keys, payloads := kittyChunks(t, Render(img, 20, 10, ModeKitty))
		if len(keys) < 3 {
			t.Fatalf("%d escapes, want several", len(keys))
		}
		if keys[0] != "a=T,f=100,c=20,r=10,q=2,m=1" {
			t.Errorf("first keys = %q", keys[0])
		}
		for i, k := range keys[1:] {
			want := "m=1"
			if i == len(keys)-2 {
				want = "m=0"
			}
			if k != want {
				t.Errorf("chunk %d keys = %q, want %q", i+1, k, want)
			}
		}
		for i, p := range payloads {
			if len(p) > KittyChunk || (i < len(payloads)-1 && len(p) != KittyChunk) || len(p)%4 != 0 {
				t.Errorf("chunk %d: %d bytes (want %d, last ≤ and a multiple of 4)", i, len(p), KittyChunk)
			}
		}
		sameImage(t, decodePNG(t, strings.Join(payloads, "")), img)
	})
	t.Run("transmit", func(t *testing.T) {
		img := gradient(8, 8)
		keys, _ := kittyChunks(t, KittyTransmit(img, 7, 6, 3))
		if len(keys) != 1 || keys[0] != "a=T,U=1,f=100,i=7,c=6,r=3,q=2" {
			t.Errorf("keys = %q", keys)
		}
		if got := KittyDelete(7); got != "\x1b_Ga=d,d=I,i=7,q=2\x1b\\" {
			t.Errorf("KittyDelete = %q", got)
		}
	})
}

func TestKittyPlaceholders(t *testing.T) {
	got := KittyPlaceholders(7, 2, 2)
	want := "\x1b[38;5;7m\U0010EEEE\u0305\u0305\U0010EEEE\u0305\u030D\x1b[39m\n" +
		"\x1b[38;5;7m\U0010EEEE\u030D\u0305\U0010EEEE\u030D\u030D\x1b[39m"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := KittyPlaceholders(0x123456, 1, 1); !strings.HasPrefix(got, "\x1b[38;2;18;52;86m") {
		t.Errorf("24-bit id: %q", got)
	}
	d := diacritics()
	if len(d) != 100 || d[99] != 0x074A || d[39] != 0x0597 || d[53] != 0x05C4 {
		t.Errorf("diacritics: len %d, [39]=%#x [53]=%#x [99]=%#x", len(d), d[39], d[53], d[len(d)-1])
	}
	if rows := strings.Count(KittyPlaceholders(1, 500, 500), "\n") + 1; rows != MaxPlaceholderCells {
		t.Errorf("capped rows = %d, want %d", rows, MaxPlaceholderCells)
	}
}

func TestITerm(t *testing.T) {
	img := gradient(32, 16)
	got := Render(img, 20, 10, ModeITerm)
	re := regexp.MustCompile(`^\x1b\]1337;File=inline=1;size=(\d+);width=(\d+);height=(\d+);preserveAspectRatio=1:([A-Za-z0-9+/=]+)\a$`)
	m := re.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("bad OSC 1337 framing: %q", got[:min(60, len(got))])
	}
	if m[2] != "20" || m[3] != "5" {
		t.Errorf("cells = %sx%s, want 20x5", m[2], m[3])
	}
	data, _ := base64.StdEncoding.DecodeString(m[4])
	if strconv.Itoa(len(data)) != m[1] {
		t.Errorf("size=%s but payload is %d bytes", m[1], len(data))
	}
	sameImage(t, decodePNG(t, m[4]), img)
}

func TestTmuxWrap(t *testing.T) {
	got := RenderOptions(gradient(2, 2), 1, 1, Options{Mode: ModeKitty, Tmux: true})
	if !strings.HasPrefix(got, "\x1bPtmux;\x1b\x1b_G") || !strings.HasSuffix(got, "\x1b\x1b\\\x1b\\") {
		t.Errorf("tmux wrapping: %q", got)
	}
	if got := RenderOptions(gradient(2, 2), 1, 1, Options{Mode: ModeHalfblock, Tmux: true}); strings.Contains(got, "tmux") {
		t.Errorf("half-blocks must not be wrapped: %q", got)
	}
}
