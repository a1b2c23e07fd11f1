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

// RemoteJob is a job of the server the TUI runs its jobs on (`darkroom
// --server`): the queue pane lists the server's queue below the TUI's
// own jobs.
type RemoteJob struct {
	// ID is the server's job id; Client the client it belongs to (its
	// token's name, "alice" or "alice/bot").
	ID, Client string
	// Mine is true for a job of the TUI's own token that something else
	// submitted (a REPL, a script); only those carry their Prompt.
	Mine   bool
	Prompt string
	// Here marks the TUI's own running job (its pipeline's): it is not
	// listed with the others; while it waits on the server, its row says
	// how many jobs are ahead.
	Here bool
	// State is JobQueued or JobRunning. Position counts the waiting jobs
	// before a queued one (0: next).
	State    JobState
	Position int
	// Worker is the server's worker that runs it; Phase, Step and Total
	// its progress.
	Worker      string
	Phase       string
	Step, Total int
	// Model names the job's model; Width, Height and Steps are 0 where the
	// model's defaults apply.
	Model                string
	Width, Height, Steps int
}

// RemoteQueue lists the running and waiting jobs of the server the TUI
// runs its jobs on, in queue order, the TUI's own marked Here. The queue
// pane polls it every remoteInterval, off the UI goroutine.
type RemoteQueue interface {
	RemoteJobs() ([]RemoteJob, error)
}
