package cmd

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/server"
	"github.com/darkroom-ai/darkroom/tui"
)

// tuiFlags are the root command's flags, used when darkroom runs with no
// subcommand in a terminal and opens the TUI.
type tuiFlags struct {
	models    []string
	model     string
	graphics  string
	outputDir string
	device    string
	precision string
	server    string
	token     string
}

func addTUIFlags(root *cobra.Command, f *tuiFlags) {
	fl := root.Flags()
	fl.StringSliceVar(&f.models, "models", nil, "model directories for the TUI's model picker (default "+engine.DefaultModelDir()+"; ComfyUI / A1111 / SwarmUI roots work)")
	fl.StringVarP(&f.model, "model", "m", "", "model to preselect in the TUI (a name or a path)")
	fl.StringVar(&f.graphics, "graphics", "auto", "inline images in the TUI: auto, kitty, sixel, iterm, halfblock or none")
	fl.StringVar(&f.outputDir, "output-dir", ".", "where the TUI writes PNGs")
	fl.StringVar(&f.device, "device", "auto", "compute device: auto, cpu or cuda")
	fl.StringVar(&f.precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32 (parity mode); the CPU always computes in float32")
	fl.StringVar(&f.server, "server", "", "run the TUI's jobs on a darkroom serve at this URL (http://HOST:7860) instead of this machine")
	fl.StringVar(&f.token, "server-token", "", "bearer token for --server (or DARKROOM_TOKEN)")
}

// runTUI opens the TUI when standard input and output are terminals, and
// prints the help otherwise.
func runTUI(cmd *cobra.Command, f *tuiFlags) error {
	if !term.IsTerminal(int(os.Stdin.Fd())) || !term.IsTerminal(int(os.Stdout.Fd())) {
		return cmd.Help()
	}
	if f.server != "" {
		c, err := connectServer("--server", f.server, f.token)
		if err != nil {
			return err
		}
		// The jobs, their models and previews, the GPU gauges and the
		// queue are the server's.
		return tui.Run(cmd.Context(), tui.Options{Model: f.model, Graphics: f.graphics, OutputDir: f.outputDir,
			Engine: c, GPUStats: serverStats{c}, Queue: serverQueue{c}, Connect: connectScript})
	}
	eng, err := engine.Open(engine.Options{ModelDirs: f.models, Device: f.device, Precision: f.precision})
	if err != nil {
		return err
	}
	defer eng.Close()
	opts := tui.Options{
		ModelDirs: f.models, Model: f.model, Graphics: f.graphics, OutputDir: f.outputDir,
		Engine: eng, GPUStats: nvmlStats{}, Connect: connectScript,
	}
	// Live previews: TAESD (SD1/SD2), TAESDXL, TAESD3 and TAEF1 when their
	// decoders are in the model directories, the linear latent
	// approximation otherwise.
	pv, errs := engine.LoadPreviewers(cmd.Context(), eng.ModelDirs(), eng.Device())
	for _, err := range errs {
		fmt.Fprintf(cmd.ErrOrStderr(), "darkroom: %v; its previews use the linear approximation\n", err)
	}
	if len(pv) > 0 {
		opts.Previewer = pv
	}
	return tui.Run(cmd.Context(), opts)
}

// serverStats feeds the TUI's GPU gauges from a server's /v1/devices
// (memory only: the server reports no utilisation).
type serverStats struct{ c *server.Client }

// GPUStats lists the server machine's GPUs.
func (s serverStats) GPUStats() ([]tui.GPUStat, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	devs, _, err := s.c.Devices(ctx)
	if err != nil {
		return nil, nil // an unreachable server shows no GPUs, as NVML's absence does
	}
	var out []tui.GPUStat
	for _, d := range devs {
		if d.Kind == "cuda" {
			out = append(out, tui.GPUStat{Index: len(out), Name: d.Name, MemUsed: d.MemoryTotal - d.MemoryFree, MemTotal: d.MemoryTotal})
		}
	}
	return out, nil
}

// serverQueue feeds the TUI's queue pane with a server's queue
// (GET /v1/queue); the job the TUI runs there itself is marked Here.
type serverQueue struct{ c *server.Client }

// RemoteJobs lists the server's running and waiting jobs.
func (q serverQueue) RemoteJobs() ([]tui.RemoteJob, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	jobs, err := q.c.Queue(ctx)
	if err != nil {
		return nil, err
	}
	var out []tui.RemoteJob
	for _, j := range jobs {
		r := tui.RemoteJob{ID: j.ID, Client: j.Client, Mine: j.Mine, Here: j.Here, State: tui.JobQueued, Position: j.Position,
			Worker: j.Worker, Phase: j.Phase, Step: j.Step, Total: j.Total, Model: j.Model, Width: j.Width, Height: j.Height, Steps: j.Steps}
		if j.State == server.StateRunning {
			r.State = tui.JobRunning
		}
		if j.Request != nil {
			r.Prompt = j.Request.Prompt
		}
		out = append(out, r)
	}
	return out, nil
}

// nvmlStats feeds the TUI's device gauges from NVML.
type nvmlStats struct{}

// GPUStats samples every GPU; machines without a driver report none.
func (nvmlStats) GPUStats() ([]tui.GPUStat, error) {
	st, err := engine.SampleGPUs()
	if err != nil {
		return nil, nil
	}
	out := make([]tui.GPUStat, len(st))
	for i, g := range st {
		out[i] = tui.GPUStat{Index: g.Index, Name: g.Name, MemUsed: g.MemoryUsed, MemTotal: g.MemoryTotal,
			Util: float64(g.UtilizationPct), TempC: float64(g.TemperatureC), PowerW: g.PowerW, PowerLimitW: g.PowerLimitW}
	}
	return out, nil
}
