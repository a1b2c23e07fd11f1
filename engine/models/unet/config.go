// Package unet implements the LDM UNet denoiser of Stable Diffusion 1.x (and,
// through config fields, its SD2-style variants): residual blocks with a
// timestep embedding, spatial transformers with cross-attention, skip
// connections between the down and up paths.
//
// Tensor names are the canonical single-file (LDM) names under
// "model.diffusion_model."; diffusers names are converted by weights/keymap.
package unet

import (
	"fmt"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Config describes a UNet; every field is inferred from tensor shapes except
// the head count, which SD1 fixes at 8.
type Config struct {
	InChannels    int
	OutChannels   int
	ModelChannels int
	// ChannelMult multiplies ModelChannels per resolution level.
	ChannelMult []int
	// NumResBlocks is the number of residual blocks per level on the down
	// path (the up path has one more).
	NumResBlocks int
	// Attention says which levels carry spatial transformers.
	Attention []bool
	// Depth is the number of transformer blocks per attention level; MidDepth
	// is the middle block's.
	Depth    []int
	MidDepth int
	// ContextDim is the width of the cross-attention context (CLIP width).
	ContextDim int
	// Heads is a fixed number of attention heads per transformer (SD1: 8).
	// When HeadDim is set instead, heads = channels / HeadDim (SD2: 64).
	Heads   int
	HeadDim int
	// LinearProj is true when proj_in/proj_out are linear layers (SD2)
	// rather than 1×1 convolutions (SD1).
	LinearProj bool
	// TimeEmbedDim is the width of the timestep embedding MLP (4·ModelChannels).
	TimeEmbedDim int
	// ADMInChannels is the width of the extra vector input y (label_emb,
	// SDXL's pooled text embedding and size embeddings: 2816 for the base,
	// 2560 for the refiner), or 0 when the UNet takes none.
	ADMInChannels int
}

// SD2HeadDim is the attention head width of the UNets with linear
// projections (SD2.x, SDXL), which shapes cannot tell; ComfyUI assumes the
// same (num_head_channels 64).
const SD2HeadDim = 64

// SD1Heads is the SD1.x convention for attention heads, which shapes cannot tell.
const SD1Heads = 8

// headsFor returns the number of heads for a transformer of ch channels.
func (c Config) headsFor(ch int) int {
	if c.HeadDim > 0 {
		return ch / c.HeadDim
	}
	return c.Heads
}

// String is a one-line summary.
func (c Config) String() string {
	var attn []string
	for i, a := range c.Attention {
		if a {
			attn = append(attn, fmt.Sprint(i))
		}
	}
	heads := fmt.Sprintf("%d heads", c.Heads)
	if c.HeadDim > 0 {
		heads = fmt.Sprintf("head dim %d", c.HeadDim)
	}
	s := fmt.Sprintf("channels %d × %v, %d res blocks/level, attention at levels [%s] depth %v (mid %d), context %d, %s, in %d, out %d",
		c.ModelChannels, c.ChannelMult, c.NumResBlocks, strings.Join(attn, " "), c.Depth, c.MidDepth, c.ContextDim, heads, c.InChannels, c.OutChannels)
	if c.ADMInChannels > 0 {
		s += fmt.Sprintf(", adm %d", c.ADMInChannels)
	}
	return s
}

// Levels returns the number of resolution levels.
func (c Config) Levels() int { return len(c.ChannelMult) }

// ConfigFromWeights infers the UNet configuration from the tensor shapes
// under prefix (usually "model.diffusion_model.").
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	has := func(name string) bool { return shape(name) != nil }

	convIn := shape("input_blocks.0.0.weight")
	if len(convIn) != 4 {
		return Config{}, fmt.Errorf("unet: no %sinput_blocks.0.0.weight", prefix)
	}
	c := Config{ModelChannels: convIn[0], InChannels: convIn[1], Heads: SD1Heads}
	if s := shape("out.2.weight"); len(s) == 4 {
		c.OutChannels = s[0]
	} else {
		return Config{}, fmt.Errorf("unet: no %sout.2.weight", prefix)
	}
	if s := shape("time_embed.0.weight"); len(s) == 2 {
		c.TimeEmbedDim = s[0]
	} else {
		return Config{}, fmt.Errorf("unet: no %stime_embed.0.weight", prefix)
	}

	// Walk the down path: residual blocks, optional transformers, and a
	// downsampler closing every level but the last.
	resInLevel := 0
	levelAttn, levelDepth := false, 0
	ch := c.ModelChannels
	closeLevel := func() error {
		if len(c.ChannelMult) == 0 {
			c.NumResBlocks = resInLevel
		} else if resInLevel != c.NumResBlocks {
			return fmt.Errorf("unet: level %d has %d res blocks, level 0 has %d", len(c.ChannelMult), resInLevel, c.NumResBlocks)
		}
		if ch%c.ModelChannels != 0 {
			return fmt.Errorf("unet: level channels %d not a multiple of %d", ch, c.ModelChannels)
		}
		c.ChannelMult = append(c.ChannelMult, ch/c.ModelChannels)
		c.Attention = append(c.Attention, levelAttn)
		c.Depth = append(c.Depth, levelDepth)
		resInLevel, levelAttn, levelDepth = 0, false, 0
		return nil
	}
	i := 1
	for ; has(fmt.Sprintf("input_blocks.%d.0.weight", i)) || has(fmt.Sprintf("input_blocks.%d.0.op.weight", i)) || has(fmt.Sprintf("input_blocks.%d.0.in_layers.0.weight", i)); i++ {
		if has(fmt.Sprintf("input_blocks.%d.0.op.weight", i)) {
			if err := closeLevel(); err != nil {
				return Config{}, err
			}
			continue
		}
		out := shape(fmt.Sprintf("input_blocks.%d.0.out_layers.3.weight", i))
		if len(out) != 4 {
			return Config{}, fmt.Errorf("unet: input block %d is neither a res block nor a downsampler", i)
		}
		ch = out[0]
		resInLevel++
		if pin := shape(fmt.Sprintf("input_blocks.%d.1.proj_in.weight", i)); pin != nil {
			levelAttn = true
			c.LinearProj = len(pin) == 2
			d := countBlocks(has, fmt.Sprintf("input_blocks.%d.1.transformer_blocks.", i))
			if levelDepth != 0 && d != levelDepth {
				return Config{}, fmt.Errorf("unet: input block %d has transformer depth %d, its level %d", i, d, levelDepth)
			}
			levelDepth = d
			if k := shape(fmt.Sprintf("input_blocks.%d.1.transformer_blocks.0.attn2.to_k.weight", i)); len(k) == 2 {
				c.ContextDim = k[1]
			}
		}
	}
	if resInLevel == 0 {
		return Config{}, fmt.Errorf("unet: no residual blocks found under %sinput_blocks", prefix)
	}
	if err := closeLevel(); err != nil {
		return Config{}, err
	}
	if has("middle_block.1.proj_in.weight") {
		c.MidDepth = countBlocks(has, "middle_block.1.transformer_blocks.")
		if k := shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight"); len(k) == 2 {
			c.ContextDim = k[1]
		}
	}
	if c.ContextDim == 0 {
		return Config{}, fmt.Errorf("unet: no cross-attention found under %s", prefix)
	}
	if c.LinearProj {
		c.Heads, c.HeadDim = 0, SD2HeadDim
	}
	if s := shape("label_emb.0.0.weight"); s != nil {
		if len(s) != 2 || s[0] != c.TimeEmbedDim {
			return Config{}, fmt.Errorf("unet: %slabel_emb.0.0.weight has shape %v, want [%d, adm]", prefix, s, c.TimeEmbedDim)
		}
		c.ADMInChannels = s[1]
	}
	// The up path must mirror the down path.
	wantOut := c.Levels() * (c.NumResBlocks + 1)
	if !has(fmt.Sprintf("output_blocks.%d.0.in_layers.0.weight", wantOut-1)) || has(fmt.Sprintf("output_blocks.%d.0.in_layers.0.weight", wantOut)) {
		return Config{}, fmt.Errorf("unet: expected %d output blocks", wantOut)
	}
	for lvl, mult := range c.ChannelMult {
		w := c.ModelChannels * mult
		if w%groups != 0 {
			return Config{}, fmt.Errorf("unet: level %d width %d is not a multiple of the %d GroupNorm groups", lvl, w, groups)
		}
		if c.Attention[lvl] && (c.headsFor(w) == 0 || w%c.headsFor(w) != 0) {
			return Config{}, fmt.Errorf("unet: level %d width %d does not split into %d attention heads", lvl, w, c.headsFor(w))
		}
	}
	return c, nil
}

func countBlocks(has func(string) bool, prefix string) int {
	n := 0
	for has(fmt.Sprintf("%s%d.norm1.weight", prefix, n)) {
		n++
	}
	return n
}

// SD15 is the Stable Diffusion 1.5 UNet configuration, as ConfigFromWeights
// infers it from the released checkpoint. Tests and benchmarks use it to
// build full-size models with random weights.
func SD15() Config {
	return Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 320,
		ChannelMult:  []int{1, 2, 4, 4},
		NumResBlocks: 2,
		Attention:    []bool{true, true, true, false},
		Depth:        []int{1, 1, 1, 0},
		MidDepth:     1,
		ContextDim:   768,
		Heads:        SD1Heads,
		TimeEmbedDim: 1280,
	}
}

// SDXL is the SDXL 1.0 base UNet configuration, as ConfigFromWeights
// infers it from the released checkpoint (benchmarks, random-weight tests).
func SDXL() Config {
	return Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 320,
		ChannelMult:   []int{1, 2, 4},
		NumResBlocks:  2,
		Attention:     []bool{false, true, true},
		Depth:         []int{0, 2, 10},
		MidDepth:      10,
		ContextDim:    2048,
		HeadDim:       SD2HeadDim,
		LinearProj:    true,
		TimeEmbedDim:  1280,
		ADMInChannels: 2816,
	}
}
