#!/usr/bin/env python3
"""Flux.1 LoRA reference fixtures for darkroom, made with diffusers' own loader.

Builds tiny random LoRAs for the tiny FLUX.1-dev pipeline of
testdata/reference/flux-pipe (dev/ folder, with text_encoder_2 from
testdata/reference/t5-tiny and the bundled T5 tokenizer as
gen_flux_pipeline_fixtures assembles it) and lets diffusers load and fuse
them: FluxPipeline.load_lora_weights (whose lora_state_dict runs
lora_conversion_utils' converters: _convert_kohya_flux_lora_to_diffusers for
kohya files, _convert_non_diffusers_flux_lora_to_diffusers for BFL-named
ones), then fuse_lora(lora_scale=STRENGTH). One logical LoRA (rank 4, alpha
2, every Linear of the transformer; no text-encoder part, see main) is written three ways:

  kohya     kohya sd-scripts names over BFL modules: lora_unet_double_blocks_
            N_img_attn_qkv, lora_unet_single_blocks_N_linear1,
            lora_unet_final_layer_adaLN_modulation_1, …, lora_te1_text_model_
            encoder_layers_N_…; lora_down/lora_up/alpha.
  peft      diffusers / peft / ai-toolkit names: transformer.transformer_
            blocks.N.attn.to_q, transformer.single_transformer_blocks.N.
            proj_mlp, transformer.norm_out.linear, text_encoder.text_model.…;
            lora_A/lora_B with alpha/rank baked into lora_A. Made from the
            kohya tensors as diffusers' _convert_kohya_flux_lora_to_diffusers
            makes them (down copied to each piece of a fused layer, up cut by
            rows, norm_out's up halves swapped).
  bfl       BFL / ComfyUI names: diffusion_model.double_blocks.N.img_attn.qkv.
            lora_A.weight, …; alpha/rank baked in (no alpha key); transformer
            only (diffusers reads no text encoder from such files).

Each is fused on a fresh pipeline at strength 0.8 (the kohya text-encoder
part too: fuse_lora's lora_scale covers every component), and the script
stores, per case, every fused transformer tensor (diffusers names, float32)
and the final latent of a 2-step FluxPipeline run (64x48, guidance 3.5,
max_sequence_length 32, seed 42, output_type="latent", unpacked to
[B, 16, h, w]). darkroom's tests then load the same files onto the
diffusers folder and onto BFL's split files and compare (the fused tensors
through BFL's fused names by rows, the latents directly).

Usage (no network):
    python3 tools/reference/gen_flux_lora_fixtures.py \\
        --pipe testdata/reference/flux-pipe/dev --t5-tiny testdata/reference/t5-tiny \\
        --t5-tokenizer engine/tokenizer/t5_tokenizer.json.gz --out testdata/reference/flux-lora
Writes OUT/{kohya,peft,bfl}.safetensors (float16 LoRA files),
OUT/fused.safetensors ("<case>/transformer/<name>", "<case>/final_latents",
"none/final_latents") and OUT/cases.json.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

RANK, ALPHA, STRENGTH = 4, 2.0, 0.8
SEED, W, H, STEPS, GUIDANCE, MAXLEN = 42, 64, 48, 2, 3.5, 32
PROMPT = "a red fox in the snow"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def bfl_modules(cfg):
    """The BFL transformer's Linear modules, (name, out, in), for the tiny config."""
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    M = 4 * D
    joint, pooled, inc = cfg["joint_attention_dim"], cfg["pooled_projection_dim"], cfg["in_channels"]
    out = cfg.get("out_channels") or inc
    mods = [("img_in", D, inc), ("txt_in", D, joint), ("time_in.in_layer", D, 256), ("time_in.out_layer", D, D),
            ("vector_in.in_layer", D, pooled), ("vector_in.out_layer", D, D), ("final_layer.linear", out, D),
            ("final_layer.adaLN_modulation.1", 2 * D, D)]
    if cfg.get("guidance_embeds"):
        mods += [("guidance_in.in_layer", D, 256), ("guidance_in.out_layer", D, D)]
    for i in range(cfg["num_layers"]):
        b = f"double_blocks.{i}."
        for s in ("img", "txt"):
            mods += [(b + s + "_attn.qkv", 3 * D, D), (b + s + "_attn.proj", D, D), (b + s + "_mlp.0", M, D),
                     (b + s + "_mlp.2", D, M), (b + s + "_mod.lin", 6 * D, D)]
    for i in range(cfg["num_single_layers"]):
        b = f"single_blocks.{i}."
        mods += [(b + "linear1", 3 * D + M, D), (b + "linear2", D, D + M), (b + "modulation.lin", 3 * D, D)]
    return mods, D, M


def to_diffusers(name, D, M):
    """[(diffusers module, rows of the BFL ΔW it takes)] as comfy/utils.py flux_to_diffusers pairs them."""
    basic = {"img_in": "x_embedder", "txt_in": "context_embedder",
             "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
             "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
             "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
             "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
             "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
             "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
             "final_layer.linear": "proj_out"}
    if name in basic:
        return [(basic[name], None)]
    if name == "final_layer.adaLN_modulation.1":
        return [("norm_out.linear", "swap")]
    kind, i, rest = name.split(".", 2)
    i = int(i)
    if kind == "double_blocks":
        p = f"transformer_blocks.{i}."
        table = {"img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj",
                 "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
                 "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear"}
        if rest == "img_attn.qkv":
            return [(p + "attn.to_q", (0, D)), (p + "attn.to_k", (D, 2 * D)), (p + "attn.to_v", (2 * D, 3 * D))]
        if rest == "txt_attn.qkv":
            return [(p + "attn.add_q_proj", (0, D)), (p + "attn.add_k_proj", (D, 2 * D)),
                    (p + "attn.add_v_proj", (2 * D, 3 * D))]
        return [(p + table[rest], None)]
    p = f"single_transformer_blocks.{i}."
    if rest == "linear1":
        return [(p + "attn.to_q", (0, D)), (p + "attn.to_k", (D, 2 * D)), (p + "attn.to_v", (2 * D, 3 * D)),
                (p + "proj_mlp", (3 * D, 3 * D + M))]
    return [(p + {"linear2": "proj_out", "modulation.lin": "norm.linear"}[rest], None)]


def clip_modules(text_encoder):
    n = text_encoder.config.num_hidden_layers
    w, f = text_encoder.config.hidden_size, text_encoder.config.intermediate_size
    mods = []
    for i in range(n):
        b = f"text_model.encoder.layers.{i}."
        mods += [(b + "self_attn.q_proj", w, w), (b + "self_attn.v_proj", w, w), (b + "mlp.fc1", f, w)]
    return mods


def make_lora(mods, clip, g):
    """{module: (down [r, in], up [out, r])}, sized so each ΔW is visible but small."""
    lora = {}
    for name, out, inp in mods + clip:
        down = torch.randn((RANK, inp), generator=g) / inp ** 0.5
        up = torch.randn((out, RANK), generator=g) * 0.05
        lora[name] = (down.half().float(), up.half().float())  # stored in float16
    return lora


def write_files(lora, mods, clip, D, M, out):
    scale = ALPHA / RANK
    kohya, peft, bfl = {}, {}, {}
    for name, _, _ in mods:
        down, up = lora[name]
        if name.startswith(("double_blocks.", "single_blocks.")):
            # diffusers' kohya converter reads only the blocks (it drops img_in, time_in, final_layer, ...
            # where ComfyUI applies them): the kohya file holds the blocks only, so both peers fuse alike.
            k = "lora_unet_" + name.replace(".", "_")
            kohya[k + ".lora_down.weight"], kohya[k + ".lora_up.weight"] = down, up
            kohya[k + ".alpha"] = torch.tensor(ALPHA)
        bfl["diffusion_model." + name + ".lora_A.weight"] = down * scale
        bfl["diffusion_model." + name + ".lora_B.weight"] = up
        for d, rows in to_diffusers(name, D, M):
            u = up
            if rows == "swap":
                u = torch.cat([up[D:], up[:D]])
            elif rows is not None:
                u = up[rows[0]:rows[1]]
            peft["transformer." + d + ".lora_A.weight"] = down * scale
            peft["transformer." + d + ".lora_B.weight"] = u.contiguous()
    for name, _, _ in clip:
        down, up = lora[name]
        k = "lora_te1_" + name.replace(".", "_")
        kohya[k + ".lora_down.weight"], kohya[k + ".lora_up.weight"] = down, up
        kohya[k + ".alpha"] = torch.tensor(ALPHA)
        peft["text_encoder." + name + ".lora_A.weight"] = down * scale
        peft["text_encoder." + name + ".lora_B.weight"] = up
    from safetensors.torch import save_file
    files = {}
    for case, sd in (("kohya", kohya), ("peft", peft), ("bfl", bfl)):
        p = os.path.join(out, case + ".safetensors")
        save_file({k: v.half().contiguous() for k, v in sd.items()}, p)
        files[case] = p
    return files


def assemble(pipe_dir, t5_tiny, t5_tok, work):
    """The tiny dev FluxPipeline folder with text_encoder_2 and tokenizer_2, as darkroom's tests link it."""
    from gen_flux_pipeline_fixtures import load_t5, t5_tokenizer
    d = os.path.join(work, "FLUX.1-dev")
    shutil.copytree(pipe_dir, d, dirs_exist_ok=True)
    t5, _ = load_t5(t5_tiny)
    t5.save_pretrained(os.path.join(d, "text_encoder_2"))
    tok2, _ = t5_tokenizer(t5_tok, work)
    tok2.save_pretrained(os.path.join(d, "tokenizer_2"))
    return d


def patch_kohya_dims(D, M):
    """diffusers' _convert_kohya_flux_lora_to_diffusers cuts single_blocks.N.linear1's lora_up by the real
    model's rows (dims=[3072, 3072, 3072, 12288]); the tiny model's are [D, D, D, M]. Recompile the function
    with those constants replaced (nothing else changes) and point lora_pipeline at it."""
    import inspect
    import textwrap
    from diffusers.loaders import lora_conversion_utils as lcu
    from diffusers.loaders import lora_pipeline as lp
    src = textwrap.dedent(inspect.getsource(lcu._convert_kohya_flux_lora_to_diffusers))
    old = "dims=[3072, 3072, 3072, 12288]"
    if src.count(old) != 1:
        raise RuntimeError(f"_convert_kohya_flux_lora_to_diffusers: expected one {old}, found {src.count(old)}")
    exec(compile(src.replace(old, f"dims=[{D}, {D}, {D}, {M}]"), lcu.__file__, "exec"), lcu.__dict__)
    lp._convert_kohya_flux_lora_to_diffusers = lcu._convert_kohya_flux_lora_to_diffusers
    log(f"  kohya converter: linear1 dims {old} -> [{D}, {D}, {D}, {M}]")


def run(pipe):
    g = torch.Generator("cpu").manual_seed(SEED)
    lat = pipe(PROMPT, height=H, width=W, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               max_sequence_length=MAXLEN, generator=g, output_type="latent").images
    return pipe._unpack_latents(lat, H, W, pipe.vae_scale_factor).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipe", required=True, help="testdata/reference/flux-pipe/dev")
    ap.add_argument("--t5-tiny", required=True, help="testdata/reference/t5-tiny")
    ap.add_argument("--t5-tokenizer", required=True, help="FLUX.1's tokenizer_2 tokenizer.json (or .json.gz)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="fluxlora-")

    import diffusers
    from diffusers import FluxPipeline
    from safetensors.torch import save_file
    folder = assemble(args.pipe, args.t5_tiny, args.t5_tokenizer, work)
    cfg = json.load(open(os.path.join(folder, "transformer", "config.json")))

    def fresh():
        return FluxPipeline.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)

    base = fresh()
    mods, D, M = bfl_modules(cfg)
    patch_kohya_dims(D, M)
    # CLIP-L parts are left out: diffusers' kohya path (58eb52c) fails on them at this size
    # (peft_utils.get_peft_kwargs: an empty rank dict); the text-encoder LoRA names are proved on SD1/SDXL.
    clip = []
    g = torch.Generator().manual_seed(SEED)
    lora = make_lora(mods, clip, g)
    files = write_files(lora, mods, clip, D, M, args.out)

    fused = {"none/final_latents": run(base)}
    cases = []
    for case, path in files.items():
        pipe = fresh()
        before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
        pipe.load_lora_weights(path, adapter_name=case)
        pipe.fuse_lora(lora_scale=STRENGTH)
        pipe.unload_lora_weights()  # keeps the fused weights, drops the adapters
        after = pipe.transformer.state_dict()
        moved = sum(int(not torch.equal(before[k], after[k])) for k in after)
        log(f"{case}: {moved} of {len(after)} transformer tensors changed")
        if moved == 0:
            log(f"{case}: diffusers reads nothing of this file; left out of the fixture")
            continue
        for k, v in after.items():
            fused[f"{case}/transformer/{k}"] = v.float().contiguous()
        fused[f"{case}/final_latents"] = run(pipe)
        cases.append(dict(name=case, file=os.path.basename(path), strength=STRENGTH, changed=moved))
    for a in [c["name"] for c in cases if c["name"] != "kohya"]:
        worst = max(float((fused[f"kohya/transformer/{k}"] - fused[f"{a}/transformer/{k}"]).abs().max())
                    for k in base.transformer.state_dict())
        log(f"kohya against {a}: fused transformer max |diff| {worst:.3g}")
    save_file(fused, os.path.join(args.out, "fused.safetensors"))
    meta = dict(magic="darkroom-flux-lora-fixtures", version=1, diffusers=diffusers.__version__,
                torch=torch.__version__, rank=RANK, alpha=ALPHA, seed=SEED, width=W, height=H, steps=STEPS,
                guidance=GUIDANCE, max_sequence_length=MAXLEN, prompt=PROMPT, cases=cases,
                latents="FluxPipeline._unpack_latents, [B, 16, h, w], float32")
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
