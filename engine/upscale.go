package engine

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"path/filepath"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/models/esrgan"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Tiling defaults of Upscaler.Upscale: tiles of 512 input pixels sharing
// 32 with their neighbours.
const (
	DefaultUpscaleTile    = 512
	DefaultUpscaleOverlap = 32
)

// MaxUpscaledSide bounds the side of an upscaled image (pixels).
const MaxUpscaledSide = 32768

// UpscaleOptions configure Upscaler.Upscale.
type UpscaleOptions struct {
	// Tile is the largest tile side in input pixels: 0 is
	// DefaultUpscaleTile, a negative value runs the image in one piece.
	Tile int
	// Overlap is how many input pixels neighbouring tiles share (their
	// seams are feathered over it): 0 is DefaultUpscaleOverlap, a
	// negative value none.
	Overlap int
	// OnTile, when set, is called after each tile with the number done
	// and the total.
	OnTile func(done, total int)
}

// Upscaler is an upscaler model (ESRGAN, Real-ESRGAN, SRVGGNetCompact:
// the files users keep in models/upscale_models) loaded on a device. It is
// safe for concurrent use; upscales run one at a time.
type Upscaler struct {
	// Name is the model's name as A1111 writes it in "Hires upscaler":
	// the file name without its extension ("4x-UltraSharp").
	Name string
	// Path is the model file.
	Path string
	mu   sync.Mutex
	net  *esrgan.Net
	dev  backend.Device
}

// UpscalerExts are the file extensions of upscaler models.
var UpscalerExts = []string{".safetensors", ".pth", ".pt", ".ckpt", ".bin"}

// LoadUpscaler reads an upscaler model file (.safetensors, or a PyTorch
// .pth read without running its pickle: a file that could run code is
// refused, naming what it calls) and uploads it to dev. Its architecture
// and sizes come from its tensors.
func LoadUpscaler(ctx context.Context, path string, dev backend.Device) (*Upscaler, error) {
	m, err := weights.OpenUpscaler(path)
	if err != nil {
		return nil, err
	}
	defer m.Close() // the weights are copied to dev
	net, err := esrgan.Load(m, dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c := net.Config; c.InChannels != 3 || c.OutChannels != 3 {
		return nil, fmt.Errorf("%s: a model of %d input and %d output channels (darkroom upscales RGB images)", path, c.InChannels, c.OutChannels)
	}
	if err := dev.Sync(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Upscaler{Name: upscalerName(path), Path: path, net: net, dev: dev}, nil
}

// upscalerName is the file name without its extension.
func upscalerName(path string) string {
	base := filepath.Base(path)
	for _, ext := range UpscalerExts {
		if strings.EqualFold(filepath.Ext(base), ext) {
			return base[:len(base)-len(ext)]
		}
	}
	return base
}

// Scale is the factor the model enlarges by (1, 2, 4, 8).
func (u *Upscaler) Scale() int { return u.net.Config.Scale }

// Describe names the architecture and its sizes ("RRDBNet 4× (nf 64, nb
// 23, gc 32)").
func (u *Upscaler) Describe() string { return u.net.Config.String() }

// Upscale enlarges img Scale() times, tile by tile (opts), and returns an
// opaque 8-bit image (an alpha channel is dropped, as A1111 and ComfyUI
// do). ctx is checked between tiles.
func (u *Upscaler) Upscale(ctx context.Context, img image.Image, opts UpscaleOptions) (*image.NRGBA, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	s := u.Scale()
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("upscale: an empty image")
	}
	if max(w, h)*s > MaxUpscaledSide {
		return nil, fmt.Errorf("upscale: a %dx%d image enlarged %d× is past %d pixels a side", w, h, s, MaxUpscaledSide)
	}
	t := esrgan.Tiling{Tile: opts.Tile, Overlap: opts.Overlap, OnTile: opts.OnTile}
	if t.Tile == 0 {
		t.Tile = DefaultUpscaleTile
	}
	if t.Overlap == 0 {
		t.Overlap = DefaultUpscaleOverlap
	}
	if t.Tile > 0 && t.Overlap >= t.Tile {
		return nil, fmt.Errorf("upscale: an overlap of %d for tiles of %d (want less than the tile)", t.Overlap, t.Tile)
	}
	px := planarRGB(img)
	u.mu.Lock()
	out, err := u.net.Upscale(ctx, u.dev, px, h, w, t)
	u.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("upscale with %s: %w", u.Name, err)
	}
	return ToNRGBA(out, w*s, h*s), nil
}

// planarRGB converts an image to planar RGB in 0..1 ([3, h, w]); the
// colour is un-premultiplied, the alpha dropped.
func planarRGB(img image.Image) []float32 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]float32, 3*w*h)
	for y := range h {
		for x := range w {
			c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			i := y*w + x
			out[i], out[w*h+i], out[2*w*h+i] = float32(c.R)/255, float32(c.G)/255, float32(c.B)/255
		}
	}
	return out
}

// upscalerDirs are the folders under each model directory that hold
// upscaler models: ComfyUI's upscale_models, A1111's ESRGAN and
// RealESRGAN.
var upscalerDirs = []string{"upscale_models", "models/upscale_models", "ESRGAN", "models/ESRGAN", "RealESRGAN", "models/RealESRGAN"}

// ResolveUpscaler turns an upscaler model name or path into a path: an
// existing file is used as is; otherwise the name (with or without its
// extension, "4x-UltraSharp") is looked up in each model directory's
// upscale_models/ (ComfyUI), ESRGAN/ and RealESRGAN/ (A1111) folders.
func (e *Engine) ResolveUpscaler(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("no upscaler model named")
	}
	if e.opts.NamesOnly {
		if err := checkName(name, "hires_upscaler"); err != nil {
			return "", err
		}
	} else if fileExists(name) {
		return name, nil
	}
	for _, root := range e.ModelDirs() {
		for _, sub := range upscalerDirs {
			for _, ext := range append([]string{""}, UpscalerExts...) {
				if p := filepath.Join(root, sub, name+ext); fileExists(p) {
					return p, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s: no such file, and no upscaler of that name in the upscale_models folders of %s", name, strings.Join(e.ModelDirs(), ", "))
}

// LoadUpscaler returns the upscaler of that name or path on the engine's
// device, loading it on first use and keeping it resident afterwards.
func (e *Engine) LoadUpscaler(ctx context.Context, nameOrPath string) (*Upscaler, error) {
	path, err := e.ResolveUpscaler(nameOrPath)
	if err != nil {
		return nil, err
	}
	key := "upscaler:" + absPath(path)
	e.mu.Lock()
	defer e.mu.Unlock()
	if u, ok := e.upscalers[key]; ok {
		return u, nil
	}
	u, err := LoadUpscaler(ctx, path, e.dev)
	if err != nil {
		return nil, err
	}
	if e.upscalers == nil {
		e.upscalers = map[string]*Upscaler{}
	}
	e.upscalers[key] = u
	return u, nil
}

// Upscale loads the upscaler of that name or path and enlarges img with
// it; jobs on one engine (generations and upscales) run one at a time.
func (e *Engine) Upscale(ctx context.Context, nameOrPath string, img image.Image, opts UpscaleOptions) (*image.NRGBA, error) {
	u, err := e.LoadUpscaler(ctx, nameOrPath)
	if err != nil {
		return nil, err
	}
	e.jobs.Lock()
	defer e.jobs.Unlock()
	return u.Upscale(ctx, img, opts)
}
