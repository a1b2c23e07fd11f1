package keymap

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// The testdata/sd15_*.keys files list the tensors of a real SD1.5
// single-file checkpoint (name and shape). They were derived from the LDM
// architecture (4 levels, channels 320/640/1280/1280, attention on the first
// three, 2 res blocks down / 3 up; VAE 128/256/512/512; CLIP ViT-L/14 text),
// and match the published totals: UNet 686 tensors / 859,520,964
// parameters, VAE 248 / 83,653,863, text encoder 196 / 123,060,480.

func readKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, shape, _ := strings.Cut(line, " ")
		keys[name] = shape
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// unetConfig describes a diffusers UNet2DConditionModel block structure.
type unetConfig struct {
	channels []int
	attn     []bool // cross-attention per level
	nRes     int    // res blocks per down level (up levels have nRes+1)
}

func param(names *[]string, prefix string) {
	*names = append(*names, prefix+".weight", prefix+".bias")
}

// diffusersUNetNames lists the tensor names diffusers stores for cfg,
// written from the diffusers module structure.
func diffusersUNetNames(cfg unetConfig) []string {
	var n []string
	res := func(p string, in, out int) {
		for _, l := range []string{"norm1", "conv1", "time_emb_proj", "norm2", "conv2"} {
			param(&n, p+"."+l)
		}
		if in != out {
			param(&n, p+".conv_shortcut")
		}
	}
	attn := func(p string) {
		param(&n, p+".norm")
		param(&n, p+".proj_in")
		param(&n, p+".proj_out")
		b := p + ".transformer_blocks.0."
		for _, a := range []string{"attn1", "attn2"} {
			n = append(n, b+a+".to_q.weight", b+a+".to_k.weight", b+a+".to_v.weight")
			param(&n, b+a+".to_out.0")
		}
		param(&n, b+"ff.net.0.proj")
		param(&n, b+"ff.net.2")
		for _, l := range []string{"norm1", "norm2", "norm3"} {
			param(&n, b+l)
		}
	}
	param(&n, "conv_in")
	param(&n, "time_embedding.linear_1")
	param(&n, "time_embedding.linear_2")
	L := len(cfg.channels)
	c := cfg.channels[0]
	skips := []int{c}
	for i := range L {
		for j := range cfg.nRes {
			res(fmt.Sprintf("down_blocks.%d.resnets.%d", i, j), c, cfg.channels[i])
			c = cfg.channels[i]
			if cfg.attn[i] {
				attn(fmt.Sprintf("down_blocks.%d.attentions.%d", i, j))
			}
			skips = append(skips, c)
		}
		if i < L-1 {
			param(&n, fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i))
			skips = append(skips, c)
		}
	}
	res("mid_block.resnets.0", c, c)
	attn("mid_block.attentions.0")
	res("mid_block.resnets.1", c, c)
	for i := range L {
		lvl := L - 1 - i
		for j := range cfg.nRes + 1 {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			res(fmt.Sprintf("up_blocks.%d.resnets.%d", i, j), c+skip, cfg.channels[lvl])
			c = cfg.channels[lvl]
			if cfg.attn[lvl] {
				attn(fmt.Sprintf("up_blocks.%d.attentions.%d", i, j))
			}
		}
		if i < L-1 {
			param(&n, fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i))
		}
	}
	param(&n, "conv_norm_out")
	param(&n, "conv_out")
	return n
}

func diffusersVAENames(channels []int, nRes int, oldAttn bool) []string {
	var n []string
	res := func(p string, in, out int) {
		for _, l := range []string{"norm1", "conv1", "norm2", "conv2"} {
			param(&n, p+"."+l)
		}
		if in != out {
			param(&n, p+".conv_shortcut")
		}
	}
	mid := func(side string, c int) {
		res(side+".mid_block.resnets.0", c, c)
		res(side+".mid_block.resnets.1", c, c)
		a := side + ".mid_block.attentions.0."
		names := []string{"group_norm", "to_q", "to_k", "to_v", "to_out.0"}
		if oldAttn {
			names = []string{"group_norm", "query", "key", "value", "proj_attn"}
		}
		for _, l := range names {
			param(&n, a+l)
		}
	}
	L := len(channels)
	param(&n, "encoder.conv_in")
	c := channels[0]
	for i := range L {
		for j := range nRes {
			res(fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), c, channels[i])
			c = channels[i]
		}
		if i < L-1 {
			param(&n, fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i))
		}
	}
	mid("encoder", c)
	param(&n, "encoder.conv_norm_out")
	param(&n, "encoder.conv_out")
	param(&n, "quant_conv")
	param(&n, "post_quant_conv")
	param(&n, "decoder.conv_in")
	mid("decoder", c)
	for i := range L {
		lvl := L - 1 - i
		for j := range nRes + 1 {
			res(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), c, channels[lvl])
			c = channels[lvl]
		}
		if i < L-1 {
			param(&n, fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i))
		}
	}
	param(&n, "decoder.conv_norm_out")
	param(&n, "decoder.conv_out")
	return n
}

func diffusersCLIPNames(layers int) []string {
	n := []string{"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"}
	for i := range layers {
		p := fmt.Sprintf("text_model.encoder.layers.%d.", i)
		for _, l := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"} {
			param(&n, p+l)
		}
	}
	param(&n, "text_model.final_layer_norm")
	return n
}

// checkSameSet compares converted names with the expected canonical keys.
func checkSameSet(t *testing.T, got []Rename, want map[string]string) {
	t.Helper()
	seen := map[string]string{}
	for _, r := range got {
		if prev, dup := seen[r.To]; dup {
			t.Errorf("%q and %q both map to %q", prev, r.From, r.To)
		}
		seen[r.To] = r.From
		if _, ok := want[r.To]; !ok {
			t.Errorf("%q -> %q, which is not a canonical key", r.From, r.To)
		}
	}
	var missing []string
	for k := range want {
		if _, ok := seen[k]; !ok {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%d canonical keys not produced, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
}

func TestDiffusersUNetSD15(t *testing.T) {
	want := readKeys(t, "testdata/sd15_unet.keys")
	if len(want) != 686 {
		t.Fatalf("sd15_unet.keys has %d keys, want 686", len(want))
	}
	names := diffusersUNetNames(unetConfig{channels: []int{320, 640, 1280, 1280}, attn: []bool{true, true, true, false}, nRes: 2})
	got, err := DiffusersUNet(names)
	if err != nil {
		t.Fatal(err)
	}
	checkSameSet(t, got, want)
	spot := map[string]string{
		"down_blocks.0.downsamplers.0.conv.weight":                           UNetPrefix + "input_blocks.3.0.op.weight",
		"down_blocks.2.resnets.1.time_emb_proj.bias":                         UNetPrefix + "input_blocks.8.0.emb_layers.1.bias",
		"up_blocks.0.upsamplers.0.conv.weight":                               UNetPrefix + "output_blocks.2.1.conv.weight",
		"up_blocks.1.upsamplers.0.conv.weight":                               UNetPrefix + "output_blocks.5.2.conv.weight",
		"up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight":    UNetPrefix + "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
		"mid_block.resnets.1.conv_shortcut.weight":                           "", // absent: mid resnets keep their width
		"up_blocks.2.resnets.0.conv_shortcut.weight":                         UNetPrefix + "output_blocks.6.0.skip_connection.weight",
		"time_embedding.linear_2.weight":                                     UNetPrefix + "time_embed.2.weight",
		"conv_norm_out.bias":                                                 UNetPrefix + "out.0.bias",
		"down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.bias": UNetPrefix + "input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.bias",
	}
	checkSpots(t, got, spot)
}

func checkSpots(t *testing.T, got []Rename, spot map[string]string) {
	t.Helper()
	byFrom := map[string]Rename{}
	for _, r := range got {
		byFrom[r.From] = r
	}
	for from, to := range spot {
		r, ok := byFrom[from]
		if to == "" {
			if ok {
				t.Errorf("unexpected %q", from)
			}
			continue
		}
		if !ok || r.To != to {
			t.Errorf("%q -> %q, want %q", from, r.To, to)
		}
	}
}

func TestDiffusersVAESD15(t *testing.T) {
	want := readKeys(t, "testdata/sd15_vae.keys")
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("oldAttn=%v", old), func(t *testing.T) {
			got, err := DiffusersVAE(diffusersVAENames([]int{128, 256, 512, 512}, 2, old))
			if err != nil {
				t.Fatal(err)
			}
			checkSameSet(t, got, want)
			conv := 0
			for _, r := range got {
				if r.Conv1x1 {
					conv++
					if want[r.To] != "512,512,1,1" {
						t.Errorf("%q marked Conv1x1 but canonical shape is %s", r.To, want[r.To])
					}
				}
			}
			if conv != 8 {
				t.Errorf("%d Conv1x1 tensors, want 8 (q,k,v,proj_out in encoder and decoder)", conv)
			}
			spot := map[string]string{
				"decoder.up_blocks.0.resnets.2.conv1.weight":       VAEPrefix + "decoder.up.3.block.2.conv1.weight",
				"decoder.up_blocks.3.resnets.0.conv_shortcut.bias": VAEPrefix + "decoder.up.0.block.0.nin_shortcut.bias",
				"decoder.up_blocks.1.upsamplers.0.conv.weight":     VAEPrefix + "decoder.up.2.upsample.conv.weight",
				"encoder.down_blocks.2.downsamplers.0.conv.weight": VAEPrefix + "encoder.down.2.downsample.conv.weight",
				"encoder.conv_norm_out.weight":                     VAEPrefix + "encoder.norm_out.weight",
				"decoder.mid_block.attentions.0.group_norm.bias":   VAEPrefix + "decoder.mid.attn_1.norm.bias",
				"encoder.mid_block.resnets.1.conv2.weight":         VAEPrefix + "encoder.mid.block_2.conv2.weight",
			}
			checkSpots(t, got, spot)
		})
	}
}

func TestDiffusersCLIPViTL(t *testing.T) {
	want := readKeys(t, "testdata/sd15_clip.keys")
	got, err := DiffusersCLIP(diffusersCLIPNames(12))
	if err != nil {
		t.Fatal(err)
	}
	checkSameSet(t, got, want)
	// position_ids, kept by some exports, is accepted.
	if _, err := DiffusersCLIP([]string{"text_model.embeddings.position_ids"}); err != nil {
		t.Error(err)
	}
}

func TestUnknownKeys(t *testing.T) {
	cases := []struct {
		name    string
		convert func([]string) ([]Rename, error)
		extra   []string
		want    string
	}{
		{"unet", DiffusersUNet, []string{"add_embedding.linear_3.weight", "down_blocks.0.resnets.0.frobnicate.weight", "down_blocks.9.resnets.0.conv1.bias.x", "zz.weight"},
			`4 unknown diffusers UNet tensor names: "add_embedding.linear_3.weight", "down_blocks.0.resnets.0.frobnicate.weight", "down_blocks.9.resnets.0.conv1.bias.x" and 1 more`},
		{"vae", DiffusersVAE, []string{"decoder.mid_block.attentions.0.to_x.weight"}, `1 unknown diffusers VAE tensor names: "decoder.mid_block.attentions.0.to_x.weight"`},
		{"clip", DiffusersCLIP, []string{"text_projection.weight"}, `1 unknown diffusers text encoder tensor names: "text_projection.weight"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var base []string
			switch c.name {
			case "unet":
				base = diffusersUNetNames(unetConfig{channels: []int{32, 64}, attn: []bool{true, false}, nRes: 2})
			case "vae":
				base = diffusersVAENames([]int{32, 64}, 2, false)
			case "clip":
				base = diffusersCLIPNames(2)
			}
			_, err := c.convert(append(base, c.extra...))
			var uk *UnknownKeysError
			if !errors.As(err, &uk) || err.Error() != c.want {
				t.Errorf("error = %v\nwant    %s", err, c.want)
			}
		})
	}
}

func TestNormalizeLDM(t *testing.T) {
	cases := []struct {
		in, want string
		conv     bool
	}{
		{"cond_stage_model.transformer.embeddings.token_embedding.weight", CLIPPrefix + "embeddings.token_embedding.weight", false},
		{"cond_stage_model.transformer.encoder.layers.3.mlp.fc1.bias", CLIPPrefix + "encoder.layers.3.mlp.fc1.bias", false},
		{"cond_stage_model.transformer.final_layer_norm.weight", CLIPPrefix + "final_layer_norm.weight", false},
		{CLIPPrefix + "final_layer_norm.weight", CLIPPrefix + "final_layer_norm.weight", false},
		{"first_stage_model.decoder.mid.attn_1.q.weight", "first_stage_model.decoder.mid.attn_1.q.weight", true},
		{"first_stage_model.encoder.mid.attn_1.proj_out.weight", "first_stage_model.encoder.mid.attn_1.proj_out.weight", true},
		{"first_stage_model.encoder.mid.attn_1.proj_out.bias", "first_stage_model.encoder.mid.attn_1.proj_out.bias", false},
		{"first_stage_model.encoder.mid.attn_1.norm.weight", "first_stage_model.encoder.mid.attn_1.norm.weight", false},
		{"model.diffusion_model.out.2.weight", "model.diffusion_model.out.2.weight", false},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			r := NormalizeLDM(c.in)
			if r.From != c.in || r.To != c.want || r.Conv1x1 != c.conv {
				t.Errorf("got %+v, want To %q Conv1x1 %v", r, c.want, c.conv)
			}
		})
	}
}
