package vae_test

import (
	"context"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

const prefix = "first_stage_model."

func load(t *testing.T) (*vae.Model, *cpu.Device) {
	t.Helper()
	src, err := safetensors.Open(testref.Path("sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	c, err := vae.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := "channels 32 × [1 1 2 2], 2 res blocks/level, 4 latent channels, factor 8, scaling 0.18215"
	if c.String() != want {
		t.Fatalf("config\n got %s\nwant %s", c, want)
	}
	dev := cpu.New()
	b := weights.NewBuilder(src, dev)
	m := vae.Load(b.Sub("first_stage_model"), c)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(prefix); len(unused) > 0 {
		t.Errorf("unused tensors: %v", unused)
	}
	return m, dev
}

// TestDecodeMatchesDiffusers decodes each case's final latent and compares
// with diffusers' image (HWC in 0..1, before 8-bit rounding).
func TestDecodeMatchesDiffusers(t *testing.T) {
	m, dev := load(t)
	for _, tc := range []struct {
		name string
		h, w int
	}{{"a_euler_karras", 64, 64}, {"a_dpmpp2m_karras", 64, 96}} {
		t.Run(tc.name, func(t *testing.T) {
			fx := testref.Tensors(t, tc.name+".safetensors")
			lat := dev.Upload(fx["final_latent"], 1, 4, tc.h/8, tc.w/8)
			img, err := m.Decode(context.Background(), dev, lat)
			if err != nil {
				t.Fatal(err)
			}
			px, _ := dev.Download(img)
			// CHW [-1,1] -> HWC [0,1], clamped as diffusers does.
			plane := tc.h * tc.w
			got := make([]float32, 3*plane)
			for c := range 3 {
				for i := range plane {
					got[i*3+c] = min(max(px[c*plane+i]*0.5+0.5, 0), 1)
				}
			}
			want := fx["image"]
			e := testref.RelErr(got, want)
			p := testref.PSNR(got, want)
			t.Logf("image: relative error %.3g, PSNR %.1f dB", e, p)
			if e > 1e-4 {
				t.Errorf("image relative error %.3g > 1e-4", e)
			}
		})
	}
}

// TestEncodeShape checks the encoder's output geometry, including the
// asymmetric padding of its stride-2 downsamplers on a non-square image.
func TestEncodeShape(t *testing.T) {
	m, dev := load(t)
	img := dev.Alloc(1, 3, 64, 96)
	lat, err := m.Encode(context.Background(), dev, img)
	if err != nil {
		t.Fatal(err)
	}
	if lat.Shape.String() != "[1 4 8 12]" {
		t.Fatalf("latent shape %v", lat.Shape)
	}
}
