// Command fluxstep times one FLUX.1-dev transformer step (12 B parameters,
// random weights) on a device, the benchmark of the Flux issue, small
// enough to carry to a GPU machine:
//
//	CGO_ENABLED=0 go build -tags "nodemo nokernels" -ldflags "-s -w" -o bin/fluxstep ./tools/bench/fluxstep
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/fluxstep -precision bf16
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/darkroom-ai/darkroom/engine"
)

func main() {
	device := flag.String("device", "cuda", "device: cpu or cuda")
	precision := flag.String("precision", "bf16", "GPU precision: fp16, bf16 or fp32")
	width := flag.Int("W", 1024, "image width")
	height := flag.Int("H", 1024, "image height")
	text := flag.Int("text", 512, "T5 tokens")
	runs := flag.Int("runs", 10, "timed runs")
	profile := flag.Bool("profile", false, "time every GPU kernel and GEMM with CUDA events and print where the time goes")
	flag.Parse()
	eng, err := engine.Open(engine.Options{Device: *device, Precision: *precision, Profile: *profile})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fluxstep:", err)
		os.Exit(1)
	}
	defer eng.Close()
	r, err := engine.BenchFluxStep(context.Background(), eng.Device(), *width, *height, *text, *runs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fluxstep:", err)
		os.Exit(1)
	}
	fmt.Printf("device: %s\n", eng.Device().Name())
	if *profile {
		report, err := eng.ProfileReport(r.Name, *runs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fluxstep:", err)
			os.Exit(1)
		}
		fmt.Print(report)
	}
	fmt.Printf("%-44s %12s %12s %5d\n", r.Name, r.Warm.Round(1e5), r.Median().Round(1e4), len(r.Runs))
}
