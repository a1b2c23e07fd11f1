package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// testImage is w×h with a distinct colour per pixel.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / max(w-1, 1)), uint8(y * 255 / max(h-1, 1)), uint8((x*7 + y*13) % 256), 255})
		}
	}
	return img
}

func writePNG(t *testing.T, img image.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "init.png")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFitImage(t *testing.T) {
	src := testImage(16, 8)
	same, err := FitImage(src, 16, 8, ResizeStretch)
	if err != nil {
		t.Fatal(err)
	}
	if string(same.Pix) != string(src.Pix) {
		t.Error("an image already at the size changed")
	}
	// crop: a 16x8 image into 8x8 is scaled by 1 and its middle kept
	c, err := FitImage(src, 8, 8, ResizeCrop)
	if err != nil {
		t.Fatal(err)
	}
	for y := range 8 {
		for x := range 8 {
			if c.NRGBAAt(x, y) != src.NRGBAAt(x+4, y) {
				t.Fatalf("crop: (%d,%d) = %v, want the source's (%d,%d) %v", x, y, c.NRGBAAt(x, y), x+4, y, src.NRGBAAt(x+4, y))
			}
		}
	}
	// fill: into 16x16 the image sits in rows 4..11, rows above and below repeat its edge rows
	f, err := FitImage(src, 16, 16, ResizeFill)
	if err != nil {
		t.Fatal(err)
	}
	for x := range 16 {
		if f.NRGBAAt(x, 0) != src.NRGBAAt(x, 0) || f.NRGBAAt(x, 6) != src.NRGBAAt(x, 2) || f.NRGBAAt(x, 15) != src.NRGBAAt(x, 7) {
			t.Fatalf("fill: column %d is not the image with repeated edges", x)
		}
	}
	s, err := FitImage(src, 32, 24, ResizeStretch)
	if err != nil {
		t.Fatal(err)
	}
	if b := s.Bounds(); b.Dx() != 32 || b.Dy() != 24 {
		t.Errorf("stretch: %v, want 32x24", b)
	}
	if _, err := FitImage(src, 8, 8, "shrink"); err == nil {
		t.Error("an unknown resize mode was accepted")
	}
}

// TestLanczos checks the resampler's invariants: a flat image stays flat,
// a 2-pixel checkerboard halved becomes its mean, a horizontal ramp
// doubled stays monotonic and within Lanczos' small ringing (≤ 2%) of its
// range.
func TestLanczos(t *testing.T) {
	flat := image.NewNRGBA(image.Rect(0, 0, 10, 6))
	for i := range flat.Pix {
		flat.Pix[i] = 77
	}
	out, _ := FitImage(flat, 23, 17, ResizeStretch)
	for i, v := range out.Pix {
		if i%4 != 3 && v != 77 {
			t.Fatalf("flat image resized: value %d at %d", v, i)
		}
	}
	cb := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	for y := range 32 {
		for x := range 32 {
			v := uint8(0)
			if (x+y)%2 == 0 {
				v = 200
			}
			cb.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
		}
	}
	half, _ := FitImage(cb, 16, 16, ResizeStretch)
	for y := 4; y < 12; y++ {
		for x := 4; x < 12; x++ {
			if v := half.NRGBAAt(x, y).R; v < 98 || v > 102 {
				t.Fatalf("checkerboard halved: %d at (%d,%d), want about 100", v, x, y)
			}
		}
	}
	ramp := image.NewNRGBA(image.Rect(0, 0, 16, 1))
	for x := range 16 {
		ramp.SetNRGBA(x, 0, color.NRGBA{uint8(x * 16), 0, 0, 255})
	}
	up, _ := FitImage(ramp, 32, 1, ResizeStretch)
	prev := -1
	for x := range 32 {
		v := int(up.NRGBAAt(x, 0).R)
		if v < prev-1 || v > 245 {
			t.Fatalf("ramp doubled: %d at %d after %d", v, x, prev)
		}
		prev = v
	}
}

func TestImg2ImgSigmas(t *testing.T) {
	s := sampling.DefaultDiscrete()
	full10, _ := sampling.SamplerSigmas("euler", "normal", s, 10)
	full16, _ := sampling.SamplerSigmas("euler", "normal", s, 16)
	for _, c := range []struct {
		rule  string
		steps int
		want  []float32
	}{
		{DenoiseStepsComfy, 10, full16[6:]},    // ComfyUI: 10 steps of int(10/0.6) = 16
		{DenoiseStepsA1111, 7, full10[3:]},     // A1111: int(0.6·10)+1 = 7 of 10
		{DenoiseStepsDiffusers, 6, full10[4:]}, // diffusers: int(10·0.6) = 6 of 10
	} {
		got, err := img2imgSigmas(c.rule, "euler", "normal", s, 10, 0.6, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(got)-1 != c.steps || testRelErr(got, c.want) != 0 {
			t.Errorf("%s: %d steps %v, want %d %v", c.rule, len(got)-1, got, c.steps, c.want)
		}
	}
	if got, _ := img2imgSigmas(DenoiseStepsA1111, "euler", "normal", s, 10, 1, false); len(got)-1 != 10 {
		t.Errorf("a1111 at denoise 1 (capped at 0.999): %d steps, want 10", len(got)-1)
	}
	// The flow pipelines' get_timesteps (FluxImg2ImgPipeline,
	// StableDiffusion3Img2ImgPipeline) count in floats: 5 steps at
	// strength 0.55 skip int(5 − 2.75) = 2 and run 3, where the SD
	// pipelines run int(2.75) = 2.
	for _, c := range []struct {
		flow  bool
		steps int
	}{{false, 2}, {true, 3}} {
		got, err := img2imgSigmas(DenoiseStepsDiffusers, "euler", "normal", s, 5, 0.55, c.flow)
		if err != nil {
			t.Fatal(err)
		}
		if len(got)-1 != c.steps {
			t.Errorf("diffusers rule, flow %v: %d steps, want %d", c.flow, len(got)-1, c.steps)
		}
	}
}

func testRelErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestInitSize(t *testing.T) {
	p := writePNG(t, testImage(100, 60))
	for _, c := range []struct{ w, h, ww, wh int }{
		{0, 0, 96, 56}, {64, 0, 64, 32}, {0, 120, 200, 120}, {48, 40, 48, 40},
	} {
		r := Request{InitImage: p, Width: c.w, Height: c.h}
		if err := initSize(&r); err != nil {
			t.Fatal(err)
		}
		if r.Width != c.ww || r.Height != c.wh {
			t.Errorf("%dx%d from a 100x60 image: %dx%d, want %dx%d", c.w, c.h, r.Width, r.Height, c.ww, c.wh)
		}
	}
	r := Request{InitImage: filepath.Join(t.TempDir(), "missing.png")}
	err := initSize(&r)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "init_image" {
		t.Errorf("missing init image: %v, want a field error on init_image", err)
	}
}

// TestImg2ImgRequests runs img2img on the tiny SD1 model: a low denoise
// stays near the init image, bad input is refused in one line, and a
// refiner given for post-apply must exist.
func TestImg2ImgRequests(t *testing.T) {
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	init := testImage(64, 64)
	p := writePNG(t, init)
	req := Request{Prompt: "a red cube", Negative: "", Seed: 3, Steps: 6, CFG: 5, Sampler: "euler", Scheduler: "normal",
		Batch: 1, ClipSkip: 1, InitImage: p}
	dist := func(d float64) float64 {
		r := req
		r.Denoise = d
		res, err := m.Generate(context.Background(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b := res.Images[0].Bounds(); b.Dx() != 64 || b.Dy() != 64 {
			t.Fatalf("size from the init image: %v, want 64x64", b)
		}
		var s float64
		for i, v := range res.Images[0].Pix {
			if i%4 != 3 {
				s += math.Abs(float64(v) - float64(init.Pix[i]))
			}
		}
		return s / float64(3*64*64)
	}
	low, high := dist(0.2), dist(1)
	if !(low < high) {
		t.Errorf("mean distance to the init image: denoise 0.2 %.1f, denoise 1 %.1f; want the low denoise nearer", low, high)
	}
	for _, c := range []struct {
		r    Request
		want string
	}{
		{Request{Prompt: "x", Seed: 1, Steps: 4, CFG: 5, Sampler: "euler", Scheduler: "normal", Width: 64, Height: 64, Batch: 1, ClipSkip: 1, Denoise: 0.5}, "--init-image"},
		{func() Request { r := req; r.InitImage = filepath.Join(t.TempDir(), "nope.png"); return r }(), "init_image"},
		{func() Request { r := req; r.RefinerDenoise = 0.3; return r }(), "needs a refiner"},
	} {
		_, err := m.Generate(context.Background(), c.r, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("got %v, want one line mentioning %q", err, c.want)
		}
	}
}

// nanDecoder is the CPU device with the VAE decoder's output (the only
// 3-channel image downloaded) poisoned by one NaN, as a 16-bit decode that
// overflowed would be.
type nanDecoder struct{ backend.Device }

func (d nanDecoder) Download(t *backend.Tensor) ([]float32, error) {
	v, err := d.Device.Download(t)
	if err == nil && len(t.Shape) == 4 && t.Shape[1] == 3 {
		v[len(v)/2] = float32(math.NaN())
	}
	return v, err
}

// TestDecodeFallback checks that a decode with non-finite output is
// redone in float32 on the CPU (never a black image) and said so.
func TestDecodeFallback(t *testing.T) {
	ctx := context.Background()
	ref, err := Load(ctx, layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	m, err := Load(ctx, layouts[0].path, nanDecoder{cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Prompt: "a red cube", Seed: 5, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Width: 64, Height: 64, Batch: 1, ClipSkip: 1}
	want, err := ref.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Images[0].Pix) != string(want.Images[0].Pix) {
		t.Error("the float32 fallback decode differs from a plain CPU decode")
	}
	if len(got.Notices) != 1 || !strings.Contains(got.Notices[0], "float32") {
		t.Errorf("notices %q, want one saying the decode was redone in float32", got.Notices)
	}
	if len(want.Notices) != 0 {
		t.Errorf("a clean decode has notices %q", want.Notices)
	}
}

func TestMaskOps(t *testing.T) {
	m := &greyMask{w: 8, h: 8, v: make([]float32, 64)}
	m.v[3*8+3] = 1
	g := m.grow(2)
	for y := range 8 {
		for x := range 8 {
			want := float32(0)
			if x >= 1 && x <= 5 && y >= 1 && y <= 5 {
				want = 1
			}
			if g.v[y*8+x] != want {
				t.Fatalf("grow 2: (%d,%d) = %g, want %g", x, y, g.v[y*8+x], want)
			}
		}
	}
	flat := &greyMask{w: 6, h: 5, v: make([]float32, 30)}
	for i := range flat.v {
		flat.v[i] = 0.25
	}
	for _, v := range flat.blur(3).v {
		if math.Abs(float64(v)-0.25) > 1e-6 {
			t.Fatalf("blurred flat mask: %g, want 0.25", v)
		}
	}
	// bilinear at pixel centres: a 4-wide ramp 0,1,2,3 halved reads 0.5 and 2.5
	r := &greyMask{w: 4, h: 1, v: []float32{0, 1, 2, 3}}
	if got := r.latent(2, 1); got[0] != 0.5 || got[1] != 2.5 {
		t.Errorf("ramp resampled to 2: %v, want [0.5 2.5]", got)
	}
	if o, err := ParseOutpaint("8"); err != nil || o != (Outpaint{8, 8, 8, 8}) {
		t.Errorf("ParseOutpaint(8) = %v, %v", o, err)
	}
	for _, bad := range []string{"", "1,2", "-3", "a,b,c,d"} {
		if _, err := ParseOutpaint(bad); err == nil {
			t.Errorf("ParseOutpaint(%q) accepted", bad)
		}
	}
}

// TestOutpaintPad checks ComfyUI's ImagePadForOutpaint layout: grey
// borders with mask 1, the image inside, the mask feathered as
// ((feather−d)/feather)² from the padded sides only.
func TestOutpaintPad(t *testing.T) {
	src := testImage(16, 12)
	img, m := Outpaint{Left: 8, Right: 0, Top: 0, Bottom: 4}.pad(src, 4)
	if b := img.Bounds(); b.Dx() != 24 || b.Dy() != 16 {
		t.Fatalf("padded size %v, want 24x16", b)
	}
	if img.NRGBAAt(0, 0) != (color.NRGBA{128, 128, 128, 255}) || img.NRGBAAt(8, 0) != src.NRGBAAt(0, 0) {
		t.Error("padded image: want grey borders and the image at (8, 0)")
	}
	at := func(x, y int) float32 { return m.v[y*24+x] }
	if at(0, 0) != 1 || at(7, 5) != 1 || at(10, 15) != 1 {
		t.Error("border mask is not 1")
	}
	if at(8, 5) != 1 || at(9, 5) != 0.5625 || at(12, 5) != 0 || at(20, 0) != 0 {
		t.Errorf("feather from the left: %g %g %g, top-right %g; want 1 0.5625 0 0", at(8, 5), at(9, 5), at(12, 5), at(20, 0))
	}
	if at(20, 11) != 0.5625 || at(20, 8) != 0 {
		t.Errorf("feather from the bottom: %g %g; want 0.5625 0", at(20, 11), at(20, 8))
	}
}

// TestInpaintKeepsUnmasked inpaints the middle of an image on the tiny SD1
// model: the pixels outside the mask come back exactly, the masked ones
// change; a transparent init image is its own mask.
func TestInpaintKeepsUnmasked(t *testing.T) {
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	init := testImage(64, 64)
	mask := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			v := uint8(0)
			if x >= 16 && x < 48 && y >= 16 && y < 48 {
				v = 255
			}
			mask.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
		}
	}
	holed := image.NewNRGBA(init.Bounds())
	copy(holed.Pix, init.Pix)
	for y := 16; y < 48; y++ {
		for x := 16; x < 48; x++ {
			holed.Pix[holed.PixOffset(x, y)+3] = 0
		}
	}
	for name, r := range map[string]Request{
		"mask file":    {InitImage: writePNG(t, init), Mask: writePNG(t, mask)},
		"transparency": {InitImage: writePNG(t, holed)},
	} {
		t.Run(name, func(t *testing.T) {
			r.Prompt, r.Seed, r.Steps, r.CFG, r.Sampler, r.Scheduler, r.Batch, r.ClipSkip = "a red cube", 9, 4, 5, "euler", "normal", 1, 1
			r.Denoise = 0.9
			res, err := m.Generate(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			out := res.Images[0]
			changed := 0
			for y := range 64 {
				for x := range 64 {
					in := x >= 16 && x < 48 && y >= 16 && y < 48
					o, i := out.NRGBAAt(x, y), init.NRGBAAt(x, y)
					if !in && (o.R != i.R || o.G != i.G || o.B != i.B) {
						t.Fatalf("unmasked pixel (%d,%d) changed: %v, was %v", x, y, o, i)
					}
					if in && o != i {
						changed++
					}
				}
			}
			if changed < 32*32/2 {
				t.Errorf("only %d of %d masked pixels changed", changed, 32*32)
			}
		})
	}
}

func TestUpscaleLatents(t *testing.T) {
	x := []float32{1, 2, 3, 4} // [1, 1, 2, 2]
	near, err := upscaleLatents(x, []int{1, 1, 2, 2}, 4, 4, UpscaleLatentNearest)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}
	if testRelErr(near, want) != 0 {
		t.Errorf("nearest-exact 2x: %v, want %v", near, want)
	}
	// torch bilinear (align_corners=False) of [[1,2],[3,4]] to 4x4: first row 1, 1.25, 1.75, 2
	bil, _ := upscaleLatents(x, []int{1, 1, 2, 2}, 4, 4, UpscaleLatentBilinear)
	if testRelErr(bil[:4], []float32{1, 1.25, 1.75, 2}) > 1e-6 {
		t.Errorf("bilinear 2x first row %v", bil[:4])
	}
	// flat channel vectors stay flat under every method
	flat := make([]float32, 2*3*5)
	for i := range flat {
		flat[i] = float32(1 + i/15) // channel 0 ones, channel 1 twos
	}
	for _, m := range []string{UpscaleLatentNearest, UpscaleLatentBilinear, UpscaleLatentBicubic, UpscaleLatentBislerp} {
		up, err := upscaleLatents(flat, []int{1, 2, 3, 5}, 8, 7, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(up) != 2*7*8 {
			t.Fatalf("%s: %d values, want %d", m, len(up), 2*7*8)
		}
		for i, v := range up {
			if w := float32(1 + i/56); math.Abs(float64(v-w)) > 1e-5 {
				t.Fatalf("%s: value %g at %d, want %g", m, v, i, w)
			}
		}
	}
	if _, err := upscaleLatents(x, []int{1, 1, 2, 2}, 4, 4, "esrgan"); err == nil {
		t.Error("an unknown upscaler was accepted")
	}
}

// TestHiresFix runs a hires fix on the tiny SD1 model: the result has the
// upscaled size, for an image-space and a latent upscaler.
func TestHiresFix(t *testing.T) {
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	for _, up := range []string{UpscaleLanczos, UpscaleLatentBislerp} {
		req := Request{Prompt: "a red cube", Seed: 4, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Width: 64, Height: 48,
			Batch: 1, ClipSkip: 1, Hires: 1.5, HiresUpscaler: up, HiresSteps: 2}
		res, err := m.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b := res.Images[0].Bounds(); b.Dx() != 96 || b.Dy() != 72 {
			t.Errorf("%s: %v, want 96x72", up, b)
		}
	}
}

// inpaintingCheckpoint writes the tiny SD1 model as an inpainting
// checkpoint: its UNet's conv_in takes 9 channels, the 5 extra ones
// weighted by extra (0: the model computes what the 4-channel one does).
func inpaintingCheckpoint(t *testing.T, extra float32) string {
	t.Helper()
	f, err := safetensors.Open(layouts[0].path)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	out := map[string]safetensors.Tensor{}
	const convIn = "model.diffusion_model.input_blocks.0.0.weight"
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		raw, err := f.Raw(name)
		if err != nil {
			t.Fatal(err)
		}
		if name != convIn {
			out[name] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: raw}
			continue
		}
		w, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		oc, kk := info.Shape[0], info.Shape[2]*info.Shape[3]
		w9 := make([]float32, oc*9*kk)
		for o := range oc {
			copy(w9[o*9*kk:o*9*kk+4*kk], w[o*4*kk:(o+1)*4*kk])
			for i := 4 * kk; i < 9*kk; i++ {
				w9[o*9*kk+i] = extra * float32((o*31+i*7)%13-6) / 6
			}
		}
		b := make([]byte, 4*len(w9))
		for i, v := range w9 {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		out[name] = safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{oc, 9, info.Shape[2], info.Shape[3]}, Data: b}
	}
	p := filepath.Join(t.TempDir(), "sd1-inpainting.safetensors")
	if err := safetensors.Write(p, out, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInpaintingModel runs a 9-channel inpainting UNet: it loads, and with
// zero weights on its extra channels it computes exactly what the plain
// model does (txt2img: ComfyUI's mask of ones and blank latent; inpaint:
// the mask and masked-image latents); with weights there, the mask
// conditioning changes the result and the unmasked pixels stay.
func TestInpaintingModel(t *testing.T) {
	ctx := context.Background()
	plain, err := Load(ctx, layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	zero, err := Load(ctx, inpaintingCheckpoint(t, 0), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if zero.c.InpaintChannels != 5 {
		t.Fatalf("inpainting channels %d, want 5", zero.c.InpaintChannels)
	}
	init := testImage(64, 64)
	mask := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			if x >= 8 && x < 40 && y >= 24 && y < 56 {
				mask.SetNRGBA(x, y, color.NRGBA{255, 255, 255, 255})
			} else {
				mask.SetNRGBA(x, y, color.NRGBA{0, 0, 0, 255})
			}
		}
	}
	t2i := Request{Prompt: "a red cube", Seed: 2, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Width: 64, Height: 64, Batch: 2, ClipSkip: 1}
	inp := t2i
	inp.InitImage, inp.Mask, inp.Denoise, inp.Width, inp.Height = writePNG(t, init), writePNG(t, mask), 1, 0, 0
	for name, req := range map[string]Request{"txt2img": t2i, "inpaint": inp} {
		a, err := plain.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := zero.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if testRelErr(a.Latents, b.Latents) != 0 {
			t.Errorf("%s: the inpainting UNet with zero extra weights differs from the plain one", name)
		}
	}
	live, err := Load(ctx, inpaintingCheckpoint(t, 0.5), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := zero.Generate(ctx, inp, nil)
	b, err := live.Generate(ctx, inp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if testRelErr(a.Latents, b.Latents) == 0 {
		t.Error("the mask and masked-image channels had no effect")
	}
	for y := range 64 {
		for x := range 64 {
			if !(x >= 8 && x < 40 && y >= 24 && y < 56) {
				o, i := b.Images[1].NRGBAAt(x, y), init.NRGBAAt(x, y)
				if o.R != i.R || o.G != i.G || o.B != i.B {
					t.Fatalf("unmasked pixel (%d,%d) changed", x, y)
				}
			}
		}
	}
}

// TestVariationNoise checks A1111's variation seed and seed resize: no
// variation is the seed's noise, strength 1 is the variation seed's,
// between them the noise keeps unit scale; a resized seed's noise is the
// from-size noise pasted centred into the seed's full-size noise.
func TestVariationNoise(t *testing.T) {
	shape := []int{2, 4, 6, 8}
	n := 2 * 4 * 6 * 8
	base := rng.NewTorch(5).Randn(n)
	req := Request{Seed: 5, Width: 64, Height: 48}
	if got := initialNoise(req, shape, rng.NewTorch(5)); testRelErr(got, base) != 0 {
		t.Error("no variation: not the seed's noise")
	}
	req.VariationSeed, req.VariationStrength = 9, 1
	if got := initialNoise(req, shape, rng.NewTorch(5)); testRelErr(got, rng.NewTorch(9).Randn(n)) > 1e-6 {
		t.Error("strength 1: not the variation seed's noise")
	}
	req.VariationStrength = 0.5
	mid := initialNoise(req, shape, rng.NewTorch(5))
	var ss float64
	for _, v := range mid {
		ss += float64(v) * float64(v)
	}
	if rms := math.Sqrt(ss / float64(n)); rms < 0.8 || rms > 1.2 || testRelErr(mid, base) == 0 {
		t.Errorf("strength 0.5: rms %.3f, want about 1 and a change", rms)
	}
	// resize from 32x32 (latent 4x4) into 64x48 (8x6): rows 1..4, columns 2..5
	r := Request{Seed: 5, Width: 64, Height: 48, SeedResizeFromW: 32, SeedResizeFromH: 32}
	got := initialNoise(r, shape, rng.NewTorch(5))
	small := rng.NewTorch(5).Randn(2 * 4 * 4 * 4)
	for i := range 8 {
		for y := range 6 {
			for x := range 8 {
				v := got[i*48+y*8+x]
				want := base[i*48+y*8+x]
				if y >= 1 && y < 5 && x >= 2 && x < 6 {
					want = small[i*16+(y-1)*4+(x-2)]
				}
				if v != want {
					t.Fatalf("resized noise at plane %d (%d,%d): %g, want %g", i, x, y, v, want)
				}
			}
		}
	}
}

// TestMaskInput: a mask of another size is fitted and said so, an all-white
// one is named, an all-black one refused in one line.
func TestMaskInput(t *testing.T) {
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		t.Skip(err)
	}
	grey := func(w, h int, v uint8) string {
		img := image.NewNRGBA(image.Rect(0, 0, w, h))
		for i := range img.Pix {
			img.Pix[i] = v
		}
		for i := 3; i < len(img.Pix); i += 4 {
			img.Pix[i] = 255
		}
		return writePNG(t, img)
	}
	half := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	for y := range 32 {
		for x := range 32 {
			v := uint8(0)
			if x < 16 {
				v = 255
			}
			half.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
		}
	}
	base := Request{Prompt: "a red cube", Seed: 1, Steps: 2, CFG: 5, Sampler: "euler", Scheduler: "normal", Batch: 1, ClipSkip: 1,
		InitImage: writePNG(t, testImage(64, 64)), Denoise: 0.8}
	r := base
	r.Mask = writePNG(t, half)
	res, err := m.Generate(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Notices) != 1 || !strings.Contains(res.Notices[0], "32x32, fitted to 64x64") {
		t.Errorf("notices %q, want the mask's resize", res.Notices)
	}
	r.Mask = grey(64, 64, 255)
	if res, err = m.Generate(context.Background(), r, nil); err != nil || len(res.Notices) != 1 || !strings.Contains(res.Notices[0], "all white") {
		t.Errorf("all-white mask: %v, notices %q", err, res.Notices)
	}
	r.Mask = grey(64, 64, 0)
	if _, err := m.Generate(context.Background(), r, nil); err == nil || !strings.Contains(err.Error(), "all black") {
		t.Errorf("all-black mask: %v, want a refusal", err)
	}
}
