package engine

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/models/taesd"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// TAESDDecoderFile is the file name of the SD1 TAESD decoder
// (madebyollin/taesd) in the layouts users have: ComfyUI keeps it in
// models/vae_approx/. Only the .safetensors release is read; the .pth
// files (pickles) are not supported.
const TAESDDecoderFile = "taesd_decoder.safetensors"

// TAESDDecoderFiles are the TAESD decoders of madebyollin's releases that
// the families name in their LatentFormat.TAESD (SD1/SD2, SDXL, SD3, Flux).
var TAESDDecoderFiles = []string{TAESDDecoderFile, "taesdxl_decoder.safetensors", "taesd3_decoder.safetensors", "taef1_decoder.safetensors"}

// Previewers draws live previews with whichever of its TAESD decoders the
// latents' format names (nil, so callers fall back to LatentPreview, when
// none does).
type Previewers []*TAESD

// Preview dispatches to the decoder named by f.TAESD.
func (p Previewers) Preview(f LatentFormat, latents []float32, shape []int, i int) *image.NRGBA {
	for _, t := range p {
		if t.file == f.TAESD {
			return t.Preview(f, latents, shape, i)
		}
	}
	return nil
}

// LoadPreviewers loads every decoder of TAESDDecoderFiles found in dirs
// (FindTAESD) onto dev; a decoder that fails to load is left out and its
// error returned beside the others.
func LoadPreviewers(ctx context.Context, dirs []string, dev backend.Device) (Previewers, []error) {
	var out Previewers
	var errs []error
	for _, f := range TAESDDecoderFiles {
		p := FindTAESD(dirs, f)
		if p == "" {
			continue
		}
		t, err := LoadTAESD(ctx, p, dev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, t)
	}
	return out, errs
}

// taesdSubdirs are where FindTAESD looks under each model directory: the
// directory itself, a models root, a ComfyUI root, and the sibling of a
// checkpoints folder.
var taesdSubdirs = []string{"", "vae_approx", filepath.Join("models", "vae_approx"), filepath.Join("..", "vae_approx")}

// FindTAESD returns the path of the first TAESD decoder named file (a
// LatentFormat's TAESD, e.g. TAESDDecoderFile for SD1) found in dirs, each searched directly and in vae_approx/,
// models/vae_approx/ and ../vae_approx/, or "" when there is none.
func FindTAESD(dirs []string, file string) string {
	if file == "" {
		return ""
	}
	for _, dir := range dirs {
		for _, sub := range taesdSubdirs {
			p := filepath.Join(dir, sub, file)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p
			}
		}
	}
	return ""
}

// TAESD draws live previews with a TAESD decoder: a tiny autoencoder
// decoder that renders denoised latents at full resolution, far closer to
// the VAE than LatentPreview's linear approximation. It is safe for
// concurrent use (previews are decoded one at a time).
type TAESD struct {
	mu  sync.Mutex // serialises decodes on dev
	dec *taesd.Decoder
	dev backend.Device
	// file is the decoder's file name, matched against LatentFormat.TAESD.
	file string
}

// LoadTAESD reads a TAESD decoder checkpoint (safetensors; the latent width
// is read from its shapes) and uploads it to dev.
func LoadTAESD(ctx context.Context, path string, dev backend.Device) (*TAESD, error) {
	src, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load taesd: %w", err)
	}
	defer src.Close() // the weights are copied to dev
	dec, err := taesd.NewDecoder(src, dev)
	if err != nil {
		return nil, fmt.Errorf("load taesd %s: %w", path, err)
	}
	if err := dev.Sync(ctx); err != nil {
		return nil, fmt.Errorf("load taesd: %w", err)
	}
	return &TAESD{dec: dec, dev: dev, file: filepath.Base(path)}, nil
}

// LatentChannels is the latent width the decoder expects (4 for SD1's TAESD).
func (t *TAESD) LatentChannels() int { return t.dec.Config.LatentChannels }

// Preview decodes batch item i of latents [shape] (sampler-space latents,
// as Event.Denoised holds them, of format f) into an image 8× the latent
// size. It returns nil, so that callers fall back to LatentPreview, when
// the format names another TAESD file, the latents do not match the
// decoder's latent channels, the arguments are inconsistent, or the device
// fails.
func (t *TAESD) Preview(f LatentFormat, latents []float32, shape []int, i int) *image.NRGBA {
	if len(shape) != 4 || f.TAESD != t.file {
		return nil
	}
	n, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if c != t.LatentChannels() || h <= 0 || w <= 0 || i < 0 || i >= n || len(latents) < n*c*h*w {
		return nil
	}
	img, err := t.decode(latents[i*c*h*w:(i+1)*c*h*w], c, h, w)
	if err != nil {
		return nil
	}
	return img
}

// decode runs the decoder on one latent [c, h, w] and quantises the result.
func (t *TAESD) decode(lat []float32, c, h, w int) (*image.NRGBA, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.dev.Upload(lat, 1, c, h, w)
	defer t.dev.Free(in)
	out, err := t.dec.Decode(context.Background(), t.dev, in)
	if err != nil {
		return nil, err
	}
	defer t.dev.Free(out)
	px, err := t.dev.Download(out)
	if err != nil {
		return nil, err
	}
	f := taesd.Factor
	return ToNRGBA(px, w*f, h*f), nil // ToNRGBA clamps to 0..1
}
