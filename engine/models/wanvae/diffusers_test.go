package wanvae_test

import (
	"context"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

const fixture = "qwenimage-vae"

// TestMatchesDiffusers decodes and encodes the fixture's cases with the
// tiny random AutoencoderKLQwenImage of tools/reference/gen_wanvae_fixtures.py
// in diffusers' names and in the Wan names, and compares with diffusers.
func TestMatchesDiffusers(t *testing.T) {
	if !testref.Exists(fixture, "vae.safetensors") {
		t.Fatalf("no fixture %s", testref.Path(fixture))
	}
	f, err := safetensors.Open(testref.Path(fixture, "vae.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fx := testref.Tensors(t, fixture+"/cases.safetensors")
	dev := cpu.New()
	var outs [][]float32
	for _, tc := range []struct {
		name string
		src  weights.Source
	}{
		{"diffusers", f},
		{"wan", rename(f, func(n string) string { return wanName(n, 1) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := load(t, tc.src, "", dev)
			t.Logf("config: %s", m.Config)
			ctx := context.Background()
			check := func(what string, got *backend.Tensor, want string, shape string) []float32 {
				t.Helper()
				if got.Shape.String() != shape {
					t.Fatalf("%s: shape %v, want %s", what, got.Shape, shape)
				}
				v, err := dev.Download(got)
				if err != nil {
					t.Fatal(err)
				}
				e := testref.RelErr(v, fx[want])
				t.Logf("%s: relative error %.3g", what, e)
				if !(e <= 1e-4) {
					t.Errorf("%s: relative error %.3g > 1e-4", what, e)
				}
				return v
			}
			// Decode from sampler latents (the pipeline's de-normalisation
			// included) and from VAE latents.
			img, err := m.Decode(ctx, dev, dev.Upload(fx["dec_latents"], 2, 16, 6, 5))
			if err != nil {
				t.Fatal(err)
			}
			px := check("decode", img, "dec_image", "[2 3 48 40]")
			unit := func(v []float32) []float32 {
				out := make([]float32, len(v))
				for i, x := range v {
					out[i] = x*0.5 + 0.5
				}
				return out
			}
			p := testref.PSNR(unit(px), unit(fx["dec_image"]))
			t.Logf("decode: PSNR %.1f dB", p)
			if p < 45 {
				t.Errorf("decoded image PSNR %.1f dB < 45", p)
			}
			raw, err := m.DecodeRaw(ctx, dev, dev.Upload(fx["dec_z"], 2, 16, 6, 5))
			if err != nil {
				t.Fatal(err)
			}
			check("decode raw", raw, "dec_image", "[2 3 48 40]")

			image := dev.Upload(fx["enc_image"], 2, 3, 48, 40)
			mom, err := m.Moments(ctx, dev, image)
			if err != nil {
				t.Fatal(err)
			}
			check("moments", mom, "enc_moments", "[2 32 6 5]")
			mean, err := m.EncodeRaw(ctx, dev, image)
			if err != nil {
				t.Fatal(err)
			}
			check("encode raw (mean)", mean, "enc_mean", "[2 16 6 5]")
			lat, err := m.Encode(ctx, dev, image)
			if err != nil {
				t.Fatal(err)
			}
			lv := check("encode (normalised)", lat, "enc_latents", "[2 16 6 5]")
			outs = append(outs, append(px, lv...))
		})
	}
	if len(outs) == 2 && !slices.Equal(outs[0], outs[1]) {
		t.Errorf("the Wan names give other outputs than diffusers' names")
	}
}
