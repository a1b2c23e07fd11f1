package engine

import (
	"context"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
)

// BenchmarkTinyEndToEnd times the whole text-to-image path (tokenize, encode
// both prompts, 8 Euler steps with CFG, VAE decode) on the tiny reference
// model at 64×64 on the CPU. The model is loaded once, outside the timing.
func BenchmarkTinyEndToEnd(b *testing.B) {
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		b.Fatal(err)
	}
	req := DefaultRequest()
	req.Prompt, req.Negative = "a photograph of an astronaut riding a horse", "blurry, low quality"
	req.Width, req.Height, req.Steps, req.Scheduler, req.Seed = 64, 64, 8, "karras", 1234
	for b.Loop() {
		if _, err := m.Generate(context.Background(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/image")
}

// BenchmarkTinyLoad times opening and uploading the tiny model.
func BenchmarkTinyLoad(b *testing.B) {
	for b.Loop() {
		if _, err := Load(context.Background(), layouts[0].path, cpu.New()); err != nil {
			b.Fatal(err)
		}
	}
}

// graphDevice is a device that records graphs (as CUDA's does).
type graphDevice struct{ backend.Device }

func (graphDevice) RecordGraph([]*backend.Tensor, func([]*backend.Tensor) ([]*backend.Tensor, error)) (backend.Graph, error) {
	return nil, nil
}

// The UNet benchmark's note speaks of graphs only on a device that
// records them: the CPU's says nothing of graphs.
func TestUNetNotes(t *testing.T) {
	status := func() string { return "no graph recorded" }
	for _, c := range []struct {
		dev  backend.Device
		want string
	}{
		{cpu.New(), "host enqueue 1.23ms"},
		{graphDevice{}, "host enqueue 1.23ms; no graph recorded"},
	} {
		if got := unetNotes(c.dev, 1234567*time.Nanosecond, status); got != c.want {
			t.Errorf("%T: %q, want %q", c.dev, got, c.want)
		}
	}
}
