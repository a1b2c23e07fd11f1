// Package engine is darkroom's public Go API: the one surface the CLI, the
// TUI and Yaegi scripts use. Open an Engine, Load a model (by path or by name
// from the model directories), and Generate images from a Request; or use the
// parts (EncodePrompt, Sample, Decode) for experiments.
//
//	eng, err := engine.Open(engine.Options{})
//	m, err := eng.Load(ctx, "sd15.safetensors")
//	req := engine.DefaultRequest()
//	req.Prompt = "a lighthouse at dusk"
//	res, err := m.Generate(ctx, req, nil)
//	err = engine.SavePNG("out.png", res.Images[0], res.Request, "", m.Name)
package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
)

// Options configure an Engine.
type Options struct {
	// ModelDirs are searched, in order, for model names (files ending in
	// .safetensors and diffusers folders). ComfyUI / A1111 / SwarmUI roots
	// are accepted: their checkpoint subfolders are searched too.
	ModelDirs []string
	// Device is "auto" (default), "cpu" or "cuda".
	Device string
}

// DefaultModelDir is where models are looked for when no directory is given:
// $XDG_DATA_HOME/darkroom/models or ~/.local/share/darkroom/models.
func DefaultModelDir() string {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "darkroom", "models")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".", "models")
	}
	return filepath.Join(home, ".local", "share", "darkroom", "models")
}

// DeviceInfo describes a compute device.
type DeviceInfo struct {
	Name string
	Kind string // "cpu" or "cuda"
	// MemoryTotal and MemoryFree are bytes (host memory for the CPU).
	MemoryTotal, MemoryFree uint64
}

// Engine owns the compute device and a cache of loaded models. It is safe
// for concurrent use; generations on one Engine run one at a time.
type Engine struct {
	opts Options
	dev  backend.Device

	mu     sync.Mutex // guards models
	models map[string]*Model
	// jobs serialises generations on the device.
	jobs sync.Mutex
	// Notice is a one-line message for the user about device selection
	// (e.g. "no NVIDIA driver found; using CPU"), or empty.
	Notice string
}

// Open creates an engine on the requested device.
func Open(opts Options) (*Engine, error) {
	e := &Engine{opts: opts, models: map[string]*Model{}}
	switch opts.Device {
	case "", "auto", "cpu":
		e.dev = cpu.New()
	case "cuda":
		return nil, fmt.Errorf("--device cuda: the CUDA backend is not available in this build yet")
	default:
		return nil, fmt.Errorf("--device %q: want auto, cpu or cuda", opts.Device)
	}
	return e, nil
}

// Device returns the engine's compute device.
func (e *Engine) Device() backend.Device { return e.dev }

// Devices lists the compute devices the engine can use.
func (e *Engine) Devices() []DeviceInfo {
	total, free := hostMemory()
	return []DeviceInfo{{Name: fmt.Sprintf("CPU (%d threads, %s/%s)", runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH), Kind: "cpu", MemoryTotal: total, MemoryFree: free}}
}

// Close releases every loaded model.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.models = map[string]*Model{}
	return nil
}

// ModelDirs returns the directories searched for model names.
func (e *Engine) ModelDirs() []string {
	if len(e.opts.ModelDirs) == 0 {
		return []string{DefaultModelDir()}
	}
	return e.opts.ModelDirs
}

// Resolve turns a model name or path into a path: an existing path is used
// as is; otherwise the name is looked up in the model directories (with or
// without the .safetensors extension).
func (e *Engine) Resolve(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("no model given (use -m/--model PATH or put models in %s)", strings.Join(e.ModelDirs(), ", "))
	}
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	for _, m := range e.ListModels() {
		if m.Name == name || m.Name == strings.TrimSuffix(name, ".safetensors") || filepath.Base(m.Path) == name {
			return m.Path, nil
		}
	}
	return "", fmt.Errorf("%s: no such file, and no model of that name in %s", name, strings.Join(e.ModelDirs(), ", "))
}

// Load returns the model at path or of that name, loading it on first use
// and keeping it resident afterwards.
func (e *Engine) Load(ctx context.Context, nameOrPath string) (*Model, error) {
	path, err := e.Resolve(nameOrPath)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.models[abs]; ok {
		return m, nil
	}
	m, err := Load(ctx, path, e.dev)
	if err != nil {
		return nil, err
	}
	e.models[abs] = m
	return m, nil
}

// Generate loads req.Model and runs the request. Jobs on one engine run one
// at a time, in call order.
func (e *Engine) Generate(ctx context.Context, req Request, onEvent func(Event)) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	m, err := e.Load(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	e.jobs.Lock()
	defer e.jobs.Unlock()
	return m.Generate(ctx, req, onEvent)
}

// ModelEntry is a model found in the model directories.
type ModelEntry struct {
	Name string // file name without .safetensors, or folder name
	Path string
	Size int64
}

// modelSubdirs are the checkpoint folders of ComfyUI, A1111 and SwarmUI
// installations, searched below each model directory.
var modelSubdirs = []string{"", "checkpoints", "models/checkpoints", "models/Stable-diffusion", "Models/Stable-Diffusion", "diffusers", "models/diffusers"}

// ListModels lists the models in the model directories, sorted by name.
func (e *Engine) ListModels() []ModelEntry {
	var out []ModelEntry
	seen := map[string]bool{}
	for _, root := range e.ModelDirs() {
		for _, sub := range modelSubdirs {
			dir := filepath.Join(root, sub)
			entries, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, de := range entries {
				p := filepath.Join(dir, de.Name())
				if seen[p] {
					continue
				}
				switch {
				case !de.IsDir() && strings.HasSuffix(de.Name(), ".safetensors"):
					info, err := de.Info()
					if err != nil {
						continue
					}
					out = append(out, ModelEntry{Name: strings.TrimSuffix(de.Name(), ".safetensors"), Path: p, Size: info.Size()})
					seen[p] = true
				case de.IsDir() && fileExists(filepath.Join(p, "model_index.json")):
					out = append(out, ModelEntry{Name: de.Name(), Path: p})
					seen[p] = true
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b ModelEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}
