// Package tui is darkroom's terminal UI: a prompt editor, a job queue with
// live progress, device gauges, inline image previews (kitty, sixel,
// iTerm2 or half-blocks, so it works over SSH and in tmux) and a history
// of finished images. `darkroom` with no arguments opens it (Run).
//
// Jobs run on one worker goroutine that owns the engine; its events reach
// the UI through one goroutine calling Program.Send, so the UI never
// blocks on generation.
package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/termimg"
)

// Options configure Run.
type Options struct {
	// ModelDirs are searched for models (engine.DefaultModelDir when
	// empty); ComfyUI / A1111 / SwarmUI roots work too.
	ModelDirs []string
	// Model is preselected (a name in ModelDirs or a path).
	Model string
	// Graphics is auto (default), kitty, sixel, iterm, halfblock or none.
	Graphics string
	// OutputDir receives the PNGs (default: the current directory).
	OutputDir string
	// Engine runs the jobs; nil opens an *engine.Engine on ModelDirs. When
	// it is an *engine.Engine, it is also eng on the `:` command line.
	Engine Pipeline
	// GPUStats feeds the devices pane's GPU gauges (nil: host CPU and
	// memory only).
	GPUStats GPUStatsProvider
	// Queue is the queue of the server the Engine stands for (`darkroom
	// --server`): the queue pane lists its other jobs below the TUI's
	// own (nil: none).
	Queue RemoteQueue
	// Connect opens a darkroom server's client for dr.Server on the `:`
	// command line (cmd gives server.NewClient's; nil: dr.Server fails).
	Connect func(url, token string) (dr.Remote, error)
	// Previewer draws the live previews (engine.TAESD when its weights are
	// present); nil leaves them to the Engine's own Previewer, if it has
	// one, and otherwise to engine.LatentPreview, which is also the
	// fallback whenever Preview returns nil.
	Previewer Previewer
	// LogFile receives the log while the TUI runs (default
	// $XDG_STATE_HOME/darkroom/tui.log or ~/.local/state/darkroom/tui.log).
	LogFile string
	// Input, Output and Env replace the terminal and os.Environ (tests).
	Input  io.Reader
	Output io.Writer
	Env    []string
}

// Run opens the TUI and returns when the user quits or ctx ends.
func Run(ctx context.Context, opts Options) error {
	mode, err := termimg.ParseMode(opts.Graphics)
	if err != nil {
		return err
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	getenv := func(k string) string {
		for _, kv := range env {
			if name, v, ok := strings.Cut(kv, "="); ok && name == k {
				return v
			}
		}
		return ""
	}
	auto := mode == termimg.ModeAuto
	mode = termimg.Resolve(mode, getenv)

	logFile, err := openLog(opts.LogFile, getenv)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prevDefault := slog.Default()
	slog.SetDefault(log) // engine logs go to the file, never the screen
	defer slog.SetDefault(prevDefault)

	p := opts.Engine
	notice := ""
	var eng *engine.Engine
	if p == nil {
		e, err := engine.Open(engine.Options{ModelDirs: opts.ModelDirs})
		if err != nil {
			return fmt.Errorf("open engine: %w", err)
		}
		defer e.Close()
		p, notice, eng = e, e.Notice, e
	} else if e, ok := p.(*engine.Engine); ok {
		notice, eng = e.Notice, e
	}
	p = withPreviewer(p, opts.Previewer)
	outDir := opts.OutputDir
	if outDir == "" {
		outDir = "."
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newWorker(p, outDir, log)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); w.run(ctx) }()

	cfg := appConfig{
		Model: opts.Model, Mode: mode, Auto: auto, Tmux: termimg.InTmux(getenv),
		GPU: opts.GPUStats, Remote: opts.Queue, Notice: notice, Engine: eng, Connect: opts.Connect,
	}
	if opts.Output == nil {
		cfg.CellW, cfg.CellH = ttyCellSize(os.Stdout)
	}
	app := newApp(ctx, p, w.submit, cfg)
	popts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithEnvironment(env)}
	if opts.Input != nil {
		popts = append(popts, tea.WithInput(opts.Input))
	}
	if opts.Output != nil {
		popts = append(popts, tea.WithOutput(opts.Output))
	}
	prog := tea.NewProgram(app, popts...)
	// The one goroutine that forwards engine events to the program.
	go func() {
		for msg := range w.out {
			prog.Send(msg)
		}
	}()
	log.Info("tui start", "graphics", mode.String(), "auto", auto, "out", outDir, "models", p.ModelDirs())
	_, err = prog.Run()
	cancel()
	<-workerDone
	log.Info("tui exit", "err", err)
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// openLog opens (appending) the log file.
func openLog(path string, getenv func(string) string) (*os.File, error) {
	if path == "" {
		dir := getenv("XDG_STATE_HOME")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, fmt.Errorf("log file: %w", err)
			}
			dir = filepath.Join(home, ".local", "state")
		}
		path = filepath.Join(dir, "darkroom", "tui.log")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}
