package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

func TestFindTAESD(t *testing.T) {
	touch := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		files []string // created under the temp dir
		dirs  []string // searched, relative to the temp dir
		want  string   // relative to the temp dir; "" for none
	}{
		{"in the dir", []string{"models/taesd_decoder.safetensors"}, []string{"models"}, "models/taesd_decoder.safetensors"},
		{"models root", []string{"models/vae_approx/taesd_decoder.safetensors"}, []string{"models"}, "models/vae_approx/taesd_decoder.safetensors"},
		{"comfyui root", []string{"ComfyUI/models/vae_approx/taesd_decoder.safetensors"}, []string{"ComfyUI"}, "ComfyUI/models/vae_approx/taesd_decoder.safetensors"},
		{"checkpoints folder", []string{"m/vae_approx/taesd_decoder.safetensors", "m/checkpoints/x.safetensors"}, []string{"m/checkpoints"}, "m/vae_approx/taesd_decoder.safetensors"},
		{"first dir wins", []string{"a/vae_approx/taesd_decoder.safetensors", "b/taesd_decoder.safetensors"}, []string{"b", "a"}, "b/taesd_decoder.safetensors"},
		{"pth only", []string{"models/vae_approx/taesd_decoder.pth"}, []string{"models"}, ""},
		{"encoder only", []string{"models/vae_approx/taesd_encoder.safetensors"}, []string{"models"}, ""},
		{"a directory of that name", []string{"models/taesd_decoder.safetensors/x"}, []string{"models"}, ""},
		{"no dirs", nil, nil, ""},
		{"missing dir", nil, []string{"nowhere"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				touch(t, filepath.Join(root, f))
			}
			var dirs []string
			for _, d := range tc.dirs {
				dirs = append(dirs, filepath.Join(root, d))
			}
			want := ""
			if tc.want != "" {
				want = filepath.Join(root, tc.want)
			}
			if got := FindTAESD(dirs, TAESDDecoderFile); got != want {
				t.Errorf("FindTAESD = %q, want %q", got, want)
			}
		})
	}
}

func TestLoadTAESDErrors(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"missing file", filepath.Join(t.TempDir(), "taesd_decoder.safetensors")},
		{"encoder checkpoint", testref.Path("taef2_encoder.safetensors")},
		{"not a taesd", testref.Path("sd1-tiny-a", "single.safetensors")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadTAESD(context.Background(), tc.path, cpu.New()); err == nil {
				t.Error("LoadTAESD succeeded")
			}
		})
	}
}

// TestTAESDPreview stands the TAEF2 decoder (32 latent channels) in for
// SD1's TAESD: the preview of the reference latent must match torch's
// decoded image to one 8-bit step, and latents of another width fall back.
func TestTAESDPreview(t *testing.T) {
	tae, err := LoadTAESD(context.Background(), testref.Path("taef2_decoder.safetensors"), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if tae.LatentChannels() != 32 {
		t.Fatalf("latent channels %d, want 32", tae.LatentChannels())
	}
	// The format of the latents a taef2 decoder previews.
	taef2 := LatentFormat{Channels: 32, Factor: 8, TAESD: "taef2_decoder.safetensors"}
	if img := tae.Preview(DefaultModelFormat(), make([]float32, 32*8*8), []int{1, 32, 8, 8}, 0); img != nil {
		t.Error("a decoder previewed latents of another format")
	}
	fx := testref.Tensors(t, "taef2_roundtrip.safetensors")
	ref := fx["latent"] // [1, 32, 32, 32]
	// Batch of two: zeros, then the reference latent.
	batch := append(make([]float32, len(ref)), ref...)
	shape := []int{2, 32, 32, 32}

	for _, tc := range []struct {
		name    string
		latents []float32
		shape   []int
		i       int
	}{
		{"sd1 latents", make([]float32, 4*8*8), []int{1, 4, 8, 8}, 0},
		{"index past batch", batch, shape, 2},
		{"negative index", batch, shape, -1},
		{"short slice", batch[:len(batch)-1], shape, 1},
		{"empty", nil, []int{0, 32, 0, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if img := tae.Preview(taef2, tc.latents, tc.shape, tc.i); img != nil {
				t.Errorf("preview %v, want nil (fall back)", img.Bounds())
			}
		})
	}

	img := tae.Preview(taef2, batch, shape, 1)
	if img == nil {
		t.Fatal("no preview")
	}
	const side = 256
	if img.Bounds().Dx() != side || img.Bounds().Dy() != side {
		t.Fatalf("preview %v, want %d×%d", img.Bounds(), side, side)
	}
	want := ToNRGBA(fx["decoded"], side, side)
	worst := 0
	for k := range img.Pix {
		d := int(img.Pix[k]) - int(want.Pix[k])
		worst = max(worst, d, -d)
	}
	t.Logf("preview vs reference: worst 8-bit difference %d", worst)
	if worst > 1 {
		t.Errorf("preview differs from the reference by %d/255", worst)
	}
}

// TestPreviewersDispatch loads every known decoder found in a model
// directory and previews with the one the format names: an SDXL format
// finds taesdxl_decoder.safetensors (the taef2 weights stand in), an SD1
// format with no taesd_decoder falls back.
func TestPreviewersDispatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vae_approx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testref.Path("taef2_decoder.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "taesdxl_decoder.safetensors"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "taesd3_decoder.safetensors"), []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	pv, errs := LoadPreviewers(context.Background(), []string{filepath.Dir(dir)}, cpu.New())
	if len(pv) != 1 || len(errs) != 1 {
		t.Fatalf("%d previewers, %d errors (%v); want 1 and 1 (the broken taesd3)", len(pv), len(errs), errs)
	}
	xl := LatentFormat{Channels: 32, Factor: 8, TAESD: "taesdxl_decoder.safetensors"}
	if img := pv.Preview(xl, make([]float32, 32*4*4), []int{1, 32, 4, 4}, 0); img == nil || img.Bounds().Dx() != 32 {
		t.Errorf("SDXL-format preview: %v, want a 32x32 image", img)
	}
	if img := pv.Preview(DefaultModelFormat(), make([]float32, 4*4*4), []int{1, 4, 4, 4}, 0); img != nil {
		t.Error("an SD1-format preview without taesd_decoder did not fall back")
	}
}
