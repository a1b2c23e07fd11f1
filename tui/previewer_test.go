package tui

import (
	"context"
	"image"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
)

// previewFunc adapts a function to Previewer.
type previewFunc func(latents []float32, shape []int, i int) *image.NRGBA

func (f previewFunc) Preview(_ engine.LatentFormat, latents []float32, shape []int, i int) *image.NRGBA {
	return f(latents, shape, i)
}

// TestWithPreviewer checks Options.Previewer's plumbing: the worker uses
// the given Previewer, and falls back to the linear preview when it
// returns nil.
func TestWithPreviewer(t *testing.T) {
	if p := tinyModels(); withPreviewer(p, nil) != Pipeline(p) {
		t.Error("withPreviewer(p, nil) is not p")
	}
	eightfold := previewFunc(func(_ []float32, shape []int, _ int) *image.NRGBA {
		return image.NewNRGBA(image.Rect(0, 0, shape[3]*8, shape[2]*8))
	})
	declines := previewFunc(func([]float32, []int, int) *image.NRGBA { return nil })
	for _, tc := range []struct {
		name string
		pv   Previewer
		want image.Rectangle
	}{
		{"previewer", eightfold, image.Rect(0, 0, 32, 16)},
		{"fallback", declines, image.Rect(0, 0, 4, 2)}, // one pixel per latent cell
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTestWorker(t, withPreviewer(tinyModels(), tc.pv))
			req := engine.DefaultRequest()
			req.Model, req.Steps, req.Width, req.Height = "tiny", 2, 32, 16
			if done := w.do(workItem{ID: 1, Req: req, Ctx: context.Background()}); done.Err != nil {
				t.Fatal(done.Err)
			}
			n := 0
			for len(w.out) > 0 {
				if m := (<-w.out).(jobProgressMsg); m.Preview != nil {
					n++
					if m.Preview.Bounds() != tc.want {
						t.Errorf("preview %v, want %v", m.Preview.Bounds(), tc.want)
					}
				}
			}
			if n != 2 {
				t.Errorf("%d previews, want 2", n)
			}
		})
	}
}
