package termimg_test

import (
	"fmt"
	"image"
	"image/color"

	"github.com/darkroom-ai/darkroom/termimg"
)

func ExampleRender() {
	img := image.NewNRGBA(image.Rect(0, 0, 1, 2))
	img.SetNRGBA(0, 0, color.NRGBA{R: 255, A: 255}) // red above
	img.SetNRGBA(0, 1, color.NRGBA{B: 255, A: 255}) // blue below
	fmt.Printf("%q\n", termimg.Render(img, 1, 1, termimg.ModeHalfblock))
	// Output: "\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m▀\x1b[0m"
}

func ExampleParseMode() {
	m, err := termimg.ParseMode("sixel")
	fmt.Println(m, err)
	m = termimg.Resolve(termimg.ModeAuto, func(k string) string {
		return map[string]string{"TERM": "xterm-kitty"}[k]
	})
	fmt.Println(m)
	// Output:
	// sixel <nil>
	// kitty
}
