package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
	"github.com/darkroom-ai/darkroom/engine/models/mmdit"
	"github.com/darkroom-ai/darkroom/engine/models/nextdit"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// BenchResult is the outcome of one benchmark: every timed run, in order.
type BenchResult struct {
	Name  string
	Runs  []time.Duration
	Warm  time.Duration // the untimed first run (allocations, caches)
	Notes string
}

// Median returns the median timed run.
func (r BenchResult) Median() time.Duration {
	s := slices.Clone(r.Runs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// SD15VAE is the SD1.x autoencoder configuration (for benchmarks).
func SD15VAE() vae.Config {
	return vae.Config{Channels: 128, ChannelMult: []int{1, 2, 4, 4}, NumResBlocks: 2, ZChannels: 4, InChannels: 3, HasEncoder: false, ScalingFactor: vae.SD1ScalingFactor, QuantConvs: true}
}

func randomValues(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// BenchUNets are the UNet configurations BenchUNetStep times, by name.
var BenchUNets = map[string]struct {
	Label  string
	Config func() unet.Config
}{
	"sd15": {"SD1.5", unet.SD15},
	"sdxl": {"SDXL", unet.SDXL},
}

// BenchUNetStep times a UNet with random weights (arch: a BenchUNets name,
// "sd15" or "sdxl") on dev for a latent of width/8 × height/8 and the
// given batch (2 = one CFG step), runs times after one warm-up run. It
// checks the output is finite.
func BenchUNetStep(ctx context.Context, dev backend.Device, arch string, width, height, batch, runs int) (BenchResult, error) {
	spec, ok := BenchUNets[arch]
	if !ok {
		return BenchResult{}, fmt.Errorf("bench: unknown UNet %q (want sd15 or sdxl)", arch)
	}
	cfg := spec.Config()
	m := unet.Load(weights.NewRandomBuilder(dev, 1), cfg)
	r := rand.New(rand.NewPCG(1, 2))
	h, w := height/8, width/8
	x := dev.Upload(randomValues(r, batch*4*h*w), batch, 4, h, w)
	c := dev.Upload(randomValues(r, batch*77*cfg.ContextDim), batch, 77, cfg.ContextDim)
	var y *backend.Tensor
	if cfg.ADMInChannels > 0 {
		y = dev.Upload(randomValues(r, batch*cfg.ADMInChannels), batch, cfg.ADMInChannels)
	}
	ts := make([]float32, batch)
	for i := range ts {
		ts[i] = 500
	}
	res := BenchResult{Name: fmt.Sprintf("%s UNet step %dx%d batch %d", spec.Label, width, height, batch)}
	host, err := timeSteps(ctx, dev, &res, runs, "UNet", func() (*backend.Tensor, error) {
		return m.Forward(ctx, dev, x, ts, c, y)
	})
	if err != nil {
		return res, err
	}
	// The host's share: how long queueing the step took before the wait.
	res.Notes = unetNotes(dev, BenchResult{Runs: host}.Median(), m.GraphStatus)
	return res, nil
}

// timeSteps runs step runs+1 times on dev, each until the device is idle:
// the first (allocations, caches, graph recording) is res.Warm and must
// give a finite output, the others go to res.Runs. It returns how long
// each timed call took to queue (the host's share).
func timeSteps(ctx context.Context, dev backend.Device, res *BenchResult, runs int, what string, step func() (*backend.Tensor, error)) ([]time.Duration, error) {
	var host []time.Duration
	for i := range runs + 1 {
		start := time.Now()
		out, err := step()
		if err != nil {
			return nil, err
		}
		if i > 0 {
			host = append(host, time.Since(start))
		}
		if err := dev.Sync(ctx); err != nil {
			return nil, err
		}
		el := time.Since(start)
		if i == 0 {
			resetProfile(dev)
			res.Warm = el
			v, err := dev.Download(out)
			if err != nil {
				return nil, err
			}
			for _, f := range v {
				if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
					return nil, fmt.Errorf("bench: non-finite %s output", what)
				}
			}
		} else {
			res.Runs = append(res.Runs, el)
		}
		dev.Free(out)
	}
	return host, nil
}

// unetNotes is the note of a UNet benchmark: the host's enqueue time and,
// on a device that records graphs (CUDA; not the CPU), the graphs' status.
func unetNotes(dev backend.Device, host time.Duration, graphStatus func() string) string {
	notes := fmt.Sprintf("host enqueue %v", host.Round(1e4))
	if _, ok := dev.(backend.GraphRecorder); ok {
		notes += "; " + graphStatus()
	}
	return notes
}

// resetProfile drops a profiling device's measurements of the warm-up run.
func resetProfile(dev backend.Device) {
	if p, ok := dev.(interface{ ResetProfile() }); ok {
		p.ResetProfile()
	}
}

// BenchVAEDecode times the SD1.x VAE decoder (random weights) producing a
// width × height image.
func BenchVAEDecode(ctx context.Context, dev backend.Device, width, height, runs int) (BenchResult, error) {
	m := vae.Load(weights.NewRandomBuilder(dev, 2), SD15VAE())
	r := rand.New(rand.NewPCG(3, 4))
	z := dev.Upload(randomValues(r, 4*(height/8)*(width/8)), 1, 4, height/8, width/8)
	res := BenchResult{Name: fmt.Sprintf("SD1.x VAE decode %dx%d", width, height)}
	for i := range runs + 1 {
		start := time.Now()
		out, err := m.Decode(ctx, dev, z)
		if err != nil {
			return res, err
		}
		if err := dev.Sync(ctx); err != nil {
			return res, err
		}
		if i == 0 {
			resetProfile(dev)
			res.Warm = time.Since(start)
		} else {
			res.Runs = append(res.Runs, time.Since(start))
		}
		dev.Free(out)
	}
	return res, nil
}

// SD35Config is the SD3.5 Large (8.1 B parameters) or Medium (2.5 B, with
// MMDiT-X blocks 0–12) transformer configuration, for benchmarks.
func SD35Config(variant string) (mmdit.Config, error) {
	c := mmdit.Config{InChannels: 16, OutChannels: 16, Patch: 2, HeadDim: 64, JointDim: 4096, PooledDim: 2048, TimeDim: 256,
		QKNorm: mmdit.RMSQKNorm}
	switch variant {
	case "large":
		c.Heads, c.Layers, c.PosEmbedMax = 38, 38, 192
	case "medium":
		c.Heads, c.Layers, c.PosEmbedMax = 24, 24, 384
		for i := range 13 {
			c.Dual = append(c.Dual, i)
		}
	default:
		return mmdit.Config{}, fmt.Errorf("SD3.5 variant %q: want large or medium", variant)
	}
	c.Width = c.Heads * c.HeadDim
	c.MLP = 4 * c.Width
	return c, nil
}

// BenchSD3Step times one SD3.5 (Large or Medium) transformer step with
// random weights on dev for a width × height image, batch rows (2: CFG)
// and textTokens text states (333: 77 CLIP + 256 T5), runs times after one
// warm-up run; it checks the output is finite.
func BenchSD3Step(ctx context.Context, dev backend.Device, variant string, width, height, batch, textTokens, runs int) (BenchResult, error) {
	cfg, err := SD35Config(variant)
	if err != nil {
		return BenchResult{}, err
	}
	m, err := mmdit.Load(weights.NewRandomBuilder(dev, 1), dev, cfg)
	if err != nil {
		return BenchResult{}, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	h, w := height/8, width/8
	x := dev.Upload(randomValues(r, batch*16*h*w), batch, 16, h, w)
	txt := dev.Upload(randomValues(r, batch*textTokens*cfg.JointDim), batch, textTokens, cfg.JointDim)
	pooled := dev.Upload(randomValues(r, batch*cfg.PooledDim), batch, cfg.PooledDim)
	ts := make([]float32, batch)
	for i := range ts {
		ts[i] = 500
	}
	res := BenchResult{Name: fmt.Sprintf("SD3.5 %s step %dx%d b%d + %d text tokens", variant, width, height, batch, textTokens)}
	_, err = timeSteps(ctx, dev, &res, runs, "SD3", func() (*backend.Tensor, error) {
		return m.Forward(ctx, dev, x, txt, pooled, ts, mmdit.ForwardOptions{})
	})
	return res, err
}

// FluxDevConfig is the FLUX.1-dev transformer configuration (12 B
// parameters), for benchmarks.
func FluxDevConfig() flux.Config {
	return flux.Config{InChannels: 64, OutChannels: 64, Width: 3072, Heads: 24, HeadDim: 128, JointDim: 4096, PooledDim: 768,
		TimeDim: 256, MLP: 12288, Layers: 19, SingleLayers: 38, Guidance: true, AxesDim: append([]int(nil), flux.DefaultAxesDim...)}
}

// BenchFluxStep times one FLUX.1-dev transformer step with random weights on
// dev for a width × height image (1024²: 4096 image tokens) and textTokens T5
// tokens (512), batch 1 with guidance 3.5, runs times after one warm-up run;
// it checks the output is finite.
func BenchFluxStep(ctx context.Context, dev backend.Device, width, height, textTokens, runs int) (BenchResult, error) {
	cfg := FluxDevConfig()
	m, err := flux.Load(weights.NewRandomBuilder(dev, 1), dev, cfg)
	if err != nil {
		return BenchResult{}, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	h, w := height/16, width/16
	img := dev.Upload(randomValues(r, h*w*cfg.InChannels), 1, h*w, cfg.InChannels)
	txt := dev.Upload(randomValues(r, textTokens*cfg.JointDim), 1, textTokens, cfg.JointDim)
	pooled := dev.Upload(randomValues(r, cfg.PooledDim), 1, cfg.PooledDim)
	imgIDs, txtIDs := flux.ImageIDs(2*h, 2*w), flux.TextIDs(textTokens)
	res := BenchResult{Name: fmt.Sprintf("Flux.1-dev step %dx%d + %d text tokens", width, height, textTokens)}
	_, err = timeSteps(ctx, dev, &res, runs, "Flux", func() (*backend.Tensor, error) {
		return m.Forward(ctx, dev, img, txt, pooled, []float32{0.5}, []float32{3.5}, imgIDs, txtIDs)
	})
	if err != nil {
		return res, err
	}
	return res, nil
}

// ZImageTurboConfig is the Z-Image Turbo transformer configuration (6.2 B
// parameters: width 3840, 30 layers, 2 + 2 refiners), for benchmarks.
func ZImageTurboConfig() nextdit.Config {
	return nextdit.Config{InChannels: 16, Patch: 2, Width: 3840, Heads: 30, HeadDim: 128, Layers: 30, Refiners: 2, FF: 10240,
		CapDim: 2560, AdaDim: 256, TimeMid: 1024, AxesDim: append([]int(nil), nextdit.DefaultAxesDim...), Theta: nextdit.DefaultTheta,
		TimeScale: nextdit.DefaultTimeScale, Eps: nextdit.DefaultEps, QKNorm: true}
}

// BenchZImageStep times one Z-Image Turbo transformer step with random
// weights on dev for a width × height image, batch rows (1: Turbo runs
// without CFG) and textTokens Qwen3 states, runs times after one warm-up
// run; it checks the output is finite.
func BenchZImageStep(ctx context.Context, dev backend.Device, width, height, batch, textTokens, runs int) (BenchResult, error) {
	cfg := ZImageTurboConfig()
	m, err := nextdit.Load(weights.NewRandomBuilder(dev, 1), dev, cfg)
	if err != nil {
		return BenchResult{}, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	h, w := height/8, width/8
	x := dev.Upload(randomValues(r, batch*16*h*w), batch, 16, h, w)
	txt := dev.Upload(randomValues(r, batch*textTokens*cfg.CapDim), batch, textTokens, cfg.CapDim)
	ts := make([]float32, batch)
	for i := range ts {
		ts[i] = 0.5
	}
	res := BenchResult{Name: fmt.Sprintf("Z-Image Turbo step %dx%d b%d + %d text tokens", width, height, batch, textTokens)}
	_, err = timeSteps(ctx, dev, &res, runs, "Z-Image", func() (*backend.Tensor, error) {
		return m.Forward(ctx, dev, x, txt, ts)
	})
	return res, err
}

// QwenImageConfig is the Qwen-Image transformer configuration (20 B
// parameters: 60 double-stream blocks at width 3072), for benchmarks.
func QwenImageConfig() flux.Config {
	return flux.Config{Qwen: true, InChannels: 64, OutChannels: 64, Width: 3072, Heads: 24, HeadDim: 128, JointDim: 3584, TimeDim: 256,
		MLP: 12288, Layers: 60, AxesDim: append([]int(nil), flux.QwenAxesDim...)}
}

// BenchQwenImageStep times one Qwen-Image transformer step with random
// weights on dev for a width × height image, batch rows (2: true CFG runs
// the prompt and the negative prompt together) and textTokens Qwen2.5-VL
// states, runs times after one warm-up run; it checks the output is
// finite.
func BenchQwenImageStep(ctx context.Context, dev backend.Device, width, height, batch, textTokens, runs int) (BenchResult, error) {
	cfg := QwenImageConfig()
	m, err := flux.Load(weights.NewRandomBuilder(dev, 1), dev, cfg)
	if err != nil {
		return BenchResult{}, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	h, w := height/16, width/16
	img := dev.Upload(randomValues(r, batch*h*w*cfg.InChannels), batch, h*w, cfg.InChannels)
	txt := dev.Upload(randomValues(r, batch*textTokens*cfg.JointDim), batch, textTokens, cfg.JointDim)
	imgIDs, txtIDs := flux.QwenIDs(h, w, textTokens)
	ts := make([]float32, batch)
	for i := range ts {
		ts[i] = 0.5
	}
	res := BenchResult{Name: fmt.Sprintf("Qwen-Image step %dx%d b%d + %d text tokens", width, height, batch, textTokens)}
	_, err = timeSteps(ctx, dev, &res, runs, "Qwen-Image", func() (*backend.Tensor, error) {
		return m.Forward(ctx, dev, img, txt, nil, ts, nil, imgIDs, txtIDs)
	})
	return res, err
}
