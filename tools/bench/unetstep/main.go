// Command unetstep times one UNet step with random weights on a device and
// prints the line `darkroom bench` prints for it. It is the benchmark
// alone, small enough to carry to a GPU machine beside other work:
//
//	CGO_ENABLED=0 go build -tags "nodemo nokernels" -ldflags "-s -w" -o bin/unetstep ./tools/bench/unetstep
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/unetstep -arch sdxl -W 1024 -H 1024
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
	precision := flag.String("precision", "fp16", "GPU precision: fp16, bf16 or fp32")
	arch := flag.String("arch", "sdxl", "UNet: sd15 or sdxl")
	width := flag.Int("W", 1024, "image width")
	height := flag.Int("H", 1024, "image height")
	batch := flag.Int("batch", 2, "batch (2 = one CFG step)")
	runs := flag.Int("runs", 20, "timed runs")
	profile := flag.Bool("profile", false, "time every GPU kernel and GEMM with CUDA events and print where the time goes (no CUDA graphs)")
	flag.Parse()
	eng, err := engine.Open(engine.Options{Device: *device, Precision: *precision, Profile: *profile})
	if err != nil {
		fmt.Fprintln(os.Stderr, "unetstep:", err)
		os.Exit(1)
	}
	defer eng.Close()
	r, err := engine.BenchUNetStep(context.Background(), eng.Device(), *arch, *width, *height, *batch, *runs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unetstep:", err)
		os.Exit(1)
	}
	fmt.Printf("device: %s\n", eng.Device().Name())
	if *profile {
		report, err := eng.ProfileReport(r.Name, *runs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "unetstep:", err)
			os.Exit(1)
		}
		fmt.Print(report)
	}
	fmt.Printf("%-36s %12s %12s %5d\n", r.Name, r.Warm.Round(1e5), r.Median().Round(1e4), len(r.Runs))
	if r.Notes != "" {
		fmt.Printf("  %s\n", r.Notes)
	}
}
