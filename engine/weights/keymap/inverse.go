package keymap

import (
	"fmt"
	"strconv"
	"strings"
)

// UNetDiffusersNames returns, for the canonical UNet names of a model
// ("model.diffusion_model.*", as any layout presents them), the name each
// has in a diffusers UNet2DConditionModel: what LoRA files made for
// diffusers (kohya's "lora_unet_down_blocks_…", peft's "unet.…") call the
// layers. It is DiffusersUNet's table run backwards: the block structure
// (levels, res blocks per level, where attention, downsamplers and
// upsamplers sit) is read from the canonical names, the table is built for
// it, and every inverted name is checked to convert forward to the name it
// came from. Names the table does not reach are left out.
func UNetDiffusersNames(canonical []string) map[string]string {
	t := diffusersUNetTable(unetStructureNames(canonical))
	byCanon := make(map[string]string, len(t))
	kinds := make(map[string]blockKind, len(t))
	for from, tg := range t {
		byCanon[tg.to] = from
		kinds[tg.to] = tg.kind
	}
	resInverse := make(map[string]string, len(unetResLayers))
	for diff, ldm := range unetResLayers {
		resInverse[ldm] = diff
	}
	out := map[string]string{}
	for _, name := range canonical {
		if !strings.HasPrefix(name, UNetPrefix) {
			continue
		}
		for i := len(name) - 1; i > 0; i-- {
			if name[i] != '.' {
				continue
			}
			from, ok := byCanon[name[:i+1]]
			if !ok {
				continue
			}
			rest := name[i+1:]
			if kinds[name[:i+1]] == unetRes {
				layer, param, ok := splitParam(rest)
				if !ok || resInverse[layer] == "" {
					break
				}
				rest = resInverse[layer] + "." + param
			}
			diff := from + rest
			if r, ok := t.convertOne(diff); ok && r.To == name {
				out[name] = diff
			}
			break
		}
	}
	return out
}

// unetStructureNames makes one diffusers-style name per block that the
// canonical (LDM) UNet names imply, enough for scan to see the structure
// diffusersUNetTable numbers the blocks by. LDM numbers the down path as
// conv_in, then per level its res blocks (each with its attention, when
// the level has any) and a downsampler ("input_blocks.N.0.op.") on every
// level but the last; the up path as res blocks per level, the upsampler in
// the last block of every level but the last.
func unetStructureNames(canonical []string) []string {
	type block struct{ attn, op, up bool }
	in, outb := map[int]*block{}, map[int]*block{}
	nIn, nOut := 0, 0
	for _, name := range canonical {
		rest, ok := strings.CutPrefix(name, UNetPrefix)
		if !ok {
			continue
		}
		var m map[int]*block
		var n *int
		switch {
		case strings.HasPrefix(rest, "input_blocks."):
			m, n, rest = in, &nIn, rest[len("input_blocks."):]
		case strings.HasPrefix(rest, "output_blocks."):
			m, n, rest = outb, &nOut, rest[len("output_blocks."):]
		default:
			continue
		}
		idx, sub, _ := strings.Cut(rest, ".")
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i > 1000 {
			continue
		}
		*n = max(*n, i+1)
		if m[i] == nil {
			m[i] = &block{}
		}
		slot, layer, _ := strings.Cut(sub, ".")
		first, _, _ := strings.Cut(layer, ".")
		switch {
		case slot == "0" && first == "op":
			m[i].op = true
		case slot == "1" && transformerLayers[first]:
			m[i].attn = true
		case (slot == "1" || slot == "2") && first == "conv":
			m[i].up = true
		}
	}
	ops := 0
	for _, b := range in {
		if b.op {
			ops++
		}
	}
	levels := ops + 1
	if nIn <= 1 || (nIn-1-ops)%levels != 0 || nOut%levels != 0 {
		return nil
	}
	nRes, nUpRes := (nIn-1-ops)/levels, nOut/levels
	var names []string
	for i := range levels {
		for j := range nRes {
			k := 1 + i*(nRes+1) + j
			names = append(names, fmt.Sprintf("down_blocks.%d.resnets.%d.conv1.weight", i, j))
			if b := in[k]; b != nil && b.attn {
				names = append(names, fmt.Sprintf("down_blocks.%d.attentions.%d.proj_in.weight", i, j))
			}
		}
		if b := in[1+i*(nRes+1)+nRes]; b != nil && b.op {
			names = append(names, fmt.Sprintf("down_blocks.%d.downsamplers.0.conv.weight", i))
		}
		for j := range nUpRes {
			k := i*nUpRes + j
			names = append(names, fmt.Sprintf("up_blocks.%d.resnets.%d.conv1.weight", i, j))
			b := outb[k]
			if b != nil && b.attn {
				names = append(names, fmt.Sprintf("up_blocks.%d.attentions.%d.proj_in.weight", i, j))
			}
			if j == nUpRes-1 && b != nil && b.up {
				names = append(names, fmt.Sprintf("up_blocks.%d.upsamplers.0.conv.weight", i))
			}
		}
	}
	return names
}
