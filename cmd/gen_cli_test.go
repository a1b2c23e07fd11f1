package cmd

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// A positional prompt is -p; both at once is refused; with --from it
// replaces the stored prompt only.
func TestGenPositionalPrompt(t *testing.T) {
	path, stored := storedPNG(t)
	for _, c := range []struct {
		args   []string
		prompt string
		err    string
	}{
		{[]string{"a cat"}, "a cat", ""},
		{[]string{"-p", "a cat"}, "a cat", ""},
		{[]string{"-s", "1", "a cat", "--steps", "3"}, "a cat", ""},
		{[]string{"a cat", "-p", "a dog"}, "", `the prompt is given twice, as an argument ("a cat") and with -p; give it once`},
		{[]string{"--from", path, "a cat"}, "a cat", ""},
	} {
		got, err := genRequest(t, c.args...)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || got.Prompt != c.prompt {
			t.Errorf("%q: prompt %q, %v; want %q", c.args, got.Prompt, err, c.prompt)
		}
		if c.args[0] == "--from" {
			want := stored
			want.Prompt = c.prompt
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%q:\n got %+v\nwant %+v", c.args, got, want)
			}
		}
	}
	_, stderr, code := runCmd(t, "gen", "a", "b")
	if code != 1 || stderr != "darkroom: accepts at most 1 arg(s), received 2\n" {
		t.Errorf("two prompts: exit %d, stderr %q", code, stderr)
	}
}

// Sampler flags take other UIs' names; a scheduler in the sampler's name
// is used unless --scheduler is given (in any order), also with --from.
func TestGenSamplerAliases(t *testing.T) {
	path, stored := storedPNG(t)
	for _, c := range []struct {
		args               []string
		sampler, scheduler string
	}{
		{[]string{"--sampler", "Euler a"}, "euler_ancestral", "normal"},
		{[]string{"--sampler", "dpm++2m"}, "dpmpp_2m", "normal"},
		{[]string{"--sampler", "DPM++ 2M Karras"}, "dpmpp_2m", "karras"},
		{[]string{"--sampler", "DPM++ 2M Karras", "--scheduler", "Exponential"}, "dpmpp_2m", "exponential"},
		{[]string{"--scheduler", "SGM Uniform", "--sampler", "DPM++ 2M Karras"}, "dpmpp_2m", "sgm_uniform"},
		{[]string{"--from", path, "--sampler", "k_euler_a"}, "euler_ancestral", stored.Scheduler},
		{[]string{"--from", path, "--sampler", "Euler a Karras"}, "euler_ancestral", "karras"},
	} {
		got, err := genRequest(t, c.args...)
		if err != nil || got.Sampler != c.sampler || got.Scheduler != c.scheduler {
			t.Errorf("%q: %q %q, %v; want %q %q", c.args, got.Sampler, got.Scheduler, err, c.sampler, c.scheduler)
		}
	}
}

// Output names: .png added to a name without one, batches numbered
// NAME-1.png…; without -o existing files are kept (first free names).
func TestOutputPaths(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"taken.png", "taken-1.png", "taken-3.png", "one.png"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		output   string
		batch    int
		explicit bool
		want     []string
	}{
		{"x.png", 1, true, []string{"x.png"}},
		{"noext", 1, true, []string{"noext.png"}},
		{"noextb", 2, true, []string{"noextb-1.png", "noextb-2.png"}},
		{"x.png", 2, true, []string{"x-1.png", "x-2.png"}},
		{"taken.png", 1, true, []string{"taken.png"}},
		{"taken.png", 2, true, []string{"taken-1.png", "taken-2.png"}},
		{"free.png", 1, false, []string{"free.png"}},
		{"taken.png", 1, false, []string{"taken-2.png"}},
		{"taken.png", 3, false, []string{"taken-2.png", "taken-4.png", "taken-5.png"}},
		{"one.png", 1, false, []string{"one-1.png"}},
		{"one.png", 2, false, []string{"one-1.png", "one-2.png"}},
	} {
		got := outputPaths(filepath.Join(dir, c.output), c.batch, c.explicit)
		for i := range got {
			got[i] = filepath.Base(got[i])
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s batch %d explicit %v: %q, want %q", c.output, c.batch, c.explicit, got, c.want)
		}
	}
}

// Without -o nothing is overwritten; with -o the file is, and stderr says
// so; every run ends with "done in … → files".
func TestGenNeverOverwritesSilently(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	abs, _ := filepath.Abs(filepath.Join(origDir, tinyModel))
	args := []string{"gen", "-m", abs, "-p", "x", "-s", "7", "--steps", "2", "-W", "32", "-H", "32"}
	done := regexp.MustCompile(`\ndone in [0-9]+\.[0-9] s → ([^\n]+)\n$`)
	for _, c := range []struct {
		extra  []string
		stdout string
		over   []string
	}{
		{nil, "out.png\n", nil},
		{nil, "out-1.png\n", nil},
		{[]string{"-b", "2"}, "out-2.png\nout-3.png\n", nil},
		{[]string{"-o", "out.png"}, "out.png\n", []string{"out.png"}},
		{[]string{"-o", "out", "-b", "2"}, "out-1.png\nout-2.png\n", []string{"out-1.png", "out-2.png"}},
	} {
		stdout, stderr, code := runCmd(t, append(args, c.extra...)...)
		if code != 0 {
			t.Fatalf("%q: %s", c.extra, stderr)
		}
		if stdout != c.stdout {
			t.Errorf("%q: stdout %q, want %q", c.extra, stdout, c.stdout)
		}
		var over []string
		for _, line := range strings.Split(stderr, "\n") {
			if name, ok := strings.CutPrefix(line, "overwrote "); ok {
				over = append(over, name)
			}
		}
		if !reflect.DeepEqual(over, c.over) {
			t.Errorf("%q: overwrote %q, want %q (stderr %q)", c.extra, over, c.over, stderr)
		}
		m := done.FindStringSubmatch(stderr)
		if want := strings.ReplaceAll(strings.TrimSpace(c.stdout), "\n", ", "); m == nil || m[1] != want {
			t.Errorf("%q: stderr %q does not end with done in … → %s", c.extra, stderr, want)
		}
	}
}

var origDir, _ = os.Getwd()

// Off a terminal, progress is a line per step up to 20 steps, else per
// 10%, with the rate.
func TestProgressLog(t *testing.T) {
	var twenty strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&twenty, "step %d/20 (%d%%) 1.00 it/s\n", i, i*5)
	}
	for _, c := range []struct {
		total int
		tick  time.Duration
		want  string
	}{
		{2, time.Second, "step 1/2 (50%) 1.00 it/s\nstep 2/2 (100%) 1.00 it/s\n"},
		{20, time.Second, twenty.String()},
		{25, time.Second, "step 3/25 (12%) 1.00 it/s\nstep 6/25 (24%) 1.00 it/s\nstep 9/25 (36%) 1.00 it/s\nstep 12/25 (48%) 1.00 it/s\nstep 15/25 (60%) 1.00 it/s\nstep 18/25 (72%) 1.00 it/s\nstep 21/25 (84%) 1.00 it/s\nstep 24/25 (96%) 1.00 it/s\nstep 25/25 (100%) 1.00 it/s\n"},
		{100, 500 * time.Millisecond, "step 10/100 (10%) 2.00 it/s\nstep 20/100 (20%) 2.00 it/s\nstep 30/100 (30%) 2.00 it/s\nstep 40/100 (40%) 2.00 it/s\nstep 50/100 (50%) 2.00 it/s\nstep 60/100 (60%) 2.00 it/s\nstep 70/100 (70%) 2.00 it/s\nstep 80/100 (80%) 2.00 it/s\nstep 90/100 (90%) 2.00 it/s\nstep 100/100 (100%) 2.00 it/s\n"},
	} {
		var buf bytes.Buffer
		clock := time.Unix(0, 0)
		p := &progress{w: &buf, now: func() time.Time { return clock }}
		clock = clock.Add(time.Hour) // loading the model is not counted
		p.event(engine.Event{Phase: engine.PhaseEncode})
		for step := 1; step <= c.total; step++ {
			clock = clock.Add(c.tick)
			p.event(engine.Event{Phase: engine.PhaseSample, Step: step, Total: c.total})
		}
		p.event(engine.Event{Phase: engine.PhaseDecode})
		p.finish()
		if got := buf.String(); got != c.want {
			t.Errorf("%d steps:\n got %q\nwant %q", c.total, got, c.want)
		}
	}
}

// A missing model file is the only thing said: no seed line before it.
func TestGenMissingModelBeforeSeed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.safetensors")
	_, stderr, code := runCmd(t, "gen", "-m", missing, "-p", "x", "--device", "cpu", "-o", filepath.Join(t.TempDir(), "x.png"))
	want := "darkroom: " + missing + ": no such file, and no model of that name in " + engine.DefaultModelDir() + "\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q; want %q", code, stderr, want)
	}
}

// writeForeignPNG writes a PNG with the given text chunks only.
func writeForeignPNG(t *testing.T, name string, text map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := engine.EncodePNG(f, image.NewNRGBA(image.Rect(0, 0, 1, 1)), text); err != nil {
		t.Fatal(err)
	}
	return path
}

// gen --from reads A1111's and ComfyUI's PNGs, says what it took and
// ignored, and flags still win.
func TestGenFromForeignPNG(t *testing.T) {
	a1111 := writeForeignPNG(t, "a1111.png", map[string]string{engine.ChunkParameters: "a lighthouse\nSteps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 6, Seed: 99, Size: 40x48, Lora hashes: \"x: 1\", Version: v1.6.0"})
	comfy := writeForeignPNG(t, "comfy.png", map[string]string{engine.ChunkComfyPrompt: `{
 "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 4, "cfg": 3, "sampler_name": "euler", "scheduler": "simple", "denoise": 1,
   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
 "11": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}
}`})
	aWant := engine.DefaultRequest()
	aWant.Prompt, aWant.Steps, aWant.Sampler, aWant.Scheduler, aWant.CFG, aWant.Seed = "a lighthouse", 3, "euler_ancestral", "karras", 6, 99
	aWant.Width, aWant.Height, aWant.Model = 40, 48, engine.DefaultModel
	cWant := engine.DefaultRequest()
	cWant.Prompt, cWant.Steps, cWant.Scheduler, cWant.CFG, cWant.Seed = "a cat", 2, "simple", 3, 5
	cWant.Width, cWant.Height, cWant.Model = 64, 32, "other.safetensors"
	for _, c := range []struct {
		args   []string
		want   engine.Request
		stderr string
	}{
		{[]string{"--from", a1111}, aWant, a1111 + ": no darkroom metadata; from its A1111 parameters took prompt, steps, sampler, scheduler, cfg, seed, width, height\n" +
			a1111 + ": ignored Lora hashes\n"},
		{[]string{"--from", comfy, "--steps", "2", "-m", "other.safetensors"}, cWant, comfy + ": no darkroom metadata; from its ComfyUI prompt took prompt, negative, steps, sampler, scheduler, cfg, seed, width, height, model, batch\n" +
			comfy + ": ignored node 11 (UpscaleModelLoader)\n"},
	} {
		c2, f := newGenCmdFlags()
		var errBuf bytes.Buffer
		c2.SetErr(&errBuf)
		if err := c2.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		got, err := f.request(c2)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q:\n got %+v, %v\nwant %+v", c.args, got, err, c.want)
		}
		if errBuf.String() != c.stderr {
			t.Errorf("%q: stderr\n %q\nwant %q", c.args, errBuf.String(), c.stderr)
		}
	}
	// End to end: the A1111 image's settings, with the tiny model.
	out := filepath.Join(t.TempDir(), "again.png")
	stdout, stderr, code := runCmd(t, "gen", "--from", a1111, "-m", tinyModel, "-o", out)
	if code != 0 || stdout != out+"\n" || !strings.Contains(stderr, "seed: 99\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if b := readPNG(t, out).Bounds(); b.Dx() != 40 || b.Dy() != 48 {
		t.Errorf("image %v, want 40×48 from the A1111 Size", b)
	}
}

// devices ends with the CPU kernel engine.CPUKernel names.
func TestDevicesNamesCPUKernel(t *testing.T) {
	stdout, stderr, code := runCmd(t, "devices")
	if code != 0 {
		t.Fatalf("devices: %s", stderr)
	}
	want := "\ncpu kernel: " + engine.CPUKernel() + "\n"
	if !strings.HasSuffix(stdout, want) {
		t.Errorf("stdout %q does not end with %q", stdout, want)
	}
	if k := engine.CPUKernel(); !regexp.MustCompile(`^(AVX-512|AVX2\+FMA|generic) \(`).MatchString(k) {
		t.Errorf("CPUKernel() = %q", k)
	}
}

// TestGenFromBatchFile: each file of a batch records its index, and gen
// --from on the second file regenerates that image (the whole batch is
// run, its images share one noise tensor) and writes it alone, the same
// pixels at the same size (issue 23 bug 9).
func TestGenFromBatchFile(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "b.png")
	if _, errOut, code := run(t, "gen", "--device", "cpu", "-p", "a handwritten digit 4", "-s", "11", "-b", "2", "--steps", "4", "-o", base); code != 0 {
		t.Fatalf("gen: %s", errOut)
	}
	second := filepath.Join(dir, "b-2.png")
	req, err := engine.RequestFromPNG(second)
	if err != nil {
		t.Fatal(err)
	}
	if req.Batch != 2 || req.BatchIndex != 2 {
		t.Fatalf("stored batch %d index %d, want 2 and 2", req.Batch, req.BatchIndex)
	}
	again := filepath.Join(dir, "again.png")
	out, errOut, code := run(t, "gen", "--device", "cpu", "--from", second, "-o", again)
	if code != 0 || strings.TrimSpace(out) != again {
		t.Fatalf("gen --from: code %d, stdout %q, stderr %s", code, out, errOut)
	}
	a, b := decodePNG(t, second), decodePNG(t, again)
	if a.Bounds() != b.Bounds() || !bytes.Equal(a.Pix, b.Pix) {
		t.Errorf("regenerated image differs (%v vs %v)", a.Bounds(), b.Bounds())
	}
	if _, err := os.Stat(filepath.Join(dir, "again-1.png")); err == nil {
		t.Error("the whole batch was written")
	}
}

func decodePNG(t *testing.T, path string) *image.NRGBA {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	out := image.NewNRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), img, img.Bounds().Min, draw.Src)
	return out
}

// TestGenImageToImage runs img2img, inpaint (with a resized mask, said
// so), outpaint and a hires fix from the command line on the tiny model:
// the written sizes follow the init image, the padding and the factor,
// and --from regenerates an img2img PNG with its init image and strength.
func TestGenImageToImage(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	abs, _ := filepath.Abs(filepath.Join(origDir, tinyModel))
	base := []string{"gen", "-m", abs, "-p", "x", "-s", "3", "--steps", "2"}
	if _, stderr, code := runCmd(t, append(base, "-W", "48", "-H", "32", "-o", "src.png")...); code != 0 {
		t.Fatal(stderr)
	}
	mask := image.NewNRGBA(image.Rect(0, 0, 24, 16))
	for i := 0; i < len(mask.Pix); i += 4 {
		v := uint8(0)
		if (i/4)%24 >= 12 {
			v = 255
		}
		mask.Pix[i], mask.Pix[i+1], mask.Pix[i+2], mask.Pix[i+3] = v, v, v, 255
	}
	f, err := os.Create("mask.png")
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, mask); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, c := range []struct {
		name   string
		extra  []string
		w, h   int
		stderr string
	}{
		{"img2img", []string{"--init-image", "src.png", "--denoise", "0.5"}, 48, 32, ""},
		{"inpaint", []string{"--init-image", "src.png", "--mask", "mask.png", "--mask-blur", "1"}, 48, 32, "note: --mask mask.png: 24x16, fitted to 48x32"},
		{"outpaint", []string{"--init-image", "src.png", "--outpaint", "8,0,8,0"}, 64, 32, ""},
		{"hires", []string{"-W", "32", "-H", "32", "--hires", "1.5", "--hires-upscaler", "latent-bilinear"}, 48, 48, ""},
	} {
		out := c.name + ".png"
		_, stderr, code := runCmd(t, append(append(base, c.extra...), "-o", out)...)
		if code != 0 {
			t.Fatalf("%s: %s", c.name, stderr)
		}
		if c.stderr != "" && !strings.Contains(stderr, c.stderr) {
			t.Errorf("%s: stderr %q lacks %q", c.name, stderr, c.stderr)
		}
		r, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(r)
		r.Close()
		if err != nil || cfg.Width != c.w || cfg.Height != c.h {
			t.Errorf("%s: %dx%d (%v), want %dx%d", c.name, cfg.Width, cfg.Height, err, c.w, c.h)
		}
	}
	req, err := engine.RequestFromPNG("img2img.png")
	if err != nil || req.InitImage != "src.png" || req.Denoise != 0.5 || req.Width != 48 {
		t.Errorf("img2img.png records %+v (%v); want the init image, denoise 0.5 and the 48x32 size", req, err)
	}
	if _, stderr, code := runCmd(t, "gen", "--from", "img2img.png", "-o", "again.png"); code != 0 {
		t.Errorf("--from an img2img PNG: %s", stderr)
	}
}
