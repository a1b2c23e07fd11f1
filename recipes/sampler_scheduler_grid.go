//go:build ignore

// Sampler × scheduler grid: the same prompt and seed under each
// combination, rows labelled by sampler and columns by scheduler.
//
//	darkroom run recipes/sampler_scheduler_grid.go -model sd15 -samplers euler,dpmpp_2m,uni_pc -schedulers normal,karras,exponential
package main

import (
	"flag"
	"fmt"
	"image"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("sampler_scheduler_grid", flag.ContinueOnError)
	model := fs.String("model", "", "model name or path")
	prompt := fs.String("prompt", "a red fox in fresh snow, photograph", "prompt")
	seed := fs.Uint64("seed", 42, "seed")
	samplers := fs.String("samplers", "euler,euler_ancestral,dpmpp_2m,uni_pc", "comma-separated samplers (all: "+strings.Join(sampling.Samplers(), ",")+")")
	schedulers := fs.String("schedulers", "normal,karras,exponential", "comma-separated schedulers (all: "+strings.Join(sampling.Schedulers(), ",")+")")
	size := fs.Int("size", 0, "width and height (0: the model's default)")
	steps := fs.Int("steps", 0, "sampler steps (0: the model's default)")
	out := fs.String("out", "sampler_scheduler_grid.png", "output PNG")
	dr.Check(fs.Parse(dr.Args()))

	ctx := dr.Context()
	m, err := dr.Engine().Load(ctx, *model)
	dr.Check(err)

	req := m.DefaultRequest() // the model's own size, steps and cfg
	req.Prompt, req.Seed = *prompt, *seed
	if *size > 0 {
		if *size > 0 {
			req.Width, req.Height = *size, *size
		}
	}
	if *steps > 0 {
		req.Steps = *steps
	}

	rows := strings.Split(*samplers, ",")
	cols := strings.Split(*schedulers, ",")
	var cells [][]image.Image
	for _, sampler := range rows {
		var row []image.Image
		for _, scheduler := range cols {
			req.Sampler, req.Scheduler = sampler, scheduler
			res, err := m.Generate(ctx, req, nil)
			dr.Check(err)
			row = append(row, res.Images[0])
			fmt.Printf("%s / %s done\n", sampler, scheduler)
		}
		cells = append(cells, row)
	}
	sheet, err := grid.Grid(cells, rows, cols, grid.Options{})
	dr.Check(err)
	dr.Check(grid.Save(*out, sheet))
	dr.Show(sheet)
	fmt.Printf("wrote %s (%dx%d)\n", *out, sheet.Bounds().Dx(), sheet.Bounds().Dy())
}
