package tui

import (
	"context"
	"image"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/demo"
)

type panicPipeline struct{ fakePipeline }

func (*panicPipeline) Generate(context.Context, engine.Request, func(engine.Event)) (*engine.Result, error) {
	panic("index out of range")
}

func newTestWorker(t *testing.T, p Pipeline) *worker {
	w := newWorker(p, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return w
}

func TestWorkerSavesAndReports(t *testing.T) {
	w := newTestWorker(t, tinyModels())
	req := engine.DefaultRequest()
	req.Model, req.Prompt, req.Steps, req.Width, req.Height, req.Batch, req.Seed = "/m/tiny.safetensors", "a cat", 3, 16, 16, 2, 41
	done := w.do(workItem{ID: 7, Req: req, Ctx: context.Background()})
	if done.Err != nil {
		t.Fatal(done.Err)
	}
	wantNames := []string{"darkroom-20260102-030405-007-41-1.png", "darkroom-20260102-030405-007-41-2.png"}
	if len(done.Paths) != 2 {
		t.Fatalf("paths %v", done.Paths)
	}
	for i, p := range done.Paths {
		if filepath.Base(p) != wantNames[i] {
			t.Errorf("path %d = %s, want %s", i, filepath.Base(p), wantNames[i])
		}
		got, err := engine.RequestFromPNG(p)
		if err != nil || got.Prompt != "a cat" || got.Seed != 41 {
			t.Errorf("PNG %d metadata %+v, %v", i, got, err)
		}
	}
	// Progress: encode, 3 sample steps with previews, decode, done.
	var phases []engine.Phase
	previews := 0
	for len(w.out) > 0 {
		m := (<-w.out).(jobProgressMsg)
		phases = append(phases, m.Event.Phase)
		if m.Preview != nil {
			previews++
			if m.Preview.Bounds() != image.Rect(0, 0, 2, 2) || m.Event.Denoised != nil {
				t.Errorf("preview %v, denoised kept %v", m.Preview.Bounds(), m.Event.Denoised != nil)
			}
		}
	}
	if len(phases) != 6 || previews != 3 || phases[0] != engine.PhaseEncode || phases[5] != engine.PhaseDone {
		t.Errorf("phases %v, %d previews", phases, previews)
	}
}

func TestWorkerCancelFailPanic(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	w := newTestWorker(t, fake)
	req := engine.DefaultRequest()
	req.Model, req.Steps, req.Width, req.Height = "tiny", 5, 16, 16
	ctx, cancel := context.WithCancel(context.Background())
	go func() { fake.gate <- struct{}{}; cancel() }()
	done := w.do(workItem{ID: 1, Req: req, Ctx: ctx})
	if !done.Cancelled || done.Err == nil || len(done.Paths) != 0 {
		t.Errorf("cancel: %+v", done)
	}
	fake.gate = nil
	req.Prompt = "fail me"
	if done := w.do(workItem{ID: 2, Req: req, Ctx: context.Background()}); done.Cancelled || done.Err != errTest {
		t.Errorf("failure: %+v", done)
	}
	pw := newTestWorker(t, &panicPipeline{})
	if done := pw.do(workItem{ID: 3, Req: req, Ctx: context.Background()}); done.Err == nil || done.Err.Error() != "engine panic: index out of range" {
		t.Errorf("panic: %+v", done)
	}
	// An unwritable output directory fails the job, saying why.
	bad := newTestWorker(t, tinyModels())
	bad.outDir = filepath.Join(t.TempDir(), "missing", "dir")
	req.Prompt = "ok"
	if done := bad.do(workItem{ID: 4, Req: req, Ctx: context.Background()}); done.Err == nil {
		t.Error("no error saving into a missing directory")
	}
	entries, _ := os.ReadDir(w.outDir)
	if len(entries) != 0 {
		t.Errorf("files left by failed jobs: %v", entries)
	}
}

func TestWorkerRunLoop(t *testing.T) {
	w := newTestWorker(t, tinyModels())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.run(ctx); close(stopped) }()
	req := engine.DefaultRequest()
	req.Model, req.Steps, req.Width, req.Height = "tiny", 2, 16, 16
	if msg := w.submit(workItem{ID: 9, Req: req, Ctx: ctx})(); msg != nil {
		t.Errorf("submit returned %v", msg)
	}
	var last tea.Msg
	for m := range w.out {
		if d, ok := m.(jobDoneMsg); ok {
			last = d
			break
		}
	}
	if d, ok := last.(jobDoneMsg); !ok || d.ID != 9 || d.Err != nil {
		t.Errorf("done %+v", last)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("worker did not stop")
	}
}

// taesdPipeline decodes previews at 8× the latent size, like TAESD.
type taesdPipeline struct{ *fakePipeline }

func (taesdPipeline) Preview(_ engine.LatentFormat, latents []float32, shape []int, i int) *image.NRGBA {
	return image.NewNRGBA(image.Rect(0, 0, shape[3]*8, shape[2]*8))
}

var _ Previewer = taesdPipeline{}

func TestWorkerUsesPreviewer(t *testing.T) {
	w := newTestWorker(t, taesdPipeline{tinyModels()})
	req := engine.DefaultRequest()
	req.Model, req.Steps, req.Width, req.Height = "tiny", 2, 32, 16
	if done := w.do(workItem{ID: 1, Req: req, Ctx: context.Background()}); done.Err != nil {
		t.Fatal(done.Err)
	}
	n := 0
	for len(w.out) > 0 {
		if m := (<-w.out).(jobProgressMsg); m.Preview != nil {
			n++
			if m.Preview.Bounds() != image.Rect(0, 0, 32, 16) {
				t.Errorf("preview %v, want the Previewer's 32×16", m.Preview.Bounds())
			}
		}
	}
	if n != 2 {
		t.Errorf("%d previews, want 2", n)
	}
}

// The TUI saves what `darkroom gen` saves: the model hash in the A1111
// parameters, the built-in model's images enlarged demo.ViewScale times,
// and a batch's files named by the batch seed and the image's index,
// each recording the batch's own request (bugs 5 and 9 of issue 23).
func TestWorkerSavesLikeGen(t *testing.T) {
	eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	// As cmd/tui.go runs it with TAESD: the engine behind a Previewer.
	w := newTestWorker(t, withPreviewer(eng, taesdPipeline{}))
	req := engine.DefaultRequest()
	req.Model, req.Prompt, req.Steps, req.Width, req.Height, req.Batch, req.Seed = engine.DefaultModel, "7", 2, demo.Width, demo.Height, 2, 42
	done := w.do(workItem{ID: 1, Req: req, Ctx: context.Background()})
	if done.Err != nil {
		t.Fatal(done.Err)
	}
	m, err := eng.Load(context.Background(), engine.DefaultModel)
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := m.Hash()
	want := []string{"darkroom-20260102-030405-001-42-1.png", "darkroom-20260102-030405-001-42-2.png"}
	if len(done.Paths) != 2 {
		t.Fatalf("paths %v", done.Paths)
	}
	for i, p := range done.Paths {
		if filepath.Base(p) != want[i] {
			t.Errorf("file %d = %s, want %s", i, filepath.Base(p), want[i])
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Width != demo.Width*demo.ViewScale || cfg.Height != demo.Height*demo.ViewScale {
			t.Errorf("file %d is %dx%d, want gen's %dx%d", i, cfg.Width, cfg.Height, demo.Width*demo.ViewScale, demo.Height*demo.ViewScale)
		}
		f, _ = os.Open(p)
		text, err := engine.ReadPNGText(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, got, err := engine.ParseA1111Parameters(text[engine.ChunkParameters]); err != nil || got != hash || hash == "" {
			t.Errorf("file %d model hash %q (%v), want %q", i, got, err, hash)
		}
		if got, err := engine.RequestFromPNG(p); err != nil || got.Seed != 42 || got.Batch != 2 || got.Width != demo.Width {
			t.Errorf("file %d request %+v, %v", i, got, err)
		}
	}
}
