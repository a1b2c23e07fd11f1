package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/darkroom-ai/darkroom/engine"
)

// Local is the in-process backend: one worker per Runner (one per
// device), each taking the next job from the server's fair queue,
// preferring jobs for a model it has loaded.
type Local struct {
	Runners []*Runner

	mu   sync.Mutex
	busy map[string]string             // worker name → job id
	stop map[string]context.CancelFunc // job id → its cancel
}

// NewLocal returns a backend running jobs on the runners.
func NewLocal(runners ...*Runner) *Local {
	return &Local{Runners: runners, busy: map[string]string{}, stop: map[string]context.CancelFunc{}}
}

// Serve runs the workers until ctx ends.
func (l *Local) Serve(ctx context.Context, s *Server) error {
	if len(l.Runners) == 0 {
		return fmt.Errorf("no workers")
	}
	var wg sync.WaitGroup
	for _, r := range l.Runners {
		wg.Go(func() { l.work(ctx, s, r) })
	}
	wg.Wait()
	return ctx.Err()
}

// work is one worker's loop.
func (l *Local) work(ctx context.Context, s *Server, r *Runner) {
	for {
		t, err := s.Next(ctx, r.Engine.Loaded())
		if err != nil {
			return
		}
		jctx, cancel := context.WithCancel(ctx)
		l.mu.Lock()
		l.busy[r.Name] = t.ID
		l.stop[t.ID] = cancel
		l.mu.Unlock()
		if s.Started(t.ID, r.Name, cancel) {
			o := r.Run(jctx, t, s.Progressed)
			s.Finished(o)
		}
		cancel()
		l.mu.Lock()
		delete(l.busy, r.Name)
		delete(l.stop, t.ID)
		l.mu.Unlock()
	}
}

// Cancel stops job id if a worker runs it.
func (l *Local) Cancel(id string) {
	l.mu.Lock()
	cancel := l.stop[id]
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Workers describes the workers.
func (l *Local) Workers() []WorkerInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []WorkerInfo
	for _, r := range l.Runners {
		out = append(out, WorkerInfo{Name: r.Name, Device: r.Engine.Device().Name(), Busy: l.busy[r.Name], Loaded: r.Engine.Loaded()})
	}
	return out
}

// Unload frees every worker's models.
func (l *Local) Unload() int {
	n := 0
	for _, r := range l.Runners {
		n += r.Engine.Unload()
	}
	return n
}

// OpenRunners opens one engine per device and returns their runners.
// devices are "cpu", "cuda" (every GPU), "cuda:N", or "auto" (every GPU,
// else the CPU). Each engine is opened with NamesOnly.
func OpenRunners(devices []string, base engine.Options) ([]*Runner, error) {
	var specs []engine.Options
	gpus := func() int {
		info, err := engine.ProbeGPUs()
		if err != nil {
			return 0
		}
		return len(info.GPUs)
	}
	for _, d := range devices {
		o := base
		o.NamesOnly = true
		switch {
		case d == "cpu":
			o.Device = "cpu"
			specs = append(specs, o)
		case d == "auto" || d == "" || d == "cuda":
			n := gpus()
			if n == 0 && d == "cuda" {
				return nil, fmt.Errorf("--device cuda: no NVIDIA GPU found")
			}
			for i := range n {
				o.Device, o.GPU = "cuda", i
				specs = append(specs, o)
			}
			if n == 0 {
				o.Device = "cpu"
				specs = append(specs, o)
			}
		default:
			var i int
			if _, err := fmt.Sscanf(d, "cuda:%d", &i); err != nil || i < 0 {
				return nil, fmt.Errorf("--device %q: want auto, cpu, cuda or cuda:N", d)
			}
			o.Device, o.GPU = "cuda", i
			specs = append(specs, o)
		}
	}
	var out []*Runner
	for _, o := range specs {
		e, err := engine.Open(o)
		if err != nil {
			for _, r := range out {
				r.Engine.Close()
			}
			return nil, err
		}
		name := "cpu"
		if o.Device == "cuda" {
			name = fmt.Sprintf("cuda:%d", o.GPU)
		}
		out = append(out, &Runner{Engine: e, Name: name})
	}
	return out, nil
}
