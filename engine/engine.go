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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/demo"
	"github.com/darkroom-ai/darkroom/engine/families/sd1"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Options configure an Engine.
type Options struct {
	// ModelDirs are searched, in order, for model names (files ending in
	// .safetensors and diffusers folders). ComfyUI / A1111 / SwarmUI roots
	// are accepted: their checkpoint subfolders are searched too.
	ModelDirs []string
	// Device is "auto" (default: the first NVIDIA GPU when a driver is
	// found, else the CPU), "cpu" or "cuda".
	Device string
	// NamesOnly makes every file a request names (model, VAE, text
	// encoders, LoRAs, refiner, upscaler) a name looked up in the model
	// directories, never a path: an absolute name, one that climbs out
	// with "..", and the Hugging Face cache are refused. A server sets it
	// so that its clients reach no file outside the model directories.
	NamesOnly bool
	// GPU is the CUDA device number the engine opens (0, the default, is
	// the first GPU): a server runs one engine per GPU.
	GPU int
	// Precision is the GPU's storage and tensor-core type: "auto" or ""
	// (fp16, the default for SD1.x), "fp16", "bf16" or "fp32" (the parity
	// mode). The CPU backend always computes in float32.
	Precision string
	// Profile makes the GPU backend time every kernel and GEMM with CUDA
	// events (cuda.Device.ProfileReport); it slows the run a little and
	// switches CUDA graphs off.
	Profile bool
	// NoGraphs runs every UNet step op by op instead of replaying a
	// recorded CUDA graph (for comparisons and debugging).
	NoGraphs bool
	// Conv picks the GPU convolution: "auto" or "" (cuDNN when it is
	// installed, else im2col), "cudnn" or "im2col".
	Conv string
	// NoFusedGemm computes biases and residual adds with separate kernels
	// instead of cuBLASLt GEMM epilogues (for comparisons).
	NoFusedGemm bool
	// LoRADirs are searched first for LoRA names (--lora NAME,
	// <lora:NAME:W>); then each model directory's loras/ and Lora/ folders
	// (ComfyUI's and A1111's).
	LoRADirs []string
	// EmbeddingDirs are searched first for textual-inversion embeddings
	// ("embedding:NAME" in prompts); then each model directory's
	// embeddings/ and models/embeddings/ folders (A1111's and ComfyUI's).
	EmbeddingDirs []string
}

// cudaOptions maps the engine options to the CUDA backend's.
func (o Options) cudaOptions() (cuda.Options, error) {
	c := cuda.Options{Ordinal: o.GPU, Profile: o.Profile, NoGraphs: o.NoGraphs, NoFusedGemm: o.NoFusedGemm}
	switch o.Precision {
	case "", "auto", "fp16":
		c.Precision = tensor.F16
	case "bf16":
		c.Precision = tensor.BF16
	case "fp32":
		c.Precision = tensor.F32
	default:
		return cuda.Options{}, fmt.Errorf("--precision %q: want auto, fp16, bf16 or fp32", o.Precision)
	}
	switch o.Conv {
	case "", "auto":
		c.Conv = cuda.ConvAuto
	case "cudnn":
		c.Conv = cuda.ConvCudnn
	case "im2col":
		c.Conv = cuda.ConvIm2col
	default:
		return cuda.Options{}, fmt.Errorf("--conv %q: want auto, cudnn or im2col", o.Conv)
	}
	return c, nil
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

	mu     sync.Mutex // guards models and upscalers
	models map[string]*Model
	// upscalers are the upscaler models loaded (LoadUpscaler), by path.
	upscalers map[string]*Upscaler
	// jobs serialises generations on the device.
	jobs sync.Mutex
	// Notice is a one-line message for the user about device selection
	// (e.g. "no NVIDIA driver found; using CPU"), or empty.
	Notice string
}

// Open creates an engine on the requested device.
func Open(opts Options) (*Engine, error) {
	e := &Engine{opts: opts, models: map[string]*Model{}}
	copts, err := opts.cudaOptions()
	if err != nil {
		return nil, err
	}
	switch opts.Device {
	case "cpu":
		e.dev = cpu.New()
	case "", "auto":
		d, err := cuda.Open(copts)
		switch {
		case err == nil:
			e.dev = d
		case errors.Is(err, cuda.ErrNoDevice):
			e.dev = cpu.New()
			e.Notice = "no NVIDIA driver found; using CPU"
		default:
			e.dev = cpu.New()
			e.Notice = fmt.Sprintf("CUDA unavailable (%v); using CPU", err)
		}
	case "cuda":
		d, err := cuda.Open(copts)
		if err != nil {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		e.dev = d
	default:
		return nil, fmt.Errorf("--device %q: want auto, cpu or cuda", opts.Device)
	}
	if _, onCPU := e.dev.(*cpu.Device); onCPU && (opts.Precision == "fp16" || opts.Precision == "bf16") {
		msg := fmt.Sprintf("--precision %s applies to the GPU; the CPU computes in float32", opts.Precision)
		if e.Notice != "" {
			msg = e.Notice + "; " + msg
		}
		e.Notice = msg
	}
	return e, nil
}

// Device returns the engine's compute device.
func (e *Engine) Device() backend.Device { return e.dev }

// Devices lists the compute devices of this machine: the NVIDIA GPUs the
// driver reports (with current VRAM use), then the CPU.
func (e *Engine) Devices() []DeviceInfo {
	var out []DeviceInfo
	if info, err := cuda.Probe(); err == nil {
		for _, g := range info.GPUs {
			out = append(out, DeviceInfo{Name: g.Name, Kind: "cuda", MemoryTotal: g.MemoryTotal, MemoryFree: g.MemoryFree})
		}
	}
	total, free := hostMemory()
	return append(out, DeviceInfo{Name: fmt.Sprintf("CPU (%d threads, %s/%s)", runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH), Kind: "cpu", MemoryTotal: total, MemoryFree: free})
}

// Close releases every loaded model and the device.
func (e *Engine) Close() error {
	// A job in flight finishes first; later ones find no models.
	e.jobs.Lock()
	defer e.jobs.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.models {
		m.Close()
	}
	e.models = map[string]*Model{}
	e.upscalers = nil
	if c, ok := e.dev.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// Unload closes every cached model and upscaler, freeing their memory,
// after the job in flight (if any) has finished; it returns how many
// models it closed. The next request loads its model again.
func (e *Engine) Unload() int {
	e.jobs.Lock()
	defer e.jobs.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.models)
	for _, m := range e.models {
		m.Close()
	}
	e.models = map[string]*Model{}
	e.upscalers = nil
	return n
}

// Loaded lists the names of the models in the cache.
func (e *Engine) Loaded() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.models {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Families lists the model families darkroom recognises, by name ("SD1.x",
// "SDXL", "Flux.1"); some are recognised only (Detection.Runnable).
func Families() []string {
	var out []string
	for _, f := range family.Families() {
		out = append(out, f.Name())
	}
	return out
}

// ModelDirs returns the directories searched for model names.
func (e *Engine) ModelDirs() []string {
	if len(e.opts.ModelDirs) == 0 {
		return []string{DefaultModelDir()}
	}
	return e.opts.ModelDirs
}

// DefaultModel is the name of the model built into the binary
// (demo.Name), used when a request names no model.
const DefaultModel = demo.Name

// Resolve turns a model name or path into a path: an existing path is used
// as is; otherwise the name is looked up in the model directories (with or
// without the .safetensors extension), then in the Hugging Face cache
// (ResolveHub: sd15, org/name, org/name/file.safetensors). The built-in
// model resolves to its name.
func (e *Engine) Resolve(name string) (string, error) {
	if e.opts.NamesOnly {
		return e.resolveName(name)
	}
	if name == "" || name == DefaultModel {
		if _, err := os.Stat(name); name == "" || err != nil {
			return DefaultModel, nil
		}
	}
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	for _, m := range e.ListModels() {
		if m.Name == name || m.Name == strings.TrimSuffix(name, ".safetensors") || filepath.Base(m.Path) == name {
			return m.Path, nil
		}
	}
	if p, ok := e.ResolveHub(name); ok {
		return p, nil
	}
	return "", fmt.Errorf("%s: no such file, and no model of that name in %s", name, strings.Join(e.ModelDirs(), ", "))
}

// resolveName is Resolve under Options.NamesOnly: the built-in model or an
// entry of the model directories, by name.
func (e *Engine) resolveName(name string) (string, error) {
	if name == "" || name == DefaultModel {
		return DefaultModel, nil
	}
	if err := checkName(name, "model"); err != nil {
		return "", err
	}
	for _, m := range e.ListModels() {
		if m.Name == name || m.Name == strings.TrimSuffix(name, ".safetensors") || filepath.Base(m.Path) == name {
			return m.Path, nil
		}
	}
	return "", &FieldError{Field: "model", Value: name, Msg: "no model of that name in the model directories"}
}

// checkName refuses, for Options.NamesOnly, a name that is not a name
// inside a folder: absolute, or climbing out with "..".
func checkName(name, field string) error {
	clean := filepath.Clean(name)
	if name == "" || filepath.IsAbs(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || filepath.VolumeName(name) != "" ||
		clean == ".." || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, `..\`) || strings.Contains(name, "\x00") {
		return &FieldError{Field: field, Value: name, Msg: "a name inside the model directories, not a path"}
	}
	return nil
}

// Load returns the model at path or of that name, loading it on first use
// and keeping it resident afterwards.
func (e *Engine) Load(ctx context.Context, nameOrPath string) (*Model, error) {
	return e.LoadFiles(ctx, ModelFiles{Model: nameOrPath})
}

// LoadRequest loads the model a request names: its checkpoint and, when
// set, its separate VAE and text-encoder files and its LoRAs.
func (e *Engine) LoadRequest(ctx context.Context, req Request) (*Model, error) {
	loras, err := requestLoRAs(req.LoRAs)
	if err != nil {
		return nil, err
	}
	return e.LoadFiles(ctx, ModelFiles{Model: req.Model, VAE: req.VAE, TextEncoders: req.TextEncoders, LoRAs: loras})
}

// LoadFiles is Load for a model made of several files (names or paths); the
// cache keeps one model per distinct set of files.
func (e *Engine) LoadFiles(ctx context.Context, files ModelFiles) (*Model, error) {
	path, err := e.Resolve(files.Model)
	if err != nil {
		return nil, err
	}
	builtin := path == DefaultModel
	if builtin && files.VAE != "" {
		return nil, &FieldError{Field: "vae", Value: files.VAE, Msg: "the built-in model takes no separate VAE"}
	}
	if builtin && len(files.TextEncoders) > 0 {
		return nil, &FieldError{Field: "text_encoders", Value: files.TextEncoders, Msg: "the built-in model takes no separate text encoder"}
	}
	if builtin && len(files.LoRAs) > 0 {
		return nil, &FieldError{Field: "loras", Value: files.LoRAs[0].String(), Msg: "the built-in model takes no LoRA"}
	}
	resolved := ModelFiles{Model: path, EmbeddingDirs: e.embeddingDirs()}
	if files.VAE != "" {
		if resolved.VAE, err = e.resolveFile(files.VAE, "vae"); err != nil {
			return nil, err
		}
	}
	for _, te := range files.TextEncoders {
		p, err := e.resolveFile(te, "text_encoders")
		if err != nil {
			return nil, err
		}
		resolved.TextEncoders = append(resolved.TextEncoders, p)
	}
	for _, l := range files.LoRAs {
		p, err := e.resolveFile(l.Path, "loras")
		if err != nil {
			return nil, err
		}
		l.Path = p
		resolved.LoRAs = append(resolved.LoRAs, l)
	}
	key := "builtin:" + path
	if !builtin {
		key = absPath(path)
		if resolved.VAE != "" {
			key += "\x00vae=" + absPath(resolved.VAE)
		}
		for _, te := range resolved.TextEncoders {
			key += "\x00te=" + absPath(te)
		}
	}
	// The LoRA set (files and strengths) is part of the key: other LoRAs
	// are other weights.
	base := key
	for _, l := range resolved.LoRAs {
		key += "\x00lora=" + absPath(l.Path) + ":" + formatFloat(l.Strength) + ":" + formatFloat(l.ClipStrength)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.models[key]; ok {
		return m, nil
	}
	if len(resolved.LoRAs) > 0 {
		// Another LoRA set on the same files replaces the last one kept
		// (it is not closed here: a job may still hold it; its files and
		// device memory go when it is collected).
		for k := range e.models {
			if strings.HasPrefix(k, base+"\x00lora=") {
				delete(e.models, k)
			}
		}
	}
	var m *Model
	if builtin {
		if m, err = LoadBytes(ctx, demo.Name, demo.Bytes(), e.dev); err == nil {
			// The built-in model's own recommendations (32×32 digits).
			m.c.Defaults = Defaults{Width: demo.Width, Height: demo.Height, Steps: demo.Steps, CFG: demo.CFG, Sampler: demo.Sampler, Scheduler: demo.Scheduler}
		}
	} else {
		m, err = LoadFiles(ctx, resolved, e.dev)
	}
	if err != nil {
		return nil, err
	}
	e.models[key] = m
	return m, nil
}

// embeddingDirs are the folders embeddings are looked up in: the
// engine's own, then each model directory's embeddings folders that exist.
func (e *Engine) embeddingDirs() []string {
	dirs := append([]string{}, e.opts.EmbeddingDirs...)
	for _, root := range e.ModelDirs() {
		for _, sub := range []string{"embeddings", "models/embeddings"} {
			if st, err := os.Stat(filepath.Join(root, sub)); err == nil && st.IsDir() {
				dirs = append(dirs, filepath.Join(root, sub))
			}
		}
	}
	return dirs
}

// resolveFile finds a separate component file: an existing path, or a
// file of that name in the model directories' ComfyUI-style folder
// (models/vae, models/text_encoders, models/clip).
func (e *Engine) resolveFile(name, kind string) (string, error) {
	if e.opts.NamesOnly {
		if err := checkName(name, kind); err != nil {
			return "", err
		}
	} else if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	subs := map[string][]string{
		"vae":           {"vae", "models/vae", "VAE", "models/VAE"},
		"text_encoders": {"text_encoders", "models/text_encoders", "clip", "models/clip"},
		"loras":         {"loras", "models/loras", "Lora", "models/Lora"},
	}[kind]
	if kind == "loras" {
		for _, dir := range e.opts.LoRADirs {
			for _, n := range []string{name, name + ".safetensors"} {
				if p := filepath.Join(dir, n); fileExists(p) {
					return p, nil
				}
			}
		}
	}
	for _, root := range e.ModelDirs() {
		for _, sub := range subs {
			for _, n := range []string{name, name + ".safetensors"} {
				if p := filepath.Join(root, sub, n); fileExists(p) {
					return p, nil
				}
			}
		}
	}
	dirs := e.ModelDirs()
	if kind == "loras" {
		dirs = append(append([]string{}, e.opts.LoRADirs...), dirs...)
	}
	return "", &FieldError{Field: kind, Value: name, Msg: fmt.Sprintf("no such file, and none of that name in the %s folders of %s", kind, strings.Join(dirs, ", "))}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Generate loads req.Model and runs the request. Jobs on one engine run one
// at a time, in call order.
func (e *Engine) Generate(ctx context.Context, req Request, onEvent func(Event)) (*Result, error) {
	if err := initSize(&req); err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	// <lora:NAME:W> tags become LoRAs of the request, out of the prompt.
	prompt, tags, err := ExtractLoRATags(req.Prompt)
	if err != nil {
		return nil, err
	}
	if len(tags) > 0 {
		req.Prompt = prompt
		req.LoRAs = slices.Clone(req.LoRAs)
		for _, t := range tags {
			req.LoRAs = append(req.LoRAs, t.String())
		}
	}
	m, err := e.LoadRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	var ref *Model
	if req.Refiner != "" {
		if ref, err = e.loadRefiner(ctx, req.Refiner); err != nil {
			return nil, err
		}
	}
	var up *Upscaler
	if req.Hires > 1 && IsUpscalerModel(req.HiresUpscaler) {
		if up, err = e.LoadUpscaler(ctx, req.HiresUpscaler); err != nil {
			return nil, &FieldError{Field: "hires_upscaler", Value: req.HiresUpscaler, Msg: err.Error()}
		}
	}
	e.jobs.Lock()
	defer e.jobs.Unlock()
	return m.generate(ctx, req, onEvent, ref, up)
}

// loadRefiner loads a request's refiner (kept in the cache beside the
// model, so both stay resident), its errors naming the field.
func (e *Engine) loadRefiner(ctx context.Context, name string) (*Model, error) {
	ref, err := e.Load(ctx, name)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("--refiner %s: %w", name, err)
	}
	return ref, nil
}

// ModelEntry is a model found in the model directories.
type ModelEntry struct {
	Name string // file name without .safetensors, or folder name
	Path string
	Size int64
	// Broken says why the entry cannot be loaded ("" when its header
	// reads): a safetensors file whose header does not parse, a diffusers
	// folder whose model_index.json is not JSON. Frontends show it and
	// never select a broken entry by default.
	Broken string
}

// modelSubdirs are the checkpoint folders of ComfyUI, A1111 and SwarmUI
// installations, searched below each model directory.
var modelSubdirs = []string{"", "checkpoints", "models/checkpoints", "models/Stable-diffusion", "Models/Stable-Diffusion", "diffusers", "models/diffusers"}

// ListModels lists the built-in model, then the models in the model
// directories and the Hugging Face cache, sorted by name. Symbolic links are followed, to files and
// to folders; a folder or file reached twice (a link loop such as
// checkpoints -> .., or two links to one file) is listed once, and a
// dangling or looping link is skipped. Each safetensors header is read
// (a cheap check: the file is mapped, only its header parsed) and a file
// that fails it is listed with Broken set.
func (e *Engine) ListModels() []ModelEntry {
	out := []ModelEntry{{Name: DefaultModel, Path: DefaultModel, Size: int64(demo.Size())}}
	seen := map[string]bool{} // real paths of listed models and scanned folders
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			if a, err := filepath.Abs(r); err == nil {
				return a
			}
			return r
		}
		return p
	}
	for _, root := range e.ModelDirs() {
		for _, sub := range modelSubdirs {
			dir := filepath.Join(root, sub)
			rd := "dir:" + real(dir)
			if seen[rd] {
				continue
			}
			seen[rd] = true
			entries, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, de := range entries {
				p := filepath.Join(dir, de.Name())
				info, err := os.Stat(p) // follows links; fails on loops
				if err != nil {
					continue
				}
				rp := real(p)
				if seen[rp] {
					continue
				}
				switch {
				case !info.IsDir() && strings.HasSuffix(de.Name(), ".safetensors"):
					m := ModelEntry{Name: strings.TrimSuffix(de.Name(), ".safetensors"), Path: p, Size: info.Size()}
					if f, err := safetensors.Open(p); err != nil {
						m.Broken = err.Error()
					} else {
						f.Close()
					}
					out = append(out, m)
					seen[rp] = true
				case info.IsDir() && fileExists(filepath.Join(p, "model_index.json")):
					m := ModelEntry{Name: de.Name(), Path: p}
					if b, err := os.ReadFile(filepath.Join(p, "model_index.json")); err != nil {
						m.Broken = err.Error()
					} else if !json.Valid(b) {
						m.Broken = "model_index.json: not valid JSON"
					}
					out = append(out, m)
					seen[rp] = true
				}
			}
		}
	}
	// Models in the Hugging Face cache (darkroom pull, diffusers,
	// huggingface-cli), by the names -m takes; not under NamesOnly.
	for _, h := range ListHub() {
		if e.opts.NamesOnly {
			break
		}
		if rp := real(h.Path); !seen[rp] {
			out = append(out, ModelEntry{Name: h.Name, Path: h.Path, Size: h.Size})
			seen[rp] = true
		}
	}
	slices.SortFunc(out[1:], func(a, b ModelEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DefaultModelFormat is the latent format of the built-in model (an SD1.x
// model), for frontends and tests that draw previews without loading it.
func DefaultModelFormat() LatentFormat {
	f := sd1.LatentFormat()
	f.Factor = demo.LatentFactor
	return f
}
