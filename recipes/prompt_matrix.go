//go:build ignore

// Prompt matrix: "base|part A|part B" renders the base prompt with every
// combination of the optional parts (2^parts images), same seed, each
// labelled with the parts it includes.
//
//	darkroom run recipes/prompt_matrix.go -model sd15 -prompt "a cottage|in winter|at night|watercolor"
package main

import (
	"flag"
	"fmt"
	"image"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("prompt_matrix", flag.ContinueOnError)
	model := fs.String("model", "", "model name or path")
	prompt := fs.String("prompt", "a cottage in the woods|in winter|at night", "base|optional part|...")
	seed := fs.Uint64("seed", 3, "seed")
	size := fs.Int("size", 0, "width and height (0: the model's default)")
	steps := fs.Int("steps", 0, "sampler steps (0: the model's default)")
	out := fs.String("out", "prompt_matrix.png", "output PNG")
	dr.Check(fs.Parse(dr.Args()))

	parts := strings.Split(*prompt, "|")
	base, opts := strings.TrimSpace(parts[0]), parts[1:]
	if len(opts) > 6 {
		dr.Check(fmt.Errorf("-prompt: %d optional parts make %d images; use at most 6", len(opts), 1<<len(opts)))
	}

	ctx := dr.Context()
	m, err := dr.Engine().Load(ctx, *model)
	dr.Check(err)

	req := m.DefaultRequest() // the model's own size, steps and cfg
	req.Seed = *seed
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
	for mask := 0; mask < 1<<len(opts); mask++ {
		text := []string{base}
		label := []string{}
		for i, p := range opts {
			if mask&(1<<i) != 0 {
				text = append(text, strings.TrimSpace(p))
				label = append(label, strings.TrimSpace(p))
			}
		}
		if len(label) == 0 {
			label = append(label, "(base)")
		}
		req.Prompt = strings.Join(text, ", ")
		res, err := m.Generate(ctx, req, nil)
		dr.Check(err)
		images = append(images, res.Images[0])
		labels = append(labels, strings.Join(label, " + "))
		fmt.Printf("%q done\n", req.Prompt)
	}
	cols := 1
	for cols*cols < len(images) {
		cols *= 2
	}
	sheet, err := grid.Sheet(images, labels, grid.Options{Cols: cols})
	dr.Check(err)
	dr.Check(grid.Save(*out, sheet))
	dr.Show(sheet)
	fmt.Printf("wrote %s (%dx%d)\n", *out, sheet.Bounds().Dx(), sheet.Bounds().Dy())
}
