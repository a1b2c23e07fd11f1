//go:build ignore

// Seed sweep: one prompt, several seeds, a labelled contact sheet.
//
//	darkroom run recipes/seed_sweep.go -model sd15 -prompt "a lighthouse at dusk" -seeds 8 -out seeds.png
package main

import (
	"flag"
	"fmt"
	"image"

	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("seed_sweep", flag.ContinueOnError)
	model := fs.String("model", "", "model name or path")
	prompt := fs.String("prompt", "a lighthouse on a cliff at dusk, oil painting", "prompt")
	first := fs.Uint64("seed", 1, "first seed")
	n := fs.Int("seeds", 8, "number of seeds")
	cols := fs.Int("cols", 4, "images per row")
	size := fs.Int("size", 0, "width and height (0: the model's default)")
	steps := fs.Int("steps", 0, "sampler steps (0: the model's default)")
	out := fs.String("out", "seed_sweep.png", "output PNG")
	dr.Check(fs.Parse(dr.Args()))

	ctx := dr.Context()
	m, err := dr.Engine().Load(ctx, *model)
	dr.Check(err)

	req := m.DefaultRequest() // the model's own size, steps and cfg
	req.Prompt = *prompt
	if *size > 0 {
		if *size > 0 {
			req.Width, req.Height = *size, *size
		}
	}
	if *steps > 0 {
		req.Steps = *steps
	}

	var images []image.Image
	var labels []string
	for i := 0; i < *n; i++ {
		req.Seed = *first + uint64(i)
		res, err := m.Generate(ctx, req, nil)
		dr.Check(err)
		images = append(images, res.Images[0])
		labels = append(labels, fmt.Sprintf("seed %d", req.Seed))
		fmt.Printf("seed %d done\n", req.Seed)
	}
	sheet, err := grid.Sheet(images, labels, grid.Options{Cols: *cols})
	dr.Check(err)
	dr.Check(grid.Save(*out, sheet))
	dr.Show(sheet)
	fmt.Printf("wrote %s (%dx%d)\n", *out, sheet.Bounds().Dx(), sheet.Bounds().Dy())
}
