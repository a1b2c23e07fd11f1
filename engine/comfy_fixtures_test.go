package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// TestComfyCases runs every case of testdata/reference/comfy_cases.json —
// made by ComfyUI's own sampling code driving the tiny model's networks
// (tools/reference/gen_comfy_fixtures.py) — with the default conventions and
// no sigma override, and compares the text conditioning and the sigmas
// (1e-6 relative per value), every per-step latent and model estimate and
// the final latent (1e-4 relative) and the decoded image (≥ 45 dB).
func TestComfyCases(t *testing.T) {
	if !testref.Exists("comfy_cases.json") || !testref.Exists("comfy_cases.safetensors") {
		t.Skip("testdata/reference/comfy_cases.{json,safetensors} absent: make them with tools/reference/gen_comfy_fixtures.py (tools/reference/README.md)")
	}
	data, err := os.ReadFile(testref.Path("comfy_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []refCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("comfy_cases.json: %v", err)
	}
	if len(cases) == 0 {
		t.Fatal("comfy_cases.json lists no case")
	}
	fx := testref.Tensors(t, "comfy_cases.safetensors")
	ctx := context.Background()
	m, err := Load(ctx, layouts[0].path, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			want := func(k string) []float32 {
				t.Helper()
				v, ok := fx[c.Name+"/"+k]
				if !ok {
					t.Fatalf("comfy_cases.safetensors lacks %s/%s", c.Name, k)
				}
				return v
			}
			cond, err := m.EncodePrompt(ctx, c.Prompt, 1)
			if err != nil {
				t.Fatal(err)
			}
			uncond, err := m.EncodePrompt(ctx, c.Negative, 1)
			if err != nil {
				t.Fatal(err)
			}
			gc, _ := cond.Values(m.dev)
			gu, _ := uncond.Values(m.dev)
			check(t, "prompt_embeds", gc, want("prompt_embeds"), 1e-4)
			check(t, "negative_embeds", gu, want("negative_embeds"), 1e-4)

			shape := []int{1, 4, c.Height / 8, c.Width / 8}
			n := shape[1] * shape[2] * shape[3]
			noise := rng.NewTorch(c.Seed).Randn(n)
			check(t, "noise", noise, want("noise"), 0)

			// The sigmas Sample computes for these parameters.
			sig, err := sampling.SamplerSigmas(c.Sampler, c.Scheduler, m.c.Sampling.Schedule(ConventionComfy), c.Steps)
			if err != nil {
				t.Fatal(err)
			}
			wantSig := want("sigmas")
			checkSigmas(t, sig, wantSig)
			steps := len(wantSig) - 1 // ComfyUI's ddim_uniform may make one more step

			var lats, dens [][]float32
			lat, err := m.Sample(ctx, SampleParams{Cond: cond, Uncond: uncond, CFG: c.CFG, Sampler: c.Sampler,
				Scheduler: c.Scheduler, Steps: c.Steps, Seed: c.Seed, Noise: noise, Shape: shape},
				func(ev Event) {
					if ev.Phase == PhaseSample {
						lats = append(lats, ev.Latent)
						dens = append(dens, ev.Denoised)
					}
				})
			if err != nil {
				t.Fatal(err)
			}
			if len(lats) != steps {
				t.Fatalf("%d step events, want %d", len(lats), steps)
			}
			wl, wd := want("latents"), want("denoised")
			if len(wl) != steps*n || len(wd) != steps*n {
				t.Fatalf("fixture latents/denoised hold %d/%d values, want %d", len(wl), len(wd), steps*n)
			}
			for i := range steps {
				check(t, fmt.Sprintf("latent after step %d", i), lats[i], wl[i*n:(i+1)*n], 1e-4)
				check(t, fmt.Sprintf("denoised at step %d", i), dens[i], wd[i*n:(i+1)*n], 1e-4)
			}
			check(t, "final_latent", lat, want("final_latent"), 1e-4)
			px, err := m.Decode(ctx, lat, shape)
			if err != nil {
				t.Fatal(err)
			}
			if p := testref.PSNR(chwToHWC(px, c.Height, c.Width), want("image")); p < 45 {
				t.Errorf("image PSNR %.1f dB < 45", p)
			} else {
				t.Logf("image PSNR %.1f dB, final latent rel err %.2g", p, testref.RelErr(lat, want("final_latent")))
			}
		})
	}
}

// checkSigmas compares schedules value by value: each within 1e-6 of the
// reference relative to it, and zero exactly where the reference is zero.
func checkSigmas(t *testing.T, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("sigmas: %d values %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if !(math.Abs(g-w) <= 1e-6*math.Abs(w)) {
			t.Errorf("sigma[%d] = %.9g, want %.9g (rel err %.2g)", i, g, w, math.Abs(g-w)/math.Abs(w))
		}
	}
}
