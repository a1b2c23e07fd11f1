//go:build ignore

// CFG × steps grid: how guidance strength and step count interact, rows
// labelled by CFG and columns by steps.
//
//	darkroom run recipes/cfg_steps_grid.go -model sd15 -cfg 3,5,7,9 -steps 10,20,30
package main

import (
	"flag"
	"fmt"
	"image"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("cfg_steps_grid", flag.ContinueOnError)
	model := fs.String("model", "", "model name or path")
	prompt := fs.String("prompt", "a bowl of ramen, studio lighting", "prompt")
	seed := fs.Uint64("seed", 7, "seed")
	cfgList := fs.String("cfg", "3,5,7,9", "comma-separated CFG scales")
	stepList := fs.String("steps", "10,20,30", "comma-separated step counts")
	sampler := fs.String("sampler", "euler", "sampler")
	size := fs.Int("size", 0, "width and height (0: the model's default)")
	out := fs.String("out", "cfg_steps_grid.png", "output PNG")
	dr.Check(fs.Parse(dr.Args()))

	var cfgs []float64
	for _, s := range strings.Split(*cfgList, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		dr.Check(err)
		cfgs = append(cfgs, v)
	}
	var steps []int
	for _, s := range strings.Split(*stepList, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		dr.Check(err)
		steps = append(steps, v)
	}

	ctx := dr.Context()
	m, err := dr.Engine().Load(ctx, *model)
	dr.Check(err)

	req := m.DefaultRequest() // the model's own size, steps and cfg
	req.Prompt, req.Seed, req.Sampler = *prompt, *seed, *sampler
	if *size > 0 {
		req.Width, req.Height = *size, *size
	}

	var cells [][]image.Image
	var rowLabels, colLabels []string
	for _, n := range steps {
		colLabels = append(colLabels, fmt.Sprintf("%d steps", n))
	}
	for _, cfg := range cfgs {
		rowLabels = append(rowLabels, fmt.Sprintf("cfg %g", cfg))
		var row []image.Image
		for _, n := range steps {
			req.CFG, req.Steps = cfg, n
			res, err := m.Generate(ctx, req, nil)
			dr.Check(err)
			row = append(row, res.Images[0])
		}
		cells = append(cells, row)
		fmt.Printf("cfg %g done\n", cfg)
	}
	sheet, err := grid.Grid(cells, rowLabels, colLabels, grid.Options{})
	dr.Check(err)
	dr.Check(grid.Save(*out, sheet))
	dr.Show(sheet)
	fmt.Printf("wrote %s (%dx%d)\n", *out, sheet.Bounds().Dx(), sheet.Bounds().Dy())
}
