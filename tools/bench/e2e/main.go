// Command e2e times whole text-to-image requests in one warm process: it
// loads a checkpoint once, runs the request -warm times untimed (the
// per-shape convolution measurements and graph recordings happen there),
// then -runs times, and prints the median wall time of a request with its
// encode / sample / decode parts and the job's peak device memory. It is
// what "SDXL 1024² 30 steps end to end, warm process" in
// docs/performance.md measures:
//
//	CGO_ENABLED=0 go build -tags "nodemo nokernels" -ldflags "-s -w" -o bin/e2e ./tools/bench/e2e
//	DARKROOM_CUDA_KERNELS=$PWD/kernels bin/e2e -m sdxl-folder -W 1024 -H 1024 -steps 30
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
	model := flag.String("m", "", "checkpoint: single file or diffusers folder")
	device := flag.String("device", "cuda", "device: cpu or cuda")
	precision := flag.String("precision", "fp16", "GPU precision: fp16, bf16 or fp32")
	width := flag.Int("W", 1024, "image width")
	height := flag.Int("H", 1024, "image height")
	steps := flag.Int("steps", 30, "sampler steps")
	cfg := flag.Float64("cfg", 5, "guidance scale")
	sampler := flag.String("sampler", "euler", "sampler")
	scheduler := flag.String("scheduler", "normal", "scheduler")
	warm := flag.Int("warm", 1, "untimed requests first")
	runs := flag.Int("runs", 3, "timed requests")
	out := flag.String("o", "", "write the last image here (PNG)")
	flag.Parse()
	if err := run(*model, *device, *precision, *width, *height, *steps, *cfg, *sampler, *scheduler, *warm, *runs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
}

func run(model, device, precision string, w, h, steps int, cfg float64, sampler, scheduler string, warm, runs int, out string) error {
	if model == "" || runs < 1 {
		return fmt.Errorf("-m is required and -runs must be at least 1")
	}
	eng, err := engine.Open(engine.Options{Device: device, Precision: precision})
	if err != nil {
		return err
	}
	defer eng.Close()
	ctx := context.Background()
	t0 := time.Now()
	m, err := eng.Load(ctx, model)
	if err != nil {
		return err
	}
	load := time.Since(t0)
	req := m.DefaultRequest()
	req.Prompt, req.Negative = "a lighthouse on a cliff at dusk, oil painting", "blurry, low quality"
	req.Width, req.Height, req.Steps, req.CFG, req.Sampler, req.Scheduler, req.Seed = w, h, steps, cfg, sampler, scheduler, 1
	var total, enc, smp, dec []time.Duration
	var peak uint64
	var first time.Duration
	for i := range warm + runs {
		t := time.Now()
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			return err
		}
		d := time.Since(t)
		if i == 0 {
			first = d
		}
		if i >= warm {
			total, enc, smp, dec = append(total, d), append(enc, res.EncodeTime), append(smp, res.SampleTime), append(dec, res.DecodeTime)
			peak = max(peak, res.PeakMemory)
		}
		if i == warm+runs-1 && out != "" {
			if err := engine.SavePNG(out, res.Images[0], req, "", model); err != nil {
				return err
			}
		}
	}
	fmt.Printf("device: %s\n", eng.Device().Name())
	fmt.Printf("load %v, first request %v\n", load.Round(time.Millisecond), first.Round(time.Millisecond))
	fmt.Printf("e2e %dx%d %d steps cfg %g %s/%s: median %v (encode %v, sample %v = %.2f ms/step, decode %v) over %d; peak device memory %.0f MiB\n",
		w, h, steps, cfg, sampler, scheduler, median(total).Round(time.Millisecond), median(enc).Round(time.Millisecond),
		median(smp).Round(time.Millisecond), float64(median(smp).Microseconds())/1000/float64(steps),
		median(dec).Round(time.Millisecond), runs, float64(peak)/(1<<20))
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
