package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/darkroom-ai/darkroom/engine"
)

func newBenchCmd() *cobra.Command {
	var (
		device, precision   string
		conv                string
		profile, noGraphs   bool
		noFusedGemm         bool
		width, height, runs int
		batch               int
		vaeOnly, unetOnly   bool
		arch                string
	)
	c := &cobra.Command{
		Use:   "bench",
		Short: "Time a UNet step (SD1.5 or SDXL) and a VAE decode (random weights) on a device",
		Long: `Time the SD1.5 UNet (one step, batch 2 = the two halves of CFG) and the
SD1.x VAE decoder with random weights, so no checkpoint is needed. Prints the
warm-up run and the median of the timed runs. Results for the record go in
docs/performance.md with machine and date.`,
		Example: "  darkroom bench --device cpu --runs 3\n  darkroom bench --device cuda -W 1024 -H 1024 --vae",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if width%8 != 0 || height%8 != 0 || width < 64 || height < 64 {
				return fmt.Errorf("--width/--height %dx%d: must be multiples of 8, at least 64", width, height)
			}
			if runs < 1 || batch < 1 {
				return fmt.Errorf("--runs %d, --batch %d: must be at least 1", runs, batch)
			}
			eng, err := engine.Open(engine.Options{Device: device, Precision: precision, Profile: profile,
				NoGraphs: noGraphs, Conv: conv, NoFusedGemm: noFusedGemm})
			if err != nil {
				return err
			}
			defer eng.Close()
			out := cmd.OutOrStdout()
			if eng.Notice != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), eng.Notice)
			}
			fmt.Fprintf(out, "device: %s\n", eng.Device().Name())
			var results []engine.BenchResult
			if !vaeOnly {
				r, err := engine.BenchUNetStep(cmd.Context(), eng.Device(), arch, width, height, batch, runs)
				if err != nil {
					return err
				}
				results = append(results, r)
				if err := printProfile(out, eng, r.Name, runs); err != nil {
					return err
				}
			}
			if !unetOnly {
				r, err := engine.BenchVAEDecode(cmd.Context(), eng.Device(), width, height, runs)
				if err != nil {
					return err
				}
				results = append(results, r)
				if err := printProfile(out, eng, r.Name, runs); err != nil {
					return err
				}
			}
			if c, ok := eng.Device().(interface{ ConvInfo() string }); ok {
				fmt.Fprintf(out, "convolution: %s\n", c.ConvInfo())
			}
			if c, ok := eng.Device().(interface{ EpilogueInfo() string }); ok {
				fmt.Fprintf(out, "biases: %s\n", c.EpilogueInfo())
			}
			fmt.Fprintf(out, "%-36s %12s %12s %5s\n", "benchmark", "warm-up", "median", "runs")
			for _, r := range results {
				fmt.Fprintf(out, "%-36s %12s %12s %5d\n", r.Name, r.Warm.Round(1e5), r.Median().Round(1e4), len(r.Runs))
				if r.Notes != "" {
					fmt.Fprintf(out, "  %s\n", r.Notes)
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&device, "device", "auto", "compute device: auto, cpu or cuda")
	f.StringVar(&precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32 (parity mode); the CPU always computes in float32")
	f.IntVarP(&width, "width", "W", 512, "image width")
	f.IntVarP(&height, "height", "H", 512, "image height")
	f.IntVarP(&batch, "batch", "b", 2, "UNet batch (2 = one CFG step)")
	f.IntVar(&runs, "runs", 5, "timed runs after one warm-up")
	f.BoolVar(&vaeOnly, "vae", false, "only the VAE decode")
	f.BoolVar(&unetOnly, "unet", false, "only the UNet step")
	f.StringVar(&arch, "arch", "sd15", "UNet architecture: sd15 (SD1.5) or sdxl (SDXL 1.0 base: context 2048, vector input 2816)")
	f.BoolVar(&profile, "profile", false, "time every GPU kernel and GEMM with CUDA events and print where the time goes (no CUDA graphs)")
	f.BoolVar(&noGraphs, "no-graphs", false, "GPU: run the UNet step op by op instead of replaying a CUDA graph")
	f.StringVar(&conv, "conv", "auto", "GPU convolution: auto (cuDNN or im2col, whichever is faster per shape, measured once), cudnn or im2col")
	f.BoolVar(&noFusedGemm, "no-fused-gemm", false, "GPU: add Linear biases with a separate kernel instead of a cuBLASLt epilogue")
	return c
}

// printProfile prints the GPU time per kernel of the last benchmark's timed
// runs (the warm-up is not counted) when the device was opened with
// profiling.
func printProfile(w io.Writer, eng *engine.Engine, name string, calls int) error {
	report, err := eng.ProfileReport(name, calls)
	if err != nil || report == "" {
		return err
	}
	fmt.Fprint(w, report)
	return nil
}
