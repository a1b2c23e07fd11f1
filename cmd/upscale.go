package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/darkroom-ai/darkroom/engine"
)

const upscaleLong = `Enlarge an image with an upscaler model: ESRGAN and its descendants
(RRDBNet: 4x-UltraSharp, RealESRGAN_x4plus, RealESRGAN_x2plus, BSRGAN, ...)
and Real-ESRGAN's compact SRVGGNetCompact (realesr-general-x4v3,
realesr-animevideov3), as .safetensors or .pth files.

-m takes a file, or a name found in the model directories' upscale_models/
(ComfyUI), ESRGAN/ or RealESRGAN/ (A1111) folders, with or without its
extension. A .pth file is read without running its pickle: one that could
run code is refused, naming what it calls. The architecture, the scale and
every size are read from the file's tensors.

Large images are upscaled in tiles of --tile input pixels that share
--overlap pixels with their neighbours and are feathered together, so that
memory stays bounded (--tile 0: the whole image at once). The output is an
opaque PNG (an alpha channel is dropped) that keeps the input PNG's text
chunks (its generation parameters) and adds A1111's "postprocessing" line.

Without -o the image is written beside the input as NAME-<scale>x.png (the
first free of NAME-4x.png, NAME-4x-1.png, ...); a file named with -o is
overwritten.`

const upscaleExample = `  darkroom upscale photo.png -m 4x-UltraSharp                 # → photo-4x.png
  darkroom upscale photo.png -m ~/models/RealESRGAN_x4plus.pth -o big.png
  darkroom upscale photo.png -m realesr-general-x4v3 --models ~/ComfyUI/models --tile 256 --device cpu`

type upscaleFlags struct {
	model     string
	output    string
	tile      int
	overlap   int
	device    string
	precision string
	models    []string
}

func newUpscaleCmd() *cobra.Command {
	f := &upscaleFlags{}
	c := &cobra.Command{
		Use:     "upscale IMAGE -m MODEL",
		Short:   "Enlarge an image with an upscaler model (ESRGAN, Real-ESRGAN)",
		Long:    upscaleLong,
		Example: upscaleExample,
		Args:    exactArgs(1, "an IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUpscale(cmd, f, args[0])
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.model, "model", "m", "", "the upscaler model: a .safetensors / .pth file, or a name in the upscale_models folders (required)")
	fl.StringVarP(&f.output, "output", "o", "", "output PNG (default: beside IMAGE as NAME-<scale>x.png, never overwriting); given, it is overwritten")
	fl.IntVar(&f.tile, "tile", engine.DefaultUpscaleTile, "tile side in input pixels (0: the whole image at once)")
	fl.IntVar(&f.overlap, "overlap", engine.DefaultUpscaleOverlap, "input pixels neighbouring tiles share, feathered together (0: none)")
	fl.StringVar(&f.device, "device", "auto", "compute device: auto, cpu or cuda")
	fl.StringVar(&f.precision, "precision", "auto", "GPU precision: auto (fp16), fp16, bf16 or fp32; the CPU always computes in float32")
	fl.StringSliceVar(&f.models, "models", nil, "model directories searched for -m NAME in their upscale_models folders (default "+engine.DefaultModelDir()+")")
	_ = c.RegisterFlagCompletionFunc("device", fixedCompletion([]string{"auto", "cpu", "cuda"}))
	return c
}

// minTile is the smallest --tile: smaller tiles are mostly overlap.
const minTile = 32

func runUpscale(cmd *cobra.Command, f *upscaleFlags, input string) error {
	start := time.Now()
	switch {
	case f.model == "":
		return fmt.Errorf("-m/--model is required: an upscaler model file or name (see '%s --help')", cmd.CommandPath())
	case f.tile != 0 && f.tile < minTile:
		return fmt.Errorf("--tile %d: want 0 (the whole image at once) or at least %d", f.tile, minTile)
	case f.overlap < 0 || (f.tile > 0 && 2*f.overlap >= f.tile):
		return fmt.Errorf("--overlap %d: want 0 or more, and less than half the tile (%d)", f.overlap, f.tile)
	}
	if st, err := os.Stat(input); err != nil {
		return fmt.Errorf("%s: no such image", input)
	} else if st.IsDir() {
		return fmt.Errorf("%s: is a directory, not an image", input)
	}
	img, err := engine.LoadImage(input)
	if err != nil {
		return err
	}
	eng, err := engine.Open(engine.Options{Device: f.device, Precision: f.precision, ModelDirs: f.models})
	if err != nil {
		return err
	}
	defer eng.Close()
	stderr := cmd.ErrOrStderr()
	if eng.Notice != "" {
		fmt.Fprintln(stderr, eng.Notice)
	}
	ctx := cmd.Context()
	u, err := eng.LoadUpscaler(ctx, f.model)
	if err != nil {
		return err
	}
	b := img.Bounds()
	s := u.Scale()
	if max(b.Dx(), b.Dy())*s > engine.MaxUpscaledSide {
		return fmt.Errorf("%s: a %dx%d image enlarged %d× is past %d pixels a side", input, b.Dx(), b.Dy(), s, engine.MaxUpscaledSide)
	}
	path := f.output
	explicit := cmd.Flags().Changed("output")
	if !explicit {
		base := strings.TrimSuffix(input, filepath.Ext(input))
		path = fmt.Sprintf("%s-%dx.png", base, s)
	}
	path = outputPaths(path, 1, explicit)[0]
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("--output %s: exists and is not a regular file", path)
	}
	if err := checkWritable(path); err != nil {
		return err
	}
	existed := exists(path)
	fmt.Fprintf(stderr, "%s: %s, on %s\n", u.Name, u.Describe(), eng.Device().Name())
	opts := engine.UpscaleOptions{Tile: f.tile, Overlap: f.overlap}
	if f.tile == 0 {
		opts.Tile = -1
	}
	if f.overlap == 0 {
		opts.Overlap = -1
	}
	opts.OnTile = func(done, total int) {
		if total > 1 {
			fmt.Fprintf(stderr, "tile %d/%d\n", done, total)
		}
	}
	out, err := eng.Upscale(ctx, f.model, img, opts)
	if err != nil {
		return err
	}
	text := map[string]string{}
	if strings.EqualFold(filepath.Ext(input), ".png") {
		if r, err := os.Open(input); err == nil {
			if t, err := engine.ReadPNGText(r); err == nil {
				text = t
			}
			r.Close()
		}
	}
	pp := fmt.Sprintf("Postprocess upscale by: %d, Postprocess upscaler: %s", s, u.Name)
	if prev := text["postprocessing"]; prev != "" {
		pp = prev + ", " + pp
	}
	text["postprocessing"] = pp
	if err := engine.WritePNG(path, out, text); err != nil {
		return err
	}
	if existed {
		fmt.Fprintf(stderr, "overwrote %s\n", path)
	}
	fmt.Fprintln(cmd.OutOrStdout(), path)
	ob := out.Bounds()
	fmt.Fprintf(stderr, "done in %.1f s: %dx%d → %dx%d → %s\n", time.Since(start).Seconds(), b.Dx(), b.Dy(), ob.Dx(), ob.Dy(), path)
	return nil
}
