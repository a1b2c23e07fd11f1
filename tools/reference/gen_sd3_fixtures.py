#!/usr/bin/env python3
"""Tiny SD3 / SD3.5 pipelines and diffusers StableDiffusion3Pipeline reference cases.

Builds two tiny MMDiTs with diffusers' own SD3Transformer2DModel and runs diffusers' StableDiffusion3Pipeline
(FlowMatchEulerDiscreteScheduler, shift 3.0 as SD3's scheduler_config.json) in float32 on the CPU:

- "a" (SD3.5 Medium-like): 3 joint blocks, 2 heads x 16, RMS query/key norms, MMDiT-X attn2 in blocks 0 and 1
  (dual_attention_layers), the last block's text stream pre-only, pos_embed_max_size 16;
- "b" (SD3 Medium-like): 2 joint blocks, 1 head x 64 (the head width ComfyUI and single files assume when there
  are no query norms), no qk norm, no MMDiT-X;
- text_encoder / text_encoder_2: NEW tiny CLIPTextModelWithProjection (CLIP-L: hidden 12, quick_gelu; bigG:
  hidden 16, gelu; 3 layers, 2 heads, projection = hidden) with the tiny CLIP vocabulary of gen_sdxl_fixtures;
  tokenizer pads with <|endoftext|>, tokenizer_2 with "!" as SD3's folders do; CLIP-L 12 + bigG 16 = 28 < 32,
  so the pipeline's zero padding of the CLIP features to the T5 width is exercised;
- text_encoder_3: the tiny T5 of testdata/reference/t5-tiny (d_model 32 = joint_attention_dim), tokenizer_3 the
  bundled T5 tokenizer.json;
- vae: a NEW tiny 16-channel AutoencoderKL (SD3's VAE config shrunk: 4 levels of 32 channels, no quant convs,
  scaling 1.5305, shift 0.0609), decoder.conv_out calibrated so final latents decode to std 0.5.

Weights are random (unit-scale embeddings, 1/sqrt(fan_in) matrices, perturbed norms and biases) and rounded to
float16 so the F16 files hold them exactly.

Layouts written (--out):
- sd35/: the StableDiffusion3Pipeline folder of "a" (save_pretrained, F16) without text_encoder_3 weights and
  tokenizer_3 (the Go test links t5-tiny/model.safetensors; the T5 tokenizer is the bundled one);
- sd3/transformer/: model "b" in diffusers' layout;
- single/sd35_tiny_incl_clips.safetensors: "a" in Stability's single-file layout (model.diffusion_model.*,
  first_stage_model.* LDM VAE, text_encoders.clip_l/clip_g.transformer.*), no T5 (as sd3.5 files ship);
- single/sd3_tiny_mmdit.safetensors: "b" in Stability's names with no prefix (a diffusion-model-only file).
Both Stability layouts are converted back with diffusers' own convert_sd3_transformer_checkpoint_to_diffusers /
convert_ldm_vae_checkpoint and must give the diffusers state dicts bit for bit, or the script fails.

Cases: cases.json (arguments, token ids, sigmas, checks), cases.safetensors (float32, "<case>/<what>": the
encode_prompt outputs, the initial noise, every step's latents, the final latent, the image [B, H, W, 3]).

Usage (no network; diffusers from .ref/diffusers_src/src):
    PYTHONPATH=.ref/diffusers_src/src python3 tools/reference/gen_sd3_fixtures.py \\
        --t5-tiny testdata/reference/t5-tiny --t5-tokenizer engine/tokenizer/t5_tokenizer.json.gz \\
        --merges engine/tokenizer/bpe_simple_vocab_16e6.txt.gz --out DIR
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SD3_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
                 "num_train_timesteps": 1000, "shift": 3.0}
CLIP_BASE = dict(intermediate_size=24, num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=77,
                 layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_L = dict(CLIP_BASE, hidden_size=12, hidden_act="quick_gelu", projection_dim=12)
CLIP_G = dict(CLIP_BASE, hidden_size=16, intermediate_size=32, hidden_act="gelu", projection_dim=16)
POOLED = 12 + 16
TR_A = dict(sample_size=16, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=POOLED, out_channels=16,
            pos_embed_max_size=16, dual_attention_layers=(0, 1), qk_norm="rms_norm")
TR_B = dict(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=1,
            joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=POOLED, out_channels=16,
            pos_embed_max_size=16, dual_attention_layers=(), qk_norm=None)
VAE_CFG = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 32, 32, 32),
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               layers_per_block=1, norm_num_groups=32, act_fn="silu", sample_size=64, scaling_factor=1.5305,
               shift_factor=0.0609, latents_mean=None, latents_std=None, force_upcast=True, use_quant_conv=False,
               use_post_quant_conv=False, mid_block_add_attention=True)

LONG_PROMPT = ("A vast panoramic matte painting of a floating citadel above a sea of clouds, waterfalls pouring off "
               "its terraces into the mist, airships with patched canvas sails docking at crystal spires, flocks of "
               "white birds circling the towers, sunrise colours of coral, gold and lavender, ultra detailed, "
               "volumetric light, in the style of nineteenth-century romantic landscape painters")
CASES = [
    dict(name="a_default", model="a", prompt='A red fox in the snow, "WINTER" written above, 35mm photo',
         negative_prompt=None, width=64, height=64, steps=4, cfg=4.5, seed=42, n=1, msl=256),
    dict(name="a_long_neg", model="a", prompt=LONG_PROMPT, negative_prompt="blurry, low quality, watermark",
         width=80, height=48, steps=3, cfg=3.0, seed=7, n=2, msl=64, clip_skip=1),
    dict(name="a_slg", model="a", prompt="An old lighthouse on a cliff at night, stormy sea", negative_prompt="",
         width=64, height=48, steps=5, cfg=4.0, seed=5, n=1, msl=256,
         slg=dict(layers=[1], scale=2.8, start=0.01, stop=0.8)),
    dict(name="a_no_t5", model="a", prompt="Ein Straßencafé in Köln, 1920s Postkarte", negative_prompt=None,
         width=64, height=64, steps=3, cfg=5.0, seed=9, n=1, msl=256, no_t5=True),
    dict(name="a_cfg1", model="a", prompt="a bowl of ramen, studio lighting", negative_prompt=None,
         width=48, height=64, steps=4, cfg=1.0, seed=11, n=1, msl=256),
    dict(name="b_default", model="b", prompt="Portrait of an astronaut cat, oil on canvas", negative_prompt="ugly",
         width=64, height=64, steps=4, cfg=4.5, seed=3, n=1, msl=77),
]


def log(*a):
    print(*a, flush=True)


def f32(t):
    return t.detach().cpu().float().contiguous().clone()


def init_dit(m, g):
    """Unit-scale-preserving random weights: 1/sqrt(fan_in) matrices and convolutions, small random biases,
    norms around 1; pos_embed keeps diffusers' sin-cos grid, scaled to unit variance."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * fan_in ** -0.5)
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        pe = m.pos_embed.pos_embed
        pe.copy_(pe / pe.std())


def round_all(m):
    with torch.no_grad():
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return m


# ---------------------------------------------------------- native layouts --

def swap_halves(t):
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0).contiguous()


def sd3_to_native(sd, n_layers, dual):
    """diffusers SD3Transformer2DModel names -> Stability's MMDiT names (the inverse of
    single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers)."""
    used, out = set(), {}

    def take(k):
        if k in used:
            raise KeyError(f"{k} used twice")
        used.add(k)
        return sd[k]

    def lin(dst, src):
        out[dst + ".weight"] = take(src + ".weight")
        out[dst + ".bias"] = take(src + ".bias")

    def fused(dst, srcs):
        for leaf in ("weight", "bias"):
            out[f"{dst}.{leaf}"] = torch.cat([take(f"{s}.{leaf}") for s in srcs], dim=0).contiguous()

    out["pos_embed"] = take("pos_embed.pos_embed")
    lin("x_embedder.proj", "pos_embed.proj")
    lin("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    lin("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    lin("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    lin("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    lin("context_embedder", "context_embedder")
    for i in range(n_layers):
        s, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == n_layers - 1
        fused(x + "attn.qkv", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v"])
        fused(c + "attn.qkv", [s + "attn.add_q_proj", s + "attn.add_k_proj", s + "attn.add_v_proj"])
        if s + "attn.norm_q.weight" in sd:
            out[x + "attn.ln_q.weight"] = take(s + "attn.norm_q.weight")
            out[x + "attn.ln_k.weight"] = take(s + "attn.norm_k.weight")
            out[c + "attn.ln_q.weight"] = take(s + "attn.norm_added_q.weight")
            out[c + "attn.ln_k.weight"] = take(s + "attn.norm_added_k.weight")
        lin(x + "attn.proj", s + "attn.to_out.0")
        if not last:
            lin(c + "attn.proj", s + "attn.to_add_out")
        if i in dual:
            fused(x + "attn2.qkv", [s + "attn2.to_q", s + "attn2.to_k", s + "attn2.to_v"])
            if s + "attn2.norm_q.weight" in sd:
                out[x + "attn2.ln_q.weight"] = take(s + "attn2.norm_q.weight")
                out[x + "attn2.ln_k.weight"] = take(s + "attn2.norm_k.weight")
            lin(x + "attn2.proj", s + "attn2.to_out.0")
        lin(x + "adaLN_modulation.1", s + "norm1.linear")
        if last:  # diffusers' AdaLayerNormContinuous is (scale, shift); Stability's (shift, scale)
            out[c + "adaLN_modulation.1.weight"] = swap_halves(take(s + "norm1_context.linear.weight"))
            out[c + "adaLN_modulation.1.bias"] = swap_halves(take(s + "norm1_context.linear.bias"))
        else:
            lin(c + "adaLN_modulation.1", s + "norm1_context.linear")
        lin(x + "mlp.fc1", s + "ff.net.0.proj")
        lin(x + "mlp.fc2", s + "ff.net.2")
        if not last:
            lin(c + "mlp.fc1", s + "ff_context.net.0.proj")
            lin(c + "mlp.fc2", s + "ff_context.net.2")
    lin("final_layer.linear", "proj_out")
    out["final_layer.adaLN_modulation.1.weight"] = swap_halves(take("norm_out.linear.weight"))
    out["final_layer.adaLN_modulation.1.bias"] = swap_halves(take("norm_out.linear.bias"))
    left = sorted(set(sd) - used)
    if left:
        raise KeyError(f"diffusers transformer keys not mapped: {left}")
    return out


def state(m):
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


# ------------------------------------------------------------------ cases --

def run_case(pipe, c, tensors):
    name = c["name"]
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
              num_inference_steps=c["steps"], guidance_scale=c["cfg"], num_images_per_prompt=c["n"],
              max_sequence_length=c["msl"])
    if c.get("clip_skip"):
        kw["clip_skip"] = c["clip_skip"]
    if c.get("slg"):
        s = c["slg"]
        kw.update(skip_guidance_layers=s["layers"], skip_layer_guidance_scale=s["scale"],
                  skip_layer_guidance_start=s["start"], skip_layer_guidance_stop=s["stop"])
    lat, calls = [], []
    tr = pipe.transformer
    orig = tr.forward

    def fwd(*a, **k):
        out = orig(*a, **k)
        calls.append(dict(skip=k.get("skip_layers"), t=k["timestep"].detach().clone()))
        return out

    def cb(p, i, t, k):
        lat.append(k["latents"].detach().clone())
        return {}

    tr.forward = fwd
    try:
        g = torch.Generator("cpu").manual_seed(c["seed"])
        noise = pipe.prepare_latents(c["n"], 16, c["height"], c["width"], torch.float32, "cpu",
                                     torch.Generator("cpu").manual_seed(c["seed"]))
        out = pipe(**kw, generator=g, output_type="np", callback_on_step_end=cb)
    finally:
        del tr.forward
    pe, npe, pp, npp = pipe.encode_prompt(prompt=c["prompt"], prompt_2=None, prompt_3=None, device="cpu",
                                          num_images_per_prompt=1, do_classifier_free_guidance=c["cfg"] > 1,
                                          negative_prompt=c["negative_prompt"], max_sequence_length=c["msl"],
                                          clip_skip=c.get("clip_skip"))
    t = {f"{name}/prompt_embeds": f32(pe), f"{name}/pooled_prompt_embeds": f32(pp), f"{name}/noise": f32(noise)}
    if npe is not None:
        t[f"{name}/negative_prompt_embeds"] = f32(npe)
        t[f"{name}/negative_pooled_prompt_embeds"] = f32(npp)
    for i, l in enumerate(lat):
        t[f"{name}/latents_{i}"] = f32(l)
    img = torch.from_numpy(out.images).float()
    t[f"{name}/image"] = img.contiguous()
    tensors.update(t)
    ids = {}
    for sub in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, sub)
        ids[sub] = tok(c["prompt"], padding="max_length", max_length=77, truncation=True).input_ids
    if pipe.tokenizer_3 is not None:
        ids["tokenizer_3"] = pipe.tokenizer_3(c["prompt"], padding="max_length", max_length=c["msl"],
                                              truncation=True).input_ids
    meta = dict(c, sigmas=[float(s) for s in pipe.scheduler.sigmas], timesteps=[float(x) for x in pipe.scheduler.timesteps],
                token_ids=ids, calls=[dict(skip=k["skip"], t=[float(v) for v in k["t"]]) for k in calls],
                stats=dict(image_std=float(img.std()), image_mean=float(img.mean()),
                           latent_std=float(lat[-1].std()), latent_mean=float(lat[-1].mean())),
                tensors={k.split("/", 1)[1]: list(v.shape) for k, v in t.items()})
    log(f"{name}: sigmas {[round(s, 5) for s in meta['sigmas']]} calls {len(calls)} "
        f"(skip {[k['skip'] for k in calls]}) stats {json.dumps(meta['stats'])}")
    return meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t5-tiny", required=True)
    ap.add_argument("--t5-tokenizer", required=True)
    ap.add_argument("--merges", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer
    from gen_sdxl_fixtures import (EOS_TOKEN, VOCAB_SIZE, ensure_tokenizer_files, init_clip, perturb_norms_and_biases,
                                   tiny_vocab, write_tokenizer)
    from gen_flux_pipeline_fixtures import calibrate_vae, compare_sd, load_t5, read_st, t5_tokenizer, vae_to_bfl

    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp()
    failures = []
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    vocab, merges = tiny_vocab(args.merges)
    write_tokenizer(os.path.join(work, "tok_l"), vocab, merges, EOS_TOKEN)
    write_tokenizer(os.path.join(work, "tok_g"), vocab, merges, "!")
    tok_l = CLIPTokenizer.from_pretrained(os.path.join(work, "tok_l"))
    tok_g = CLIPTokenizer.from_pretrained(os.path.join(work, "tok_g"))
    clip_l = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=VOCAB_SIZE, **CLIP_L))
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=VOCAB_SIZE, **CLIP_G))
    for m in (clip_l, clip_g):
        init_clip(m, g)
        round_all(m.float().eval())
    t5, t5_cfg = load_t5(args.t5_tiny)
    tok3, _ = t5_tokenizer(args.t5_tokenizer, work)
    tr = {}
    for k, cfg in (("a", TR_A), ("b", TR_B)):
        m = SD3Transformer2DModel(**cfg)
        init_dit(m, g)
        tr[k] = round_all(m.float().eval())
    vae = AutoencoderKL(**VAE_CFG)
    perturb_norms_and_biases(vae, g)
    vae = vae.float().eval()
    sched = FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER)

    def pipeline(model, with_t5=True):
        return StableDiffusion3Pipeline(transformer=tr[model], scheduler=sched, vae=vae, text_encoder=clip_l,
                                        tokenizer=tok_l, text_encoder_2=clip_g, tokenizer_2=tok_g,
                                        text_encoder_3=t5 if with_t5 else None, tokenizer_3=tok3 if with_t5 else None)

    # calibrate the VAE on the final latents the tiny transformer produces
    lat = pipeline("a")(prompt="a calibration prompt", height=64, width=64, num_inference_steps=4, guidance_scale=4.5,
                        generator=torch.Generator("cpu").manual_seed(1), output_type="latent").images
    vstats = calibrate_vae(vae, float(lat.std()), float(lat.mean()))
    round_all(vae)

    # the diffusers folders
    full = os.path.join(work, "sd35")
    p = pipeline("a")
    p.to(torch.float16)
    p.save_pretrained(full, safe_serialization=True)
    p.to(torch.float32)
    with open(os.path.join(full, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SD3_SCHEDULER, f, indent=2)
    out_a = os.path.join(args.out, "sd35")
    shutil.rmtree(out_a, ignore_errors=True)
    shutil.copytree(full, out_a, ignore=shutil.ignore_patterns("tokenizer_3"))
    for sub, pad in (("tokenizer", EOS_TOKEN), ("tokenizer_2", "!")):
        ensure_tokenizer_files(os.path.join(out_a, sub), vocab, merges, pad)  # the files released folders have
    for f in os.listdir(os.path.join(out_a, "text_encoder_3")):
        if f != "config.json":
            os.remove(os.path.join(out_a, "text_encoder_3", f))
    for sub, mod in (("transformer", tr["a"]), ("vae", vae), ("text_encoder", clip_l), ("text_encoder_2", clip_g)):
        d = os.path.join(out_a, sub)
        fn = [x for x in os.listdir(d) if x.endswith(".safetensors")][0]
        saved = {k: v.float() for k, v in read_st(os.path.join(d, fn)).items()}
        want = {k: v for k, v in state(mod).items() if k in saved or not k.endswith("position_ids")}
        r = compare_sd(f"sd35/{sub} == in-memory", saved, want)
        if not r["ok"]:
            failures.append(f"sd35/{sub}")
    out_b = os.path.join(args.out, "sd3")
    shutil.rmtree(out_b, ignore_errors=True)
    tr["b"].to(torch.float16).save_pretrained(os.path.join(out_b, "transformer"), safe_serialization=True)
    tr["b"].to(torch.float32)

    # Stability's layouts, proved with diffusers' own converters
    single = os.path.join(args.out, "single")
    shutil.rmtree(single, ignore_errors=True)
    os.makedirs(single)
    checks = {}
    for k, fname, prefix in (("a", "sd35_tiny_incl_clips.safetensors", "model.diffusion_model."),
                             ("b", "sd3_tiny_mmdit.safetensors", "")):
        cfg = tr[k].config
        sd = {n: v.half() for n, v in state(tr[k]).items()}
        nat = sd3_to_native(sd, cfg.num_layers, set(cfg.dual_attention_layers))
        back = sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(nat))
        r = compare_sd(f"{fname} transformer -> diffusers", back, sd)
        checks[fname] = r["ok"]
        tensors = {prefix + n: v for n, v in nat.items()}
        if k == "a":
            vsd = {n: v.half() for n, v in state(vae).items()}
            ldm = vae_to_bfl(vsd, len(VAE_CFG["block_out_channels"]))
            vback = sfu.convert_ldm_vae_checkpoint({"first_stage_model." + n: v for n, v in ldm.items()}, dict(vae.config))
            rv = compare_sd("first_stage_model -> diffusers", vback, vsd)
            checks["vae"] = rv["ok"]
            tensors.update({"first_stage_model." + n: v for n, v in ldm.items()})
            for enc, mod in (("clip_l", clip_l), ("clip_g", clip_g)):
                for n, v in state(mod).items():
                    if not n.endswith("position_ids"):
                        tensors[f"text_encoders.{enc}.transformer.{n}"] = v.half()
        save_file({n: v.contiguous() for n, v in tensors.items()}, os.path.join(single, fname))
    for k, ok in checks.items():
        if not ok:
            failures.append(f"native layout {k}")

    # cases
    tensors, manifest = {}, []
    for c in CASES:
        try:
            meta = run_case(pipeline(c["model"], not c.get("no_t5")), c, tensors)
            manifest.append(meta)
            if meta["stats"]["image_std"] < 0.05:
                failures.append(f"{c['name']}: flat image")
        except Exception as e:  # noqa: BLE001
            log(f"{c['name']}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=8)
            failures.append(c["name"])
    save_file(tensors, os.path.join(args.out, "cases.safetensors"))
    import diffusers
    import transformers
    doc = dict(generator="tools/reference/gen_sd3_fixtures.py", diffusers=diffusers.__version__,
               transformers=transformers.__version__, torch=torch.__version__, seed=args.seed,
               transformer_a=dict(tr["a"].config), transformer_b=dict(tr["b"].config), clip_l=CLIP_L, clip_g=CLIP_G,
               t5=t5_cfg, vae=VAE_CFG, vae_calibration=vstats, scheduler=SD3_SCHEDULER, layout_checks=checks,
               cases=manifest, failures=failures)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False, default=str)
    shutil.rmtree(work, ignore_errors=True)
    log(f"failures: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
