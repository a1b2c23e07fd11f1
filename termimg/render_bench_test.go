package termimg

import "testing"

func BenchmarkRender(b *testing.B) {
	img := noise(512, 512)
	for _, m := range []Mode{ModeHalfblock, ModeSixel, ModeKitty, ModeITerm} {
		b.Run(m.String(), func(b *testing.B) {
			for b.Loop() {
				RenderOptions(img, 43, 22, Options{Mode: m, CellWidth: 8, CellHeight: 17})
			}
		})
	}
}
