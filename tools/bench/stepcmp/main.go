// Command stepcmp times, on one device, the SD1.5 UNet step (512², batch 2,
// random weights), the SD1.x VAE decode (512² and 1024²) and the whole
// generic pipeline (Generate on the tiny SD1 reference model), and prints
// one line per measurement. It uses only engine calls that have been
// stable across redesigns (Open, BenchUNetStep, BenchVAEDecode, Load,
// Generate), so the same source builds against an earlier commit and the
// two binaries can run side by side in one GPU call:
//
//	CGO_ENABLED=0 go build -tags "nodemo nokernels" -ldflags "-s -w" -o bin/stepcmp ./tools/bench/stepcmp
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/stepcmp -device cuda
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

func main() {
	device := flag.String("device", "cuda", "device: cpu or cuda")
	runs := flag.Int("runs", 30, "timed UNet runs")
	model := flag.String("model", "testdata/reference/sd1-tiny-a/single.safetensors", "small SD1 checkpoint for the pipeline timing")
	label := flag.String("label", "", "label printed in front of each line")
	flag.Parse()
	if err := run(*device, *runs, *model, *label); err != nil {
		fmt.Fprintln(os.Stderr, "stepcmp:", err)
		os.Exit(1)
	}
}

func run(device string, runs int, model, label string) error {
	ctx := context.Background()
	eng, err := engine.Open(engine.Options{Device: device})
	if err != nil {
		return err
	}
	defer eng.Close()
	dev := eng.Device()
	u, err := engine.BenchUNetStep(ctx, dev, "sd15", 512, 512, 2, runs)
	if err != nil {
		return err
	}
	fmt.Printf("%s unet512b2 %.3f ms\n", label, ms(u.Median()))
	for _, size := range []int{512, 1024} {
		v, err := engine.BenchVAEDecode(ctx, dev, size, size, max(runs/3, 3))
		if err != nil {
			return err
		}
		fmt.Printf("%s vae%d %.3f ms\n", label, size, ms(v.Median()))
	}
	m, err := eng.Load(ctx, model)
	if err != nil {
		return err
	}
	req := engine.DefaultRequest()
	req.Model, req.Prompt, req.Negative = model, "a photo of a cat", "blurry"
	req.Width, req.Height, req.Batch, req.Steps, req.Seed = 256, 256, 2, 20, 1
	var samples []time.Duration
	for i := range 6 {
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			return err
		}
		if i > 0 {
			samples = append(samples, res.SampleTime)
		}
	}
	slices.Sort(samples)
	fmt.Printf("%s pipeline_step %.3f ms\n", label, ms(samples[len(samples)/2])/float64(req.Steps))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
