// Command ditstep times one diffusion-transformer step with random weights
// of a released model's configuration on a device — FLUX.1-dev (12 B
// parameters), SD3.5 Large / Medium, Z-Image Turbo (6.2 B) or Qwen-Image
// (20 B) — the benchmarks of the Flux, SD3, Z-Image and Qwen-Image issues,
// small enough to carry to a GPU machine:
//
//	CGO_ENABLED=0 go build -tags "nodemo nokernels" -ldflags "-s -w" -o bin/ditstep ./tools/bench/ditstep
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/ditstep -model flux-dev -precision bf16
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/ditstep -model sd35-large -batch 2
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/darkroom-ai/darkroom/engine"
)

func main() {
	model := flag.String("model", "flux-dev", "flux-dev, sd35-large, sd35-medium, zimage-turbo or qwen-image")
	device := flag.String("device", "cuda", "device: cpu or cuda")
	precision := flag.String("precision", "bf16", "GPU precision: fp16, bf16 or fp32")
	width := flag.Int("W", 1024, "image width")
	height := flag.Int("H", 1024, "image height")
	text := flag.Int("text", 0, "text tokens (0: 512 T5 tokens for Flux, 77 CLIP + 256 T5 for SD3.5, 128 Qwen tokens for Z-Image and Qwen-Image)")
	batch := flag.Int("batch", 0, "batch rows (0: 1 for Flux and Z-Image Turbo, 2 (CFG) for SD3.5 and Qwen-Image)")
	runs := flag.Int("runs", 10, "timed runs")
	profile := flag.Bool("profile", false, "time every GPU kernel and GEMM with CUDA events and print where the time goes")
	flag.Parse()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "ditstep:", err)
		os.Exit(1)
	}
	eng, err := engine.Open(engine.Options{Device: *device, Precision: *precision, Profile: *profile})
	if err != nil {
		fail(err)
	}
	defer eng.Close()
	ctx := context.Background()
	var r engine.BenchResult
	switch *model {
	case "flux-dev":
		if *batch > 1 {
			fail(fmt.Errorf("-batch %d: the Flux benchmark runs one row", *batch))
		}
		r, err = engine.BenchFluxStep(ctx, eng.Device(), *width, *height, or(*text, 512), *runs)
	case "sd35-large", "sd35-medium":
		r, err = engine.BenchSD3Step(ctx, eng.Device(), (*model)[len("sd35-"):], *width, *height, or(*batch, 2), or(*text, 77+256), *runs)
	case "zimage-turbo":
		r, err = engine.BenchZImageStep(ctx, eng.Device(), *width, *height, or(*batch, 1), or(*text, 128), *runs)
	case "qwen-image":
		r, err = engine.BenchQwenImageStep(ctx, eng.Device(), *width, *height, or(*batch, 2), or(*text, 128), *runs)
	default:
		err = fmt.Errorf("-model %q: want flux-dev, sd35-large, sd35-medium, zimage-turbo or qwen-image", *model)
	}
	if err != nil {
		fail(err)
	}
	fmt.Printf("device: %s\n", eng.Device().Name())
	if *profile {
		report, err := eng.ProfileReport(r.Name, *runs)
		if err != nil {
			fail(err)
		}
		fmt.Print(report)
	}
	fmt.Printf("%-44s %12s %12s %5d\n", r.Name, r.Warm.Round(1e5), r.Median().Round(1e4), len(r.Runs))
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
