package keymap

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// sortedKeys returns the names of a testdata/*.keys file, sorted.
func sortedKeys(t *testing.T, path string) []string {
	t.Helper()
	m := readKeys(t, path)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// withPrefix returns names with p put in front (p "") or cut off (cut).
func withPrefix(names []string, p string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}

func cutPrefix(t *testing.T, names []string, p string) []string {
	t.Helper()
	out := make([]string, len(names))
	for i, n := range names {
		rest, ok := strings.CutPrefix(n, p)
		if !ok {
			t.Fatalf("%q lacks prefix %q", n, p)
		}
		out[i] = rest
	}
	return out
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// sd15 holds the canonical names of an SD1.5 checkpoint, per component.
type sd15 struct{ unet, vae, clip []string }

func loadSD15(t *testing.T) sd15 {
	return sd15{
		unet: sortedKeys(t, "testdata/sd15_unet.keys"),
		vae:  sortedKeys(t, "testdata/sd15_vae.keys"),
		clip: sortedKeys(t, "testdata/sd15_clip.keys"),
	}
}

// checkRenames checks the invariants of every conversion: one Rename per
// stored name, in order, and no two names on one canonical name.
func checkRenames(t *testing.T, names []string, got []Rename) map[string]Rename {
	t.Helper()
	if len(got) != len(names) {
		t.Fatalf("%d renames for %d names", len(got), len(names))
	}
	byFrom := map[string]Rename{}
	to := map[string]string{}
	for i, r := range got {
		if r.From != names[i] {
			t.Fatalf("rename %d is from %q, want %q", i, r.From, names[i])
		}
		if r.To == "" {
			t.Errorf("%q renamed to nothing", r.From)
		}
		if prev, dup := to[r.To]; dup {
			t.Errorf("%q and %q both map to %q", prev, r.From, r.To)
		}
		to[r.To] = r.From
		byFrom[r.From] = r
	}
	return byFrom
}

// TestLayouts is the table of file layouts darkroom reads, each with what
// DetectComponent must find and the exact canonical names of
// representative tensors after SingleFile. whole, when set, is the exact
// canonical name set SingleFile must produce (markers included).
func TestLayouts(t *testing.T) {
	sd := loadSD15(t)
	full := concat(sd.unet, sd.vae, sd.clip)
	unetBare := cutPrefix(t, sd.unet, UNetPrefix)
	vaeBare := cutPrefix(t, sd.vae, VAEPrefix)
	clipHF := cutPrefix(t, sd.clip, "cond_stage_model.transformer.")
	clipBare := cutPrefix(t, sd.clip, CLIPPrefix)
	diffUNet := diffusersUNetNames(unetConfig{channels: []int{320, 640, 1280, 1280}, attn: []bool{true, true, true, false}, nRes: 2})
	diffVAE := diffusersVAENames([]int{128, 256, 512, 512}, 2, false)
	clipG := diffusersCLIPNames(2)
	openCLIPG := []string{"transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.ln_1.weight", "token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection", "logit_scale"}
	const (
		tok    = CLIPPrefix + "embeddings.token_embedding.weight"
		fc1    = CLIPPrefix + "encoder.layers.11.mlp.fc1.bias"
		posIDs = CLIPPrefix + "embeddings.position_ids"
		in0    = UNetPrefix + "input_blocks.0.0.weight"
		out2   = UNetPrefix + "out.2.bias"
		q      = VAEPrefix + "decoder.mid.attn_1.q.weight"
		postQ  = VAEPrefix + "post_quant_conv.weight"
	)
	cases := []struct {
		name    string
		names   []string
		kind    Component
		wrapper string
		spots   map[string]string // stored -> canonical
		conv    []string          // stored names presented as 1x1 convolutions
		whole   []string
		widths  map[string]int // stored 2-D token embeddings [49408, width] (nil: no shapes)
		slot    string         // the Slot ComponentFile names ("none": ErrNoSlot; "": the kind's default)
	}{
		{
			name:  "A1111 checkpoint with training leftovers",
			names: concat(full, []string{"alphas_cumprod", "model_ema.decay", "model_ema.num_updates"}),
			kind:  ComponentCheckpoint,
			spots: map[string]string{in0: in0, tok: tok, "alphas_cumprod": "alphas_cumprod", "model_ema.decay": "model_ema.decay"},
			conv:  []string{q},
			whole: concat(full, []string{"alphas_cumprod", "model_ema.decay", "model_ema.num_updates"}),
		},
		{
			name:  "ComfyUI CheckpointSave: position_ids and prediction markers",
			names: concat(full, []string{posIDs, "v_pred", "ztsnr"}),
			kind:  ComponentCheckpoint,
			spots: map[string]string{posIDs: posIDs, "v_pred": "v_pred", "ztsnr": "ztsnr", fc1: fc1},
			whole: concat(full, []string{posIDs, "v_pred", "ztsnr"}),
		},
		{
			name:  "ComfyUI save before text_projection and logit_scale were popped; EDM markers",
			names: concat(full, []string{TextProjection, LogitScale, "edm_vpred.sigma_max", "edm_vpred.sigma_min"}),
			kind:  ComponentCheckpoint,
			spots: map[string]string{TextProjection: TextProjection, LogitScale: LogitScale, "edm_vpred.sigma_max": "edm_vpred.sigma_max"},
		},
		{
			name:  "ComfyUI state dict names: clip_l.",
			names: concat(sd.unet, sd.vae, withPrefix(clipHF, "clip_l.transformer."), []string{"clip_l.transformer.text_projection.weight", "clip_l.logit_scale"}),
			kind:  ComponentCheckpoint,
			spots: map[string]string{
				"clip_l.transformer.text_model.embeddings.token_embedding.weight": tok,
				"clip_l.transformer.text_model.encoder.layers.11.mlp.fc1.bias":    fc1,
				"clip_l.transformer.text_projection.weight":                       TextProjection,
				"clip_l.logit_scale": LogitScale,
				in0:                  in0,
			},
			whole: concat(full, []string{TextProjection, LogitScale}),
		},
		{
			name:  "clip_l beside clip_g (SDXL) is not the SD1 text encoder",
			names: []string{UNetPrefix + "label_emb.0.0.weight", in0, "clip_l.transformer.text_model.final_layer_norm.weight", "clip_g.transformer.text_model.final_layer_norm.weight"},
			kind:  ComponentCheckpoint,
			spots: map[string]string{"clip_l.transformer.text_model.final_layer_norm.weight": "clip_l.transformer.text_model.final_layer_norm.weight"},
		},
		{
			name:  "CLIP saved by old transformers without text_model.",
			names: concat(sd.unet, sd.vae, withPrefix(clipBare, "cond_stage_model.transformer.")),
			kind:  ComponentCheckpoint,
			spots: map[string]string{"cond_stage_model.transformer.embeddings.token_embedding.weight": tok},
			whole: full,
		},
		{
			name:  "SDXL checkpoint keeps its names",
			names: []string{UNetPrefix + "label_emb.0.0.weight", in0, "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "conditioner.embedders.1.model.ln_final.weight", VAEPrefix + "encoder.conv_in.weight"},
			kind:  ComponentCheckpoint,
			spots: map[string]string{"conditioner.embedders.1.model.ln_final.weight": "conditioner.embedders.1.model.ln_final.weight"},
		},
		{
			name:  "ComfyUI ModelSave: canonical UNet alone, v_pred",
			names: concat(sd.unet, []string{"v_pred"}),
			kind:  ComponentDiffusionModel,
			spots: map[string]string{in0: in0, "v_pred": "v_pred"},
			whole: concat(sd.unet, []string{"v_pred"}),
		},
		{
			name:  "ComfyUI diffusion_models file: bare LDM UNet",
			names: unetBare,
			kind:  ComponentDiffusionModel,
			spots: map[string]string{"input_blocks.0.0.weight": in0, "out.2.bias": out2, "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": UNetPrefix + "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight", "time_embed.2.weight": UNetPrefix + "time_embed.2.weight"},
			whole: sd.unet,
		},
		{
			name:  "bare LDM UNet with ComfyUI's scaled fp8 marker",
			names: concat(unetBare, []string{"scaled_fp8", "input_blocks.1.1.proj_in.scale_weight"}),
			kind:  ComponentDiffusionModel,
			spots: map[string]string{"scaled_fp8": UNetPrefix + "scaled_fp8", "input_blocks.1.1.proj_in.scale_weight": UNetPrefix + "input_blocks.1.1.proj_in.scale_weight"},
		},
		{
			name:  "bare LDM UNet with markers",
			names: concat(unetBare, []string{"v_pred", "ztsnr"}),
			kind:  ComponentDiffusionModel,
			spots: map[string]string{"middle_block.1.proj_in.weight": UNetPrefix + "middle_block.1.proj_in.weight", "v_pred": "v_pred", "ztsnr": "ztsnr"},
			whole: concat(sd.unet, []string{"v_pred", "ztsnr"}),
		},
		{
			name:  "diffusers UNet file",
			names: diffUNet,
			kind:  ComponentDiffusionModel,
			spots: map[string]string{"down_blocks.0.downsamplers.0.conv.weight": UNetPrefix + "input_blocks.3.0.op.weight", "up_blocks.1.upsamplers.0.conv.weight": UNetPrefix + "output_blocks.5.2.conv.weight", "conv_in.weight": in0},
			whole: sd.unet,
		},
		{
			name:    "EMA export: model.model.diffusion_model.",
			names:   withPrefix(sd.unet, "model."),
			kind:    ComponentDiffusionModel,
			wrapper: "model.",
			spots:   map[string]string{"model." + in0: in0, "model." + out2: out2},
			whole:   sd.unet,
		},
		{
			name:    "checkpoint wrapped in model.",
			names:   withPrefix(concat(full, []string{"v_pred"}), "model."),
			kind:    ComponentCheckpoint,
			wrapper: "model.",
			spots:   map[string]string{"model." + tok: tok, "model." + q: q, "model.v_pred": "v_pred"},
			conv:    []string{"model." + q},
			whole:   concat(full, []string{"v_pred"}),
		},
		{
			name:    "torch DDP: module. on a bare UNet",
			names:   withPrefix(unetBare, "module."),
			kind:    ComponentDiffusionModel,
			wrapper: "module.",
			spots:   map[string]string{"module.input_blocks.0.0.weight": in0},
			whole:   sd.unet,
		},
		{
			name:    "torch.compile: _orig_mod. on a diffusers UNet",
			names:   withPrefix(diffUNet, "_orig_mod."),
			kind:    ComponentDiffusionModel,
			wrapper: "_orig_mod.",
			spots:   map[string]string{"_orig_mod.down_blocks.2.resnets.1.time_emb_proj.bias": UNetPrefix + "input_blocks.8.0.emb_layers.1.bias"},
			whole:   sd.unet,
		},
		{
			name:    "nested wrappers: module._orig_mod. on a checkpoint",
			names:   withPrefix(full, "module._orig_mod."),
			kind:    ComponentCheckpoint,
			wrapper: "module._orig_mod.",
			spots:   map[string]string{"module._orig_mod." + postQ: postQ},
			whole:   full,
		},
		{
			name:  "a wrapper missing from one name is not stripped",
			names: concat(withPrefix(unetBare, "module."), []string{"v_pred"}),
			kind:  ComponentUnknown,
			spots: map[string]string{"module.input_blocks.0.0.weight": "module.input_blocks.0.0.weight", "v_pred": "v_pred"},
		},
		{
			name:  "bare LDM VAE (ComfyUI VAESave, vae-ft-mse)",
			names: vaeBare,
			kind:  ComponentVAE,
			spots: map[string]string{"decoder.mid.attn_1.q.weight": q, "post_quant_conv.weight": postQ, "encoder.down.1.block.0.nin_shortcut.weight": VAEPrefix + "encoder.down.1.block.0.nin_shortcut.weight"},
			conv:  []string{"decoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.weight"},
			whole: sd.vae,
		},
		{
			name:  "VAE extracted with first_stage_model.",
			names: sd.vae,
			kind:  ComponentVAE,
			spots: map[string]string{q: q},
			conv:  []string{q},
			whole: sd.vae,
		},
		{
			name:  "diffusers VAE file",
			names: diffVAE,
			kind:  ComponentVAE,
			spots: map[string]string{"decoder.up_blocks.0.resnets.2.conv1.weight": VAEPrefix + "decoder.up.3.block.2.conv1.weight", "encoder.mid_block.attentions.0.to_q.weight": VAEPrefix + "encoder.mid.attn_1.q.weight"},
			conv:  []string{"encoder.mid_block.attentions.0.to_q.weight"},
			whole: sd.vae,
		},
		{
			name:  "transformers CLIP text model file",
			names: clipHF,
			kind:  ComponentTextEncoder,
			spots: map[string]string{"text_model.embeddings.token_embedding.weight": tok, "text_model.encoder.layers.11.mlp.fc1.bias": fc1},
			whole: sd.clip,
		},
		{
			name:  "CLIP text model without text_model.",
			names: concat(clipBare, []string{"embeddings.position_ids"}),
			kind:  ComponentTextEncoder,
			spots: map[string]string{"embeddings.token_embedding.weight": tok, "encoder.layers.11.mlp.fc1.bias": fc1, "embeddings.position_ids": posIDs},
			whole: concat(sd.clip, []string{posIDs}),
		},
		{
			name:  "ComfyUI CLIPSave clip_l: projection and logit_scale",
			names: concat(clipHF, []string{"text_projection.weight", "logit_scale"}),
			kind:  ComponentTextEncoder,
			spots: map[string]string{"text_projection.weight": TextProjection, "logit_scale": LogitScale, "text_model.final_layer_norm.bias": CLIPPrefix + "final_layer_norm.bias"},
			whole: concat(sd.clip, []string{TextProjection, LogitScale}),
		},
		{
			name:  "ComfyUI clip_l. text encoder alone",
			names: concat(withPrefix(clipHF, "clip_l.transformer."), []string{"clip_l.logit_scale"}),
			kind:  ComponentTextEncoder,
			spots: map[string]string{"clip_l.transformer.text_model.embeddings.token_embedding.weight": tok, "clip_l.logit_scale": LogitScale},
			whole: concat(sd.clip, []string{LogitScale}),
		},
		{
			name:  "text encoder extracted with cond_stage_model.",
			names: concat(sd.clip, []string{TextProjection}),
			kind:  ComponentTextEncoder,
			spots: map[string]string{tok: tok, TextProjection: TextProjection},
			whole: concat(sd.clip, []string{TextProjection}),
		},
		{
			name:  "text encoder under transformer.",
			names: withPrefix(clipHF, "transformer."),
			kind:  ComponentTextEncoder,
			spots: map[string]string{"transformer.text_model.encoder.layers.11.mlp.fc1.bias": fc1},
			whole: sd.clip,
		},
		{
			name:    "DDP text encoder",
			names:   withPrefix(clipHF, "module."),
			kind:    ComponentTextEncoder,
			wrapper: "module.",
			spots:   map[string]string{"module.text_model.embeddings.token_embedding.weight": tok},
			whole:   sd.clip,
		},
		// Files of other families and layouts keymap does not convert.
		{
			name:  "Flux transformer",
			names: []string{"double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight", "txt_in.weight", "time_in.in_layer.weight", "final_layer.linear.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"double_blocks.0.img_attn.qkv.weight": "double_blocks.0.img_attn.qkv.weight"},
		},
		{
			name:  "SD3 MMDiT",
			names: []string{"joint_blocks.0.x_block.attn.qkv.weight", "x_embedder.proj.weight", "context_embedder.weight", "pos_embed", "final_layer.linear.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"joint_blocks.0.x_block.attn.qkv.weight": "joint_blocks.0.x_block.attn.qkv.weight"},
		},
		{
			name:  "T5 encoder",
			names: []string{"encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "encoder.final_layer_norm.weight", "shared.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"encoder.final_layer_norm.weight": "encoder.final_layer_norm.weight"},
		},
		{
			name:   "OpenCLIP bigG text encoder in OpenCLIP layout",
			names:  openCLIPG,
			kind:   ComponentTextEncoder,
			widths: map[string]int{"token_embedding.weight": 1280},
			slot:   "clip_g",
			spots:  map[string]string{"logit_scale": OpenCLIPGPrefix + "logit_scale", "text_projection": OpenCLIPGPrefix + "text_projection", "transformer.resblocks.0.attn.in_proj_weight": OpenCLIPGPrefix + "transformer.resblocks.0.attn.in_proj_weight"},
		},
		{
			name:   "bigG extracted from the refiner (conditioner.embedders.0.model.)",
			names:  withPrefix(openCLIPG, "conditioner.embedders.0.model."),
			kind:   ComponentTextEncoder,
			widths: map[string]int{"conditioner.embedders.0.model.token_embedding.weight": 1280},
			slot:   "clip_g",
			spots:  map[string]string{"conditioner.embedders.0.model.ln_final.weight": OpenCLIPGPrefix + "ln_final.weight"},
		},
		{
			name:  "OpenCLIP text tower of unknown width keeps its names",
			names: openCLIPG,
			kind:  ComponentTextEncoder,
			slot:  "none",
			spots: map[string]string{"logit_scale": "logit_scale", "text_projection": "text_projection"},
		},
		{
			name:   "SD2 checkpoint text encoder alone (OpenCLIP under cond_stage_model.model.)",
			names:  withPrefix(openCLIPG, OpenCLIPHPrefix),
			kind:   ComponentTextEncoder,
			widths: map[string]int{OpenCLIPHPrefix + "token_embedding.weight": 1024},
			slot:   "clip_h",
			spots:  map[string]string{OpenCLIPHPrefix + "ln_final.weight": OpenCLIPHPrefix + "ln_final.weight"},
		},
		{
			name:   "transformers bigG (ComfyUI/SD3.5 clip_g.safetensors)",
			names:  concat(clipG, []string{"text_projection.weight", "logit_scale"}),
			kind:   ComponentTextEncoder,
			widths: map[string]int{"text_model.embeddings.token_embedding.weight": 1280},
			slot:   "clip_g",
			spots: map[string]string{
				"text_model.encoder.layers.1.self_attn.q_proj.weight": CLIPGPrefix + "text_model.encoder.layers.1.self_attn.q_proj.weight",
				"text_projection.weight":                              CLIPGPrefix + "text_projection.weight",
				"logit_scale":                                         "text_encoders.clip_g.logit_scale",
			},
		},
		{
			name:   "bigG under SD3's text_encoders.clip_g.",
			names:  withPrefix(clipG, "text_encoders.clip_g.transformer."),
			kind:   ComponentTextEncoder,
			widths: map[string]int{"text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight": 1280},
			slot:   "clip_g",
			spots:  map[string]string{"text_encoders.clip_g.transformer.text_model.final_layer_norm.bias": CLIPGPrefix + "text_model.final_layer_norm.bias"},
		},
		{
			name:   "CLIP-L extracted from an SDXL checkpoint",
			names:  withPrefix(clipHF, "conditioner.embedders.0.transformer."),
			kind:   ComponentTextEncoder,
			widths: map[string]int{"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": 768},
			slot:   "clip_l",
			spots:  map[string]string{"conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.bias": fc1},
			whole:  sd.clip,
		},
		{
			name:   "transformers ViT-H (SD2) text model",
			names:  clipG,
			kind:   ComponentTextEncoder,
			widths: map[string]int{"text_model.embeddings.token_embedding.weight": 1024},
			slot:   "clip_h",
			spots:  map[string]string{"text_model.final_layer_norm.bias": CLIPPrefix + "final_layer_norm.bias"},
		},
		{
			name:  "SDXL diffusers UNet (add_embedding)",
			names: concat(diffUNet, []string{"add_embedding.linear_1.weight", "add_embedding.linear_2.bias"}),
			kind:  ComponentDiffusionModel,
			slot:  "unet",
			spots: map[string]string{"conv_in.weight": in0, "add_embedding.linear_1.weight": UNetPrefix + "label_emb.0.0.weight", "add_embedding.linear_2.bias": UNetPrefix + "label_emb.0.2.bias"},
		},
		{
			name:  "ControlNet in LDM layout",
			names: concat(unetBare[:20], []string{"zero_convs.0.0.weight", "input_hint_block.0.weight", "middle_block_out.0.weight"}),
			kind:  ComponentUnknown,
			spots: map[string]string{"zero_convs.0.0.weight": "zero_convs.0.0.weight"},
		},
		{
			name:  "text model with and without text_model. at once",
			names: []string{"text_model.embeddings.token_embedding.weight", "encoder.layers.0.mlp.fc1.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"encoder.layers.0.mlp.fc1.weight": "encoder.layers.0.mlp.fc1.weight"},
		},
		{
			name:  "a head of LDM UNet module names alone is not a UNet",
			names: []string{"out.weight", "out.bias", "time_embed.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"out.weight": "out.weight"},
		},
		{
			name:  "markers only",
			names: []string{"v_pred", "ztsnr"},
			kind:  ComponentUnknown,
			spots: map[string]string{"v_pred": "v_pred"},
		},
		{
			name:  "unknown names under model. keep the prefix",
			names: []string{"model.double_blocks.0.img_attn.qkv.weight", "model.img_in.weight"},
			kind:  ComponentUnknown,
			spots: map[string]string{"model.img_in.weight": "model.img_in.weight"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kind, wrapper := DetectComponent(c.names)
			if kind != c.kind || wrapper != c.wrapper {
				t.Errorf("DetectComponent = %q, %q; want %q, %q", kind, wrapper, c.kind, c.wrapper)
			}
			var shapes Shapes
			if c.widths != nil {
				shapes = func(n string) []int {
					if w, ok := c.widths[n]; ok {
						return []int{49408, w}
					}
					return nil
				}
			}
			got, err := SingleFile(c.names, shapes)
			if err != nil {
				t.Fatal(err)
			}
			byFrom := checkRenames(t, c.names, got)
			for from, to := range c.spots {
				r, ok := byFrom[from]
				if !ok {
					t.Errorf("no rename of %q (test case lists a name it does not have)", from)
					continue
				}
				if r.To != to {
					t.Errorf("%q -> %q, want %q", from, r.To, to)
				}
			}
			conv := map[string]bool{}
			for _, n := range c.conv {
				conv[n] = true
				if !byFrom[n].Conv1x1 {
					t.Errorf("%q is not marked Conv1x1", n)
				}
			}
			for _, r := range got {
				if r.Conv1x1 && !strings.Contains(r.To, ".mid.attn_1.") {
					t.Errorf("%q -> %q marked Conv1x1", r.From, r.To)
				}
			}
			if c.kind == ComponentUnknown {
				for _, r := range got {
					if r.To != r.From {
						t.Errorf("unknown layout renamed %q to %q", r.From, r.To)
					}
				}
			}
			if c.whole != nil {
				want := map[string]string{}
				for _, n := range c.whole {
					want[n] = ""
				}
				checkSameSet(t, got, want)
			}
			if c.kind != ComponentUnknown && c.kind != ComponentCheckpoint {
				// A component file converts the same way on its own.
				cf, slot, err := ComponentFile(c.kind, c.names, shapes)
				if c.slot == "none" {
					if !errors.Is(err, ErrNoSlot) {
						t.Errorf("ComponentFile error %v, want ErrNoSlot", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(cf) != fmt.Sprint(got) {
					t.Errorf("ComponentFile and SingleFile disagree")
				}
				want := c.slot
				if want == "" {
					want = map[Component]string{ComponentVAE: "vae", ComponentDiffusionModel: "unet", ComponentTextEncoder: "clip_l"}[c.kind]
				}
				if slot.Name != want {
					t.Errorf("slot %q, want %q", slot.Name, want)
				}
			}
		})
	}
}

func TestComponentFileErrors(t *testing.T) {
	sd := loadSD15(t)
	unetBare := cutPrefix(t, sd.unet, UNetPrefix)
	vaeBare := cutPrefix(t, sd.vae, VAEPrefix)
	diffUNet := diffusersUNetNames(unetConfig{channels: []int{32, 64}, attn: []bool{true, false}, nRes: 2})
	cases := []struct {
		name    string
		kind    Component
		names   []string
		want    string
		unknown bool // the error wraps an *UnknownKeysError
	}{
		{"a UNet given as the VAE", ComponentVAE, unetBare, `not a vae file: it holds a diffusion model (e.g. "input_blocks.0.0.bias")`, false},
		{"a checkpoint given as the text encoder", ComponentTextEncoder, concat(sd.unet, sd.vae, sd.clip), `not a text encoder file: it holds a whole checkpoint (e.g. "model.diffusion_model.input_blocks.0.0.bias")`, false},
		{"a text encoder given as the UNet", ComponentDiffusionModel, []string{"v_pred", "text_model.final_layer_norm.weight"}, `not a diffusion model file: it holds a text encoder (e.g. "text_model.final_layer_norm.weight")`, false},
		{"VAE with discriminator leftovers", ComponentVAE, concat(vaeBare, []string{"loss.logvar", "loss.discriminator.main.0.weight"}), `not a vae file: 2 unknown VAE tensor names: "loss.discriminator.main.0.weight", "loss.logvar"`, true},
		{"T5 as the text encoder", ComponentTextEncoder, []string{"encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"}, `not a text encoder file: 2 unknown text encoder tensor names: "encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"`, true},
		{"OpenCLIP and transformers names in one file", ComponentTextEncoder, []string{"module.transformer.resblocks.0.ln_1.weight", "module.text_model.final_layer_norm.weight"}, `not a text encoder file: its 2 tensor names mix layouts or lack the main blocks (e.g. "module.transformer.resblocks.0.ln_1.weight")`, false},
		{"OpenCLIP with a vision tower", ComponentTextEncoder, []string{"transformer.resblocks.0.ln_1.weight", "token_embedding.weight", "visual.conv1.weight"}, `not a text encoder file: 1 unknown text encoder tensor names: "visual.conv1.weight"`, true},
		{"OpenCLIP of no slot's width", ComponentTextEncoder, []string{"transformer.resblocks.0.ln_1.weight", "token_embedding.weight"}, `not a text encoder darkroom places: an OpenCLIP text model 0 wide (bigG is 1280, ViT-H 1024): no text encoder slot`, false},
		{"diffusers UNet with a class embedding", ComponentDiffusionModel, concat(diffUNet, []string{"class_embedding.linear_1.weight", "class_embedding.linear_1.bias"}), `not a diffusion model file: 2 unknown UNet tensor names: "class_embedding.linear_1.bias", "class_embedding.linear_1.weight"`, true},
		{"diffusers UNet with an unknown layer", ComponentDiffusionModel, concat(diffUNet, []string{"down_blocks.0.resnets.0.frobnicate.weight"}), `1 unknown diffusers UNet tensor names: "down_blocks.0.resnets.0.frobnicate.weight"`, true},
		{"mixed text_model. and bare names", ComponentTextEncoder, []string{"text_model.embeddings.token_embedding.weight", "encoder.layers.0.mlp.fc1.weight"}, `not a text encoder file: its 2 tensor names mix layouts or lack the main blocks (e.g. "text_model.embeddings.token_embedding.weight")`, false},
		{"Flux as the UNet", ComponentDiffusionModel, []string{"double_blocks.0.img_attn.qkv.weight", "img_in.weight"}, `not a diffusion model file: 2 unknown UNet tensor names: "double_blocks.0.img_attn.qkv.weight", "img_in.weight"`, true},
		{"Flux as a checkpoint", ComponentCheckpoint, []string{"double_blocks.0.img_attn.qkv.weight"}, `not a checkpoint file: it holds tensors of no layout darkroom converts (e.g. "double_blocks.0.img_attn.qkv.weight")`, false},
		{"no layout for unknown", ComponentUnknown, unetBare, `keymap: no layout of kind "unknown" to convert to`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ComponentFile(c.kind, c.names, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != c.want {
				t.Errorf("error = %s\nwant    %s", err, c.want)
			}
			var uk *UnknownKeysError
			if errors.As(err, &uk) != c.unknown {
				t.Errorf("errors.As(*UnknownKeysError) = %v, want %v", !c.unknown, c.unknown)
			}
		})
	}
}

func TestDiffusersTextEncoder(t *testing.T) {
	hf := diffusersCLIPNames(2)
	bare := make([]string, len(hf))
	for i, n := range hf {
		bare[i] = strings.TrimPrefix(n, "text_model.")
	}
	cases := []struct {
		name  string
		names []string
		spots map[string]string
		err   string
	}{
		{"CLIPTextModel", concat(hf, []string{"text_model.embeddings.position_ids"}), map[string]string{
			"text_model.embeddings.token_embedding.weight": CLIPPrefix + "embeddings.token_embedding.weight",
			"text_model.embeddings.position_ids":           CLIPPrefix + "embeddings.position_ids",
		}, ""},
		{"CLIPTextModelWithProjection", concat(hf, []string{"text_projection.weight"}), map[string]string{
			"text_projection.weight":                   TextProjection,
			"text_model.encoder.layers.1.mlp.fc2.bias": CLIPPrefix + "encoder.layers.1.mlp.fc2.bias",
		}, ""},
		{"without text_model.", concat(bare, []string{"text_projection.weight", "embeddings.position_ids"}), map[string]string{
			"embeddings.token_embedding.weight":      CLIPPrefix + "embeddings.token_embedding.weight",
			"encoder.layers.0.self_attn.q_proj.bias": CLIPPrefix + "encoder.layers.0.self_attn.q_proj.bias",
			"final_layer_norm.weight":                CLIPPrefix + "final_layer_norm.weight",
			"embeddings.position_ids":                CLIPPrefix + "embeddings.position_ids",
			"text_projection.weight":                 TextProjection,
		}, ""},
		{"mixed", concat(hf, []string{"final_layer_norm.weight"}), nil, `1 unknown diffusers text encoder tensor names: "final_layer_norm.weight"`},
		{"full CLIPModel", concat(hf, []string{"vision_model.embeddings.patch_embedding.weight", "visual_projection.weight"}), nil,
			`2 unknown diffusers text encoder tensor names: "vision_model.embeddings.patch_embedding.weight", "visual_projection.weight"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DiffusersTextEncoder(c.names, nil)
			if c.err != "" {
				var uk *UnknownKeysError
				if !errors.As(err, &uk) || err.Error() != c.err {
					t.Errorf("error = %v, want %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			byFrom := checkRenames(t, c.names, got)
			for from, to := range c.spots {
				if r := byFrom[from]; r.To != to {
					t.Errorf("%q -> %q, want %q", from, r.To, to)
				}
			}
		})
	}
	// The full ViT-L text model, without the base prefix, gives exactly
	// the canonical SD1.5 text encoder.
	want := readKeys(t, "testdata/sd15_clip.keys")
	var names []string
	for _, n := range diffusersCLIPNames(12) {
		names = append(names, strings.TrimPrefix(n, "text_model."))
	}
	got, err := DiffusersTextEncoder(names, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSameSet(t, got, want)

	// The width picks the slot: 1280 is bigG, under CLIPGPrefix with its
	// transformers names; 1024 (SD2's ViT-H) and 768 are the CLIP-L slot's
	// names.
	for _, c := range []struct {
		width int
		want  string
	}{{1280, CLIPGPrefix + "text_projection.weight"}, {1024, TextProjection}, {768, TextProjection}} {
		names := concat(hf, []string{"text_projection.weight"})
		got, err := DiffusersTextEncoder(names, func(n string) []int {
			if n == "text_model.embeddings.token_embedding.weight" {
				return []int{49408, c.width}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		byFrom := checkRenames(t, names, got)
		if r := byFrom["text_projection.weight"]; r.To != c.want {
			t.Errorf("width %d: projection -> %q, want %q", c.width, r.To, c.want)
		}
		if c.width == 1280 {
			if r := byFrom["text_model.encoder.layers.0.self_attn.q_proj.weight"]; r.To != CLIPGPrefix+"text_model.encoder.layers.0.self_attn.q_proj.weight" {
				t.Errorf("bigG q_proj -> %q", r.To)
			}
		}
	}
}
