package tui

import (
	"context"
	"image"

	"github.com/darkroom-ai/darkroom/engine"
)

// Pipeline is what the TUI needs from the engine. *engine.Engine
// implements it; tests use a fake that emits scripted progress.
type Pipeline interface {
	// ListModels lists the models found in the model directories.
	ListModels() []engine.ModelEntry
	// ModelDirs returns the directories searched for models.
	ModelDirs() []string
	// Generate runs one request, calling onEvent on the generating
	// goroutine; cancelling ctx stops it.
	Generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error)
}

var _ Pipeline = (*engine.Engine)(nil)

// Previewer is optionally implemented by a Pipeline that draws better live
// previews than the linear latent approximation (TAESD, when its weights
// are present). Preview returns batch item i of the denoised latents as an
// image, or nil to fall back to engine.LatentPreview.
type Previewer interface {
	Preview(f engine.LatentFormat, latents []float32, shape []int, i int) *image.NRGBA
}

// previewPipeline is a Pipeline whose previews come from a separate
// Previewer.
type previewPipeline struct {
	Pipeline
	Previewer
}

// withPreviewer returns p drawing its previews with pv (p itself when pv is
// nil).
func withPreviewer(p Pipeline, pv Previewer) Pipeline {
	if pv == nil {
		return p
	}
	return previewPipeline{Pipeline: p, Previewer: pv}
}

// GPUStat is one GPU's state, as NVML reports it.
type GPUStat struct {
	Index int
	Name  string
	// MemUsed and MemTotal are bytes.
	MemUsed, MemTotal uint64
	// Util is the utilisation in percent (0–100).
	Util float64
	// TempC is the temperature in °C; PowerW and PowerLimitW are watts
	// (zero when unknown).
	TempC, PowerW, PowerLimitW float64
}

// GPUStatsProvider samples GPU statistics (NVML on NVIDIA machines). The
// devices pane calls it once a second, off the UI goroutine.
type GPUStatsProvider interface {
	GPUStats() ([]GPUStat, error)
}
