package tui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"path/filepath"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
)

// jobProgressMsg reports a step of the running job. Preview is the latent
// preview of the first image (nil outside the sampling phase): drawn from
// the event's latents, or the event's ready Preview (a remote run's).
type jobProgressMsg struct {
	ID      int
	Event   engine.Event // Denoised and Preview are dropped
	Preview *image.NRGBA
	At      time.Time
}

// jobDoneMsg reports the end of a job: its images and saved files, or why
// it failed.
type jobDoneMsg struct {
	ID        int
	Images    []*image.NRGBA
	Paths     []string
	Elapsed   time.Duration
	Err       error
	Cancelled bool
	// Result is the engine's result (nil on failure), handed to the
	// script that submitted the job, if any.
	Result *engine.Result
}

// workItem is a job handed to the worker.
type workItem struct {
	ID  int
	Req engine.Request
	Ctx context.Context
}

// worker owns the pipeline: it runs one job at a time on its own
// goroutine and reports through out, which one goroutine forwards to the
// program (Program.Send).
type worker struct {
	p      Pipeline
	outDir string
	log    *slog.Logger
	save   func(path string, img image.Image, req engine.Request, hash, name string) error
	now    func() time.Time
	in     chan workItem
	out    chan tea.Msg
}

func newWorker(p Pipeline, outDir string, log *slog.Logger) *worker {
	if outDir == "" {
		outDir = "."
	}
	return &worker{
		p: p, outDir: outDir, log: log, save: engine.SavePNG, now: time.Now,
		in: make(chan workItem, 1), out: make(chan tea.Msg, 64),
	}
}

// submit hands a job to the worker; the app submits only while the worker
// is idle, so it does not block.
func (w *worker) submit(it workItem) tea.Cmd {
	return func() tea.Msg {
		w.in <- it
		return nil
	}
}

// run processes jobs until ctx is done; it closes out when it returns.
func (w *worker) run(ctx context.Context) {
	defer close(w.out)
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-w.in:
			msg := w.do(it)
			select {
			case w.out <- msg:
			case <-ctx.Done():
				return
			}
		}
	}
}

// previewShare is the largest fraction of a job's time its previews may
// take, unless each takes less than cheapPreview.
const (
	previewShare = 0.2
	cheapPreview = 20 * time.Millisecond
)

// do runs one job, saving its images as PNGs in the output directory.
func (w *worker) do(it workItem) (done jobDoneMsg) {
	done.ID = it.ID
	start := w.now()
	defer func() {
		if r := recover(); r != nil {
			done.Err = fmt.Errorf("engine panic: %v", r)
			w.log.Error("job panicked", "id", it.ID, "panic", r)
		}
		done.Elapsed = w.now().Sub(start)
	}()
	w.log.Info("job start", "id", it.ID, "model", it.Req.Model, "seed", it.Req.Seed, "steps", it.Req.Steps)
	// A slow previewer (TAESD on a CPU) may take at most previewShare of
	// the job's time; steps over budget get the linear preview. A cheap one
	// (under cheapPreview a call, e.g. on a GPU) always runs.
	var previewSpent, lastCost time.Duration
	jobStart := time.Now()
	res, err := w.p.Generate(it.Ctx, it.Req, func(ev engine.Event) {
		msg := jobProgressMsg{ID: it.ID, Event: ev, At: w.now()}
		switch {
		case ev.Preview != nil:
			// A remote run (darkroom --server) sends the server's preview.
			msg.Preview = ev.Preview
		case ev.Denoised != nil:
			if pv, ok := w.p.(Previewer); ok && (lastCost < cheapPreview || previewSpent <= time.Duration(previewShare*float64(time.Since(jobStart)))) {
				t0 := time.Now()
				msg.Preview = pv.Preview(ev.Format, ev.Denoised, ev.LatentShape, 0)
				lastCost = time.Since(t0)
				previewSpent += lastCost
			}
			if msg.Preview == nil {
				msg.Preview = engine.LatentPreview(ev.Format, ev.Denoised, ev.LatentShape, 0)
			}
		}
		msg.Event.Denoised, msg.Event.Preview = nil, nil
		if ev.Phase == engine.PhaseSample {
			select { // a slow UI drops intermediate steps, never the end
			case w.out <- msg:
			default:
			}
			return
		}
		select {
		case w.out <- msg:
		case <-it.Ctx.Done():
		}
	})
	if err != nil {
		done.Err = err
		done.Cancelled = errors.Is(err, context.Canceled) || it.Ctx.Err() != nil
		w.log.Info("job ended", "id", it.ID, "err", err, "cancelled", done.Cancelled)
		return done
	}
	done.Images, done.Result = res.Images, res
	// Saved as `darkroom gen` saves: with the model's hash, and the
	// built-in model's tiny images enlarged demo.ViewScale times.
	hash, name, err := modelHash(it.Ctx, w.p, it.Req)
	if err != nil {
		done.Err = fmt.Errorf("save image: %w", err)
		w.log.Error("model hash failed", "id", it.ID, "err", err)
		return done
	}
	scale := 1
	if it.Req.Model == engine.DefaultModel {
		scale = demo.ViewScale
	}
	stamp := start.Format("20060102-150405")
	for i, img := range res.Images {
		path := filepath.Join(w.outDir, imageName(stamp, it.ID, it.Req.Seed, i, len(res.Images)))
		// Each file of a batch records which image it is (gen --from
		// regenerates the batch and keeps that one).
		stored := res.Request
		if stored.Batch > 1 {
			stored.BatchIndex = i + 1
		}
		if err := w.save(path, engine.Enlarge(img, scale), stored, hash, name); err != nil {
			done.Err = fmt.Errorf("save image: %w", err)
			w.log.Error("save failed", "id", it.ID, "err", err)
			return done
		}
		done.Paths = append(done.Paths, path)
	}
	w.log.Info("job done", "id", it.ID, "files", done.Paths)
	return done
}

// imageName names image i of a job's n: darkroom-STAMP-JOB-SEED.png, and
// for a batch darkroom-STAMP-JOB-SEED-I.png with I counted from 1. The
// batch's images share one seed (one noise tensor for the batch, as in
// ComfyUI), so the file names the batch seed and the image's place in it,
// never seed+i: no single seed regenerates image i alone.
func imageName(stamp string, job int, seed uint64, i, n int) string {
	if n == 1 {
		return fmt.Sprintf("darkroom-%s-%03d-%d.png", stamp, job, seed)
	}
	return fmt.Sprintf("darkroom-%s-%03d-%d-%d.png", stamp, job, seed, i+1)
}

// modelLoader is implemented by *engine.Engine: it returns the (cached)
// model a request names.
type modelLoader interface {
	LoadRequest(ctx context.Context, req engine.Request) (*engine.Model, error)
}

// modelHash returns the hash and name of req's model for the PNG
// metadata, as `darkroom gen` writes them; a pipeline that cannot load
// models (a test fake) gives no hash and the file's display name.
func modelHash(ctx context.Context, p Pipeline, req engine.Request) (hash, name string, err error) {
	if pp, ok := p.(previewPipeline); ok {
		p = pp.Pipeline
	}
	l, ok := p.(modelLoader)
	if !ok {
		return "", modelName(req.Model), nil
	}
	m, err := l.LoadRequest(ctx, req)
	if err != nil {
		return "", "", err
	}
	if hash, err = m.Hash(); err != nil {
		return "", "", err
	}
	return hash, m.Name, nil
}

// modelName is the display name of a model path or name.
func modelName(m string) string {
	base := filepath.Base(m)
	if ext := filepath.Ext(base); ext == ".safetensors" || ext == ".ckpt" {
		base = base[:len(base)-len(ext)]
	}
	return base
}
