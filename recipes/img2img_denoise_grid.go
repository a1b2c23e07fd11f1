//go:build ignore

// img2img at several denoising strengths: a source image (made from
// -source-prompt, or -init FILE) redrawn towards -prompt, one column per
// strength, so the trade between keeping the source and following the
// prompt is visible at a glance. Runs on the built-in model:
//
//	darkroom run recipes/img2img_denoise_grid.go -source-prompt "a handwritten digit 3" -prompt "a handwritten digit 8"
//	darkroom run recipes/img2img_denoise_grid.go -model sd15 -init photo.png -prompt "an oil painting" -denoise 0.3,0.5,0.7
package main

import (
	"flag"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/grid"
	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	fs := flag.NewFlagSet("img2img_denoise_grid", flag.ContinueOnError)
	model := fs.String("model", "", "model name or path")
	init := fs.String("init", "", "init image (default: generate one from -source-prompt)")
	source := fs.String("source-prompt", "a handwritten digit 3", "prompt of the generated source image")
	prompt := fs.String("prompt", "a handwritten digit 8", "prompt the source is redrawn towards")
	seed := fs.Uint64("seed", 11, "seed")
	list := fs.String("denoise", "0.3,0.6,0.9", "comma-separated denoising strengths")
	steps := fs.Int("steps", 0, "steps (0: the model's default)")
	size := fs.Int("size", 0, "width and height (0: the model's default, or the init image's)")
	out := fs.String("out", "img2img_denoise_grid.png", "output PNG")
	dr.Check(fs.Parse(dr.Args()))

	var strengths []float64
	for _, s := range strings.Split(*list, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		dr.Check(err)
		strengths = append(strengths, v)
	}
	ctx := dr.Context()
	m, err := dr.Engine().Load(ctx, *model)
	dr.Check(err)
	req := m.DefaultRequest()
	req.Seed = *seed
	if *steps > 0 {
		req.Steps = *steps
	}
	if *size > 0 {
		req.Width, req.Height = *size, *size
	}

	path := *init
	var first image.Image
	if path == "" {
		req.Prompt = *source
		res, err := m.Generate(ctx, req, nil)
		dr.Check(err)
		first = res.Images[0]
		dir, err := os.MkdirTemp("", "img2img")
		dr.Check(err)
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "source.png")
		dr.Check(engine.SavePNG(path, first, req, "", m.Name))
	} else {
		first, err = engine.LoadImage(path)
		dr.Check(err)
		if *size == 0 {
			req.Width, req.Height = 0, 0 // the init image's size
		}
	}

	row := []image.Image{first}
	cols := []string{"source"}
	req.Prompt, req.InitImage = *prompt, path
	for _, d := range strengths {
		req.Denoise = d
		res, err := m.Generate(ctx, req, nil)
		dr.Check(err)
		row = append(row, res.Images[0])
		cols = append(cols, fmt.Sprintf("%g", d))
		fmt.Printf("denoise %g done\n", d)
	}
	sheet, err := grid.Grid([][]image.Image{row}, []string{"img2img"}, cols, grid.Options{})
	dr.Check(err)
	dr.Check(grid.Save(*out, sheet))
	dr.Show(sheet)
	fmt.Printf("wrote %s (%dx%d)\n", *out, sheet.Bounds().Dx(), sheet.Bounds().Dy())
}
