#!/usr/bin/env python3
"""Tiny SDXL base / SDXL refiner / SD 2.x models and diffusers reference cases.

Builds three small random models in the exact SDXL-base, SDXL-refiner and
SD 2.x architectures (diffusers + transformers classes, every size shrunk),
calibrates their random weights so decoded images are not flat and the
prompt matters, rounds every weight to F16 and stores each model twice:

- DIR/<model>/diffusers/: the pipeline's save_pretrained folder (F16
  safetensors, model_index.json, scheduler/, tokenizer(s)); the cases below
  are computed by loading this folder back with <Pipeline>.from_pretrained
  in float32;
- DIR/<model>/single.safetensors: the single-file (LDM/SGM) checkpoint made
  by diffusers' own conversion functions, imported from
  scripts/convert_diffusers_to_original_sdxl.py (SDXL base and refiner) and
  scripts/convert_diffusers_to_original_stable_diffusion.py (SD 2.x, its v2
  text-encoder path), then converted back with diffusers' single-file loader
  functions (diffusers.loaders.single_file_utils) and compared tensor by
  tensor with the folder.

Then it runs diffusers' own pipelines (StableDiffusionXLPipeline,
StableDiffusionXLImg2ImgPipeline, StableDiffusionPipeline) on CPU in float32
and stores, per case, one safetensors file of "<case>/<tensor>" keys plus a
JSON manifest (sdxl_cases.*, sd2_cases.*). See tools/reference/README.md
for the models, the cases and the tensor layouts.

Usage (no network; diffusers' src/ and scripts/ from .ref/diffusers_src):
    PYTHONPATH=.ref/diffusers_src/src python3 tools/reference/gen_sdxl_fixtures.py \\
        --diffusers .ref/diffusers_src --merges engine/tokenizer/bpe_simple_vocab_16e6.txt.gz --out DIR
"""
import argparse
import gzip
import importlib.util
import json
import math
import os
import sys
import traceback

import torch

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
# 116 tokens with the tiny vocabulary (more than one 77-token window).
LONG_PROMPT = ("an oil painting of a quiet harbor at dawn, small fishing boats resting on calm water, soft mist over the "
               "hills, warm light on the old stone houses, a few gulls in the pale sky, reflections on the water, fine "
               "brush strokes, muted colors, highly detailed, masterpiece")
SD2_PROMPT = "a watercolor painting of a lighthouse at dusk"
# cfg of the SD 2.x cases: at 7 the sharpened random networks made trajectories chaotic (a 1e-7 change in one
# step grew about 3x per step), so a float32 re-implementation could not be compared step by step.
SD2_CFG = 4.0


def init_pixels(w, h):
    """A deterministic RGB test image [1, 3, h, w] of byte values 0..255 (as float): gradients and a checkerboard,
    so that an encoder sees edges and colour. Tests rebuild it from the stored tensor."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    r = (x * 255 / max(w - 1, 1)).round()
    g = (y * 255 / max(h - 1, 1)).round()
    b = ((torch.div(x, 8, rounding_mode="floor") + torch.div(y, 8, rounding_mode="floor")) % 2) * 180 + 40
    return torch.stack([r, g, b]).unsqueeze(0)

# Tokenizer: the 512 byte-level base tokens, the first N_MERGES merges of
# OpenAI's CLIP BPE, then <|startoftext|> and <|endoftext|>: 1000 ids.
N_MERGES = 486
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 512 + N_MERGES + 2
BOS_ID, EOS_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1

# scheduler_config.json of stabilityai/stable-diffusion-xl-base-1.0 (and the refiner).
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      prediction_type="epsilon", interpolation_type="linear", steps_offset=1, timestep_spacing="leading",
                      use_karras_sigmas=False, sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True,
                      clip_sample=False, trained_betas=None)
# scheduler_config.json of stabilityai/stable-diffusion-2-1 (a DDIMScheduler config).
SD2_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True,
                     steps_offset=1, trained_betas=None)

CLIP_COMMON = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=1, max_position_embeddings=77, layer_norm_eps=1e-5,
                   # the values of the released configs (transformers then pools at argmax(ids), the first
                   # <|endoftext|>, since it is the largest id)
                   bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_L = dict(CLIP_COMMON, hidden_act="quick_gelu", projection_dim=64)
CLIP_G = dict(CLIP_COMMON, hidden_act="gelu", projection_dim=32)
CLIP_H = dict(CLIP_COMMON, hidden_act="gelu", projection_dim=64)

UNET_COMMON = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                   # diffusers' attention_head_dim is the number of heads here: 1 head of 64 channels
                   attention_head_dim=(1, 1), use_linear_projection=True, norm_num_groups=32, act_fn="silu",
                   flip_sin_to_cos=True, freq_shift=0)
UNET_SDXL = dict(UNET_COMMON, transformer_layers_per_block=(1, 2), cross_attention_dim=128,
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=32 + 6 * 8)
UNET_REFINER = dict(UNET_COMMON, transformer_layers_per_block=(1, 1), cross_attention_dim=64,
                    addition_embed_type="text_time", addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=32 + 5 * 8)
UNET_SD2 = dict(UNET_COMMON, transformer_layers_per_block=(1, 1), cross_attention_dim=64, upcast_attention=True)
# 4 levels (factor 8, as the conversion scripts' VAE maps assume), 1 res block per level.
VAE_COMMON = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=1, norm_num_groups=32, act_fn="silu", sample_size=64, force_upcast=True)
VAE_SDXL = dict(VAE_COMMON, scaling_factor=0.13025)
VAE_SD2 = dict(VAE_COMMON, scaling_factor=0.18215)


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------- tokenizer --

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_vocab(merges_gz):
    """The CLIP vocabulary cut to the first N_MERGES merges, in CLIP's order."""
    lines = gzip.open(merges_gz, "rt", encoding="utf-8").read().split("\n")[1:1 + N_MERGES]
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(l.split()) for l in lines] + [BOS_TOKEN, EOS_TOKEN]
    assert len(tokens) == len(set(tokens)) == VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}, lines


def write_tokenizer(path, vocab, merges, pad):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    special = dict(bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=pad, unk_token=EOS_TOKEN)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(dict(special, model_max_length=77, tokenizer_class="CLIPTokenizer", do_lower_case=True,
                       errors="replace", add_prefix_space=False), f, indent=2)
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)


def ensure_tokenizer_files(path, vocab, merges, pad):
    """After save_pretrained: keep the files the Go tokenizer reads (vocab.json, merges.txt)."""
    if not os.path.isdir(path):
        log(f"  {path}: not written by save_pretrained; writing ours")
        write_tokenizer(path, vocab, merges, pad)
        return
    for name in ("vocab.json", "merges.txt"):
        if not os.path.isfile(os.path.join(path, name)):
            log(f"  {path}: transformers wrote no {name}; writing ours")
            tmp = path + ".tmp"
            write_tokenizer(tmp, vocab, merges, pad)
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
            for f in os.listdir(tmp):
                os.remove(os.path.join(tmp, f))
            os.rmdir(tmp)


# ------------------------------------------------------------------- models --

def perturb_norms_and_biases(module, g):
    """Norm weights 1+N(0,.1), norm biases N(0,.1), zero biases N(0,.05): no parameter is trivially 0 or 1."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm = p.ndim == 1 and ("norm" in name or "layer_norm" in name or name.endswith(("ln_1.weight", "ln_2.weight")))
            if is_norm and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif is_norm and name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") and float(p.abs().max()) == 0:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def init_clip(model, g):
    """Unit-scale embeddings and 1/sqrt(fan_in) projections, so every layer changes the hidden state."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("token_embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("position_embedding.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)
    perturb_norms_and_biases(model, g)


def round_f16(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


def make_models(seed):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = {}
    m["clip_l"] = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    m["clip_g"] = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
    m["clip_g_refiner"] = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
    m["clip_h"] = CLIPTextModel(CLIPTextConfig(**CLIP_H))
    for k in ("clip_l", "clip_g", "clip_g_refiner", "clip_h"):
        init_clip(m[k], g)
    m["unet_sdxl"] = UNet2DConditionModel(**UNET_SDXL)
    m["unet_refiner"] = UNet2DConditionModel(**UNET_REFINER)
    m["unet_sd2"] = UNet2DConditionModel(**UNET_SD2)
    m["vae_sdxl"] = AutoencoderKL(**VAE_SDXL)
    m["vae_sd2"] = AutoencoderKL(**VAE_SD2)
    for k in ("unet_sdxl", "unet_refiner", "unet_sd2", "vae_sdxl", "vae_sd2"):
        perturb_norms_and_biases(m[k], g)
    # The refiner shares the base's VAE (as the released refiner does).
    m["vae_sdxl_refiner"] = AutoencoderKL(**VAE_SDXL)
    for v in m.values():
        v.float().eval()
    return m


def unet_eps(unet, x, t, ctx, added=None):
    kw = {}
    if added is not None:
        kw["added_cond_kwargs"] = added
    return unet(x, t, encoder_hidden_states=ctx, **kw).sample


def calibrate_unet(name, unet, ctx_c, ctx_u, added_c=None, added_u=None, sigma_max=14.61):
    """Sharpens cross-attention until the prompt changes eps by >= 35% (at most 1.3^8), then scales conv_out so eps has unit RMS."""
    g = torch.Generator().manual_seed(99)
    h, w = 8, 8
    x = torch.randn((1, 4, h, w), generator=g)
    ts = [999.0, 500.0, 100.0]

    def rel():
        r, e = [], []
        for t in ts:
            c = unet_eps(unet, x, torch.tensor(t), ctx_c, added_c)
            u = unet_eps(unet, x, torch.tensor(t), ctx_u, added_u)
            r.append(float((c - u).norm() / u.norm()))
            e.append(float(c.pow(2).mean().sqrt()))
        return sum(r) / len(r), e

    # sharper cross-attention (q, k) and a stronger attention output, a bounded number of times
    mods = [m for n, m in unet.named_modules() if n.endswith(("attn2.to_q", "attn2.to_k", "attn2.to_out.0"))]
    r, e = rel()
    for _ in range(8):
        if r >= 0.35:
            break
        with torch.no_grad():
            for m in mods:
                m.weight.mul_(1.3)
                if m.bias is not None:
                    m.bias.mul_(1.3)
        r, e = rel()
    with torch.no_grad():
        s = 1.0 / e[0]
        unet.conv_out.weight.mul_(s)
        unet.conv_out.bias.mul_(s)
    r, e = rel()
    log(f"  calibrated {name}: cond/uncond rel {r:.3f}, eps rms {[round(v, 3) for v in e]}")


def calibrate_vae(name, vae):
    g = torch.Generator().manual_seed(98)
    z = torch.randn((1, 4, 8, 8), generator=g) * 3
    with torch.no_grad():
        for _ in range(2):
            img = vae.decode(z / vae.config.scaling_factor).sample
            s = 0.5 / float(img.std())
            vae.decoder.conv_out.weight.mul_(s)
            vae.decoder.conv_out.bias.mul_(s)
            img = vae.decode(z / vae.config.scaling_factor).sample
            vae.decoder.conv_out.bias.sub_(img.mean(dim=(0, 2, 3)))
        img = vae.decode(z / vae.config.scaling_factor).sample
    log(f"  calibrated {name}: decoded std {float(img.std()):.3f} mean {float(img.mean()):.3f} "
        f"clipped {float(((img <= -1) | (img >= 1)).float().mean()):.3f}")


# ---------------------------------------------------------------- pipelines --

def prefix_text_model(path):
    """transformers 5 saves CLIPTextModel without the "text_model." prefix (CLIPTextModelWithProjection keeps it);
    every released diffusers repo (saved by transformers 4) has it, and transformers 5 loads both: store the
    released layout."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if all(k.startswith(("text_model.", "text_projection")) for k in sd):
        return
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v.contiguous() for k, v in sd.items()}
    save_file(sd, path, metadata=meta or {"format": "pt"})
    log(f"  {path}: keys prefixed with text_model. (transformers 5 wrote them without)")


def make_tokenizer(path):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(path)


def build_and_save(models, out, vocab, merges, diffusers_mod):
    """Assembles the three pipelines, calibrates, rounds to F16 and saves them; returns the folders."""
    from diffusers import (DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline)
    tok_dir = os.path.join(out, "_tok")
    write_tokenizer(os.path.join(tok_dir, "l"), vocab, merges, EOS_TOKEN)
    write_tokenizer(os.path.join(tok_dir, "bang"), vocab, merges, "!")
    tok_l, tok_g = make_tokenizer(os.path.join(tok_dir, "l")), make_tokenizer(os.path.join(tok_dir, "bang"))
    for p in (PROMPT, LONG_PROMPT):
        ids = tok_l(p)["input_ids"]
        log(f"  tokens({p[:30]}...): {len(ids)}")

    base = StableDiffusionXLPipeline(vae=models["vae_sdxl"], text_encoder=models["clip_l"], text_encoder_2=models["clip_g"],
                                     tokenizer=tok_l, tokenizer_2=tok_g, unet=models["unet_sdxl"],
                                     scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER), force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    refiner = StableDiffusionXLImg2ImgPipeline(vae=models["vae_sdxl_refiner"], text_encoder=None,
                                               text_encoder_2=models["clip_g_refiner"], tokenizer=None, tokenizer_2=tok_g,
                                               unet=models["unet_refiner"], scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
                                               requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                               add_watermarker=False)
    sd2 = StableDiffusionPipeline(vae=models["vae_sd2"], text_encoder=models["clip_h"], tokenizer=tok_g, unet=models["unet_sd2"],
                                  scheduler=DDIMScheduler.from_config(SD2_SCHEDULER), safety_checker=None, feature_extractor=None,
                                  requires_safety_checker=False)

    with torch.no_grad():
        # VAE first (the refiner gets a copy of the base's).
        calibrate_vae("vae_sdxl", models["vae_sdxl"])
        calibrate_vae("vae_sd2", models["vae_sd2"])
        models["vae_sdxl_refiner"].load_state_dict(models["vae_sdxl"].state_dict())
        for k in models:
            round_f16(models[k])
        # SDXL base
        pe, ne, pp, npool = base.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                               negative_prompt=NEGATIVE)
        tid = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        calibrate_unet("unet_sdxl", models["unet_sdxl"], pe, ne, {"text_embeds": pp, "time_ids": tid},
                       {"text_embeds": npool, "time_ids": tid})
        # refiner
        pe, ne, pp, npool = refiner.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                                  negative_prompt=NEGATIVE)
        calibrate_unet("unet_refiner", models["unet_refiner"], pe, ne,
                       {"text_embeds": pp, "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 6.0]])},
                       {"text_embeds": npool, "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 2.5]])})
        # SD2
        pe, ne = sd2.encode_prompt(SD2_PROMPT, "cpu", 1, True, NEGATIVE)
        calibrate_unet("unet_sd2", models["unet_sd2"], pe, ne)
        for k in models:
            round_f16(models[k])

    folders = {}
    for name, pipe in (("sdxl-tiny", base), ("sdxl-refiner-tiny", refiner), ("sd2-tiny", sd2)):
        d = os.path.join(out, name, "diffusers")
        pipe.to(torch.float16)
        pipe.save_pretrained(d, safe_serialization=True)
        pipe.to(torch.float32)
        for sub in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, sub, None) is not None:
                prefix_text_model(os.path.join(d, sub, "model.safetensors"))
        for sub, pad in (("tokenizer", EOS_TOKEN), ("tokenizer_2", "!")):
            if getattr(pipe, sub, None) is not None:
                ensure_tokenizer_files(os.path.join(d, sub), vocab, merges, pad if name != "sd2-tiny" else "!")
        folders[name] = d
        log(f"  saved {d}: {sorted(os.listdir(d))}")
    import shutil
    shutil.rmtree(tok_dir)
    return folders, dict(base=base, refiner=refiner, sd2=sd2)


def load_pipeline(cls, folder, fallback):
    """The pipeline as diffusers loads the saved folder (float32); the in-memory one if that fails."""
    try:
        pipe = cls.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)
        how = "from_pretrained"
    except Exception as e:  # keep going: the in-memory pipeline holds the same F16-rounded weights
        log(f"  {cls.__name__}.from_pretrained({folder}) FAILED: {type(e).__name__}: {e}; using the in-memory pipeline")
        pipe, how = fallback, "in-memory (from_pretrained failed)"
    pipe.to("cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe, how


def check_same_weights(pipe, ref, names):
    worst = 0.0
    for n in names:
        a, b = getattr(pipe, n).state_dict(), getattr(ref, n).state_dict()
        if sorted(a) != sorted(b):
            raise RuntimeError(f"{n}: reloaded keys differ")
        for k in a:
            worst = max(worst, float((a[k].float() - b[k].float()).abs().max()))
    return worst


# -------------------------------------------------------------- single file --

def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_st(path):
    from safetensors.torch import load_file
    return load_file(path)


def sdxl_single_file(folder, conv, refiner):
    """What convert_diffusers_to_original_sdxl.py's main() does (it has no refiner mode: the refiner's bigG goes
    under conditioner.embedders.0.model., as in the released refiner)."""
    sd = {}
    unet = conv.convert_unet_state_dict(read_st(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")))
    sd.update({"model.diffusion_model." + k: v for k, v in unet.items()})
    vae = conv.convert_vae_state_dict(read_st(os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors")))
    sd.update({"first_stage_model." + k: v for k, v in vae.items()})
    g_prefix = "conditioner.embedders.0.model." if refiner else "conditioner.embedders.1.model."
    if not refiner:
        te1 = conv.convert_openai_text_enc_state_dict(read_st(os.path.join(folder, "text_encoder", "model.safetensors")))
        sd.update({"conditioner.embedders.0.transformer." + k: v for k, v in te1.items()})
    te2 = conv.convert_openclip_text_enc_state_dict(read_st(os.path.join(folder, "text_encoder_2", "model.safetensors")))
    te2 = {g_prefix + k: v for k, v in te2.items()}
    te2[g_prefix + "text_projection"] = te2.pop(g_prefix + "text_projection.weight").T.contiguous()
    sd.update(te2)
    return {k: v.half().contiguous() for k, v in sd.items()}


def sd2_single_file(folder, conv_sd, conv_xl, extra_layer_seed):
    """convert_diffusers_to_original_stable_diffusion.py's main() with its v2 text-encoder path (called directly: its
    is_v20_model test looks for layer 22), plus one extra random final resblock (the released SD 2.x files hold 24
    OpenCLIP layers, the diffusers text encoder 23). The UNet uses the SDXL script's UNet map (the same LDM names):
    the SD script's map hard-codes cross-attention at levels 0-2 of 4 and none in up_blocks.0, which a 2-level UNet
    with head dim 64 (attention only at its 64-channel level) cannot follow."""
    sd = {}
    unet = read_st(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    # (its label_emb entries name tensors an SD2 UNet lacks: leave them out of the map for this call)
    full_map = conv_xl.unet_conversion_map
    conv_xl.unet_conversion_map = [(a, b) for a, b in full_map if b in unet]
    try:
        unet = conv_xl.convert_unet_state_dict(unet)
    finally:
        conv_xl.unet_conversion_map = full_map
    sd.update({"model.diffusion_model." + k: v for k, v in unet.items()})
    vae = conv_sd.convert_vae_state_dict(read_st(os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors")))
    sd.update({"first_stage_model." + k: v for k, v in vae.items()})
    te = read_st(os.path.join(folder, "text_encoder", "model.safetensors"))
    te = {"transformer." + k: v for k, v in te.items()}
    te = conv_sd.convert_text_enc_state_dict_v20(te)
    te = {"cond_stage_model.model." + k: v for k, v in te.items()}
    n = CLIP_H["num_hidden_layers"]
    d, ff = CLIP_H["hidden_size"], CLIP_H["intermediate_size"]
    g = torch.Generator().manual_seed(extra_layer_seed)
    p = f"cond_stage_model.model.transformer.resblocks.{n}."
    extra = {
        "ln_1.weight": 1 + 0.1 * torch.randn(d, generator=g), "ln_1.bias": 0.1 * torch.randn(d, generator=g),
        "attn.in_proj_weight": torch.randn(3 * d, d, generator=g) * d ** -0.5, "attn.in_proj_bias": 0.05 * torch.randn(3 * d, generator=g),
        "attn.out_proj.weight": torch.randn(d, d, generator=g) * d ** -0.5, "attn.out_proj.bias": 0.05 * torch.randn(d, generator=g),
        "ln_2.weight": 1 + 0.1 * torch.randn(d, generator=g), "ln_2.bias": 0.1 * torch.randn(d, generator=g),
        "mlp.c_fc.weight": torch.randn(ff, d, generator=g) * d ** -0.5, "mlp.c_fc.bias": 0.05 * torch.randn(ff, generator=g),
        "mlp.c_proj.weight": torch.randn(d, ff, generator=g) * ff ** -0.5, "mlp.c_proj.bias": 0.05 * torch.randn(d, generator=g),
    }
    te.update({p + k: v for k, v in extra.items()})
    sd.update(te)
    return {k: v.half().contiguous() for k, v in sd.items()}


def check_single_file(name, sd, folder, pipe, kind):
    """Converts the single file back with diffusers' loader functions and compares with the folder's tensors."""
    from diffusers.loaders import single_file_utils as sfu
    leftovers = [k for k in sd if any(s in k for s in ("down_blocks", "up_blocks", "mid_block", "resnets", "attentions",
                                                       "self_attn", ".layers.", "q_proj", "text_model."))
                 and not k.startswith("conditioner.embedders.0.transformer.text_model.")
                 or (k.startswith("first_stage_model.") and ".to_" in k)]
    if leftovers:
        raise RuntimeError(f"{name}: diffusers names left in the single file: {leftovers[:5]}")
    res = {}

    def compare(comp, got, path, drop=()):
        want = read_st(path)
        got = {k: v for k, v in got.items() if not any(k.startswith(d) for d in drop)}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        worst = 0.0
        for k in set(want) & set(got):
            a, b = got[k].float(), want[k].float()
            if a.shape != b.shape:
                a = a.reshape(b.shape)
            worst = max(worst, float((a - b).abs().max()))
        res[comp] = dict(missing=missing[:5], extra=extra[:5], n=len(want), max_abs_diff=worst)
        ok = not missing and not extra and worst == 0
        log(f"  {name} single -> diffusers {comp}: {'identical' if ok else 'DIFFERENT'} ({len(want)} tensors"
            f"{', missing ' + str(missing[:3]) if missing else ''}{', extra ' + str(extra[:3]) if extra else ''}, max |d| {worst})")
        return ok

    ok = compare("unet", sfu.convert_ldm_unet_checkpoint(sd, dict(pipe.unet.config)),
                 os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    ok &= compare("vae", sfu.convert_ldm_vae_checkpoint(sd, dict(pipe.vae.config)),
                  os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"))
    if kind == "sdxl":
        ok &= compare("text_encoder", sfu.convert_ldm_clip_checkpoint(sd), os.path.join(folder, "text_encoder", "model.safetensors"))
        ok &= compare("text_encoder_2", sfu.convert_open_clip_checkpoint(pipe.text_encoder_2, sd, prefix="conditioner.embedders.1.model."),
                      os.path.join(folder, "text_encoder_2", "model.safetensors"))
    elif kind == "refiner":
        ok &= compare("text_encoder_2", sfu.convert_open_clip_checkpoint(pipe.text_encoder_2, sd, prefix="conditioner.embedders.0.model."),
                      os.path.join(folder, "text_encoder_2", "model.safetensors"))
    else:
        n = CLIP_H["num_hidden_layers"]
        # diffusers drops the released files' 24th layer through SD_2_TEXT_ENCODER_KEYS_TO_IGNORE; drop ours likewise.
        ok &= compare("text_encoder", sfu.convert_open_clip_checkpoint(pipe.text_encoder, sd, prefix="cond_stage_model.model."),
                      os.path.join(folder, "text_encoder", "model.safetensors"), drop=(f"text_model.encoder.layers.{n}.",))
    res["ok"] = bool(ok)
    return res


# --------------------------------------------------------------------- cases --

class Recorder:
    """Wraps the UNet to see every model call and collects the latents after each step."""

    def __init__(self, unet):
        self.unet = unet
        self.calls = []
        self.latents = []
        self.first = None
        self.rel = []
        self._orig = unet.forward

        def fwd(sample, timestep, encoder_hidden_states=None, *a, **kw):
            out = self._orig(sample, timestep, encoder_hidden_states, *a, **kw)
            t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
            self.calls.append(float(t.flatten()[0]))
            if self.first is None:
                self.first = dict(context=encoder_hidden_states.detach().clone(),
                                  added={k: v.detach().clone() for k, v in (kw.get("added_cond_kwargs") or {}).items()})
            o = out[0] if isinstance(out, tuple) else out.sample
            if o.shape[0] == 2:
                u, c = o.chunk(2)
                self.rel.append(float((c - u).norm() / u.norm()))
            return out

        unet.forward = fwd

    def callback(self, pipe, i, t, kw):
        self.latents.append(kw["latents"].detach().clone().float())
        return {}

    def close(self):
        self.unet.forward = self._orig


def image_stats(img, rel):
    return dict(image_rms=float(img.pow(2).mean().sqrt()), image_std=float(img.std()),
                clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                cond_uncond_rel=(sum(rel) / len(rel)) if rel else None)


def noise_for(seed, w, h):
    return torch.randn((1, 4, h // 8, w // 8), generator=torch.Generator("cpu").manual_seed(seed))


def hwc(img):
    return img[0].permute(1, 2, 0).contiguous().float()


def sched_info(s):
    cfg = {k: v for k, v in dict(s.config).items()}
    return dict(scheduler_class=type(s).__name__, scheduler_config=cfg, init_noise_sigma=float(s.init_noise_sigma))


def token_ids(pipe, text):
    out = {}
    for n in ("tokenizer", "tokenizer_2"):
        t = getattr(pipe, n, None)
        if t is not None and text is not None:
            out[n] = t(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
    return out


def run_t2i(pipe, scheduler, prompt, negative, seed, steps, cfg, w, h, xl=True, **extra):
    pipe.scheduler = scheduler
    noise = noise_for(seed, w, h)
    rec = Recorder(pipe.unet)
    try:
        out = pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=cfg, width=w, height=h,
                   latents=noise.clone(), generator=torch.Generator("cpu").manual_seed(seed),
                   callback_on_step_end=rec.callback, output_type=extra.pop("output_type", "pt"), **extra)
    finally:
        rec.close()
    t = {"noise": noise, "sigmas": scheduler.sigmas.detach().float().clone(),
         "timesteps": scheduler.timesteps.detach().float().clone(),
         "model_timesteps": torch.tensor(rec.calls, dtype=torch.float32)}
    ctx = rec.first["context"]
    t["negative_prompt_embeds"], t["prompt_embeds"] = ctx[0:1], ctx[1:2]
    if xl:
        a = rec.first["added"]
        t["negative_pooled_prompt_embeds"], t["pooled_prompt_embeds"] = a["text_embeds"][0:1], a["text_embeds"][1:2]
        t["add_neg_time_ids"], t["add_time_ids"] = a["time_ids"][0:1], a["time_ids"][1:2]
    for i, l in enumerate(rec.latents):
        t[f"latent_after_step_{i}"] = l
    return out, t, rec


def finish(t, out_images, latent):
    t["final_latent"] = latent.detach().float().clone()
    if out_images is not None:
        t["image"] = hwc(out_images)


def sdxl_cases(base, refiner, commit):
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
    tensors, manifest = {}, []
    # every case's scheduler comes from the saved folders' configs (the pipelines' schedulers get replaced per case)
    base_cfg, refiner_cfg = dict(base.scheduler.config), dict(refiner.scheduler.config)
    euler = lambda: EulerDiscreteScheduler.from_config(base_cfg)  # noqa: E731
    dpm = lambda: DPMSolverMultistepScheduler.from_config(base_cfg, use_karras_sigmas=True)  # noqa: E731

    def add(name, t, meta, rec):
        for k, v in t.items():
            tensors[f"{name}/{k}"] = v.detach().cpu().float().contiguous()
        img = t.get("image")
        meta["stats"] = image_stats(img, rec.rel) if img is not None else dict(cond_uncond_rel=sum(rec.rel) / len(rec.rel))
        meta["stats"]["final_latent_rms"] = float(t["final_latent"].pow(2).mean().sqrt())
        meta["model_calls"] = len(rec.calls)
        meta["diffusers_commit"] = commit
        manifest.append(meta)
        log(f"{name}: ok steps={meta.get('steps')} calls={len(rec.calls)} stats={json.dumps(meta['stats'])}")

    simple = [
        # name, prompt, negative, seed, steps, cfg, w, h, scheduler, sampler, comfy scheduler, extra
        ("euler_64", PROMPT, NEGATIVE, 1234, 8, 5.0, 64, 64, euler, "euler", "ddim_uniform", {}),
        ("dpmpp2m_karras_96x64_sizes", PROMPT, NEGATIVE, 42, 10, 6.0, 96, 64, dpm, "dpmpp_2m", "karras",
         dict(original_size=(128, 192), crops_coords_top_left=(8, 16), target_size=(64, 96))),
        ("euler_no_negative", PROMPT, None, 7, 8, 5.0, 64, 64, euler, "euler", "ddim_uniform", {}),
        ("euler_long_prompt", LONG_PROMPT, NEGATIVE, 99, 8, 5.0, 64, 64, euler, "euler", "ddim_uniform", {}),
    ]
    finals = {}
    for name, prompt, neg, seed, steps, cfg, w, h, mk, sampler, sched, extra in simple:
        try:
            s = mk()
            out, t, rec = run_t2i(base, s, prompt, neg, seed, steps, cfg, w, h, **dict(extra, output_type="latent"))
            lat = out.images
            img = base.vae.decode(lat / base.vae.config.scaling_factor).sample
            img = (img / 2 + 0.5).clamp(0, 1)
            # output_type="latent" then the pipeline's own decode below: compare with a full "pt" run
            out2, t2, rec2 = run_t2i(base, mk(), prompt, neg, seed, steps, cfg, w, h, **dict(extra, output_type="pt"))
            if float((out2.images - img).abs().max()) > 1e-5:
                raise RuntimeError("pipeline decode differs from vae.decode of the latent output")
            finish(t, out2.images, lat)
            finals[name] = lat.detach().clone()
            meta = dict(name=name, model="sdxl-tiny", pipeline="StableDiffusionXLPipeline", prompt=prompt, negative=neg,
                        seed=seed, steps=steps, cfg=cfg, width=w, height=h, sampler=sampler, scheduler=sched,
                        diffusers_call=dict(extra, negative_prompt=neg), token_ids=token_ids(base, prompt),
                        negative_token_ids=token_ids(base, neg), **sched_info(s))
            if neg is None:
                meta["note"] = "negative_prompt=None with force_zeros_for_empty_prompt: zero negative embeddings and pooled"
            if prompt is LONG_PROMPT:
                meta["note"] = "diffusers truncates to 77 tokens (75 + start + end) for both encoders"
                meta["untruncated_length"] = len(base.tokenizer(prompt)["input_ids"])
            add(name, t, meta, rec)
        except Exception as e:
            log(f"{name}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=6)

    # (5) step swap: base 0..0.8 (latent output with leftover noise), refiner 0.8..1.
    name = "swap_base_refiner"
    try:
        seed, steps, cfg, w, h = 2024, 10, 5.0, 64, 64
        s_base = euler()
        out, tb, recb = run_t2i(base, s_base, PROMPT, NEGATIVE, seed, steps, cfg, w, h, denoising_end=0.8, output_type="latent")
        switch = out.images.detach().clone()
        refiner.scheduler = EulerDiscreteScheduler.from_config(refiner_cfg)
        recr = Recorder(refiner.unet)
        try:
            outr = refiner(prompt=PROMPT, negative_prompt=NEGATIVE, image=switch.clone(), num_inference_steps=steps,
                           denoising_start=0.8, guidance_scale=cfg, aesthetic_score=6.0, negative_aesthetic_score=2.5,
                           generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=recr.callback,
                           output_type="pt")
        finally:
            recr.close()
        # the refiner's final latent: its last callback latents
        t = {f"base/{k}": v for k, v in tb.items()}
        t["switch_latent"] = switch
        rs = refiner.scheduler
        t["refiner/sigmas"] = rs.sigmas.detach().float().clone()
        t["refiner/timesteps"] = rs.timesteps.detach().float().clone()
        t["refiner/model_timesteps"] = torch.tensor(recr.calls, dtype=torch.float32)
        ctx, a = recr.first["context"], recr.first["added"]
        t["refiner/negative_prompt_embeds"], t["refiner/prompt_embeds"] = ctx[0:1], ctx[1:2]
        t["refiner/negative_pooled_prompt_embeds"], t["refiner/pooled_prompt_embeds"] = a["text_embeds"][0:1], a["text_embeds"][1:2]
        t["refiner/add_neg_time_ids"], t["refiner/add_time_ids"] = a["time_ids"][0:1], a["time_ids"][1:2]
        for i, l in enumerate(recr.latents):
            t[f"refiner/latent_after_step_{i}"] = l
        t["final_latent"] = recr.latents[-1]
        t["image"] = hwc(outr.images)
        meta = dict(name=name, model="sdxl-tiny + sdxl-refiner-tiny",
                    pipeline="StableDiffusionXLPipeline(denoising_end=0.8, output_type='latent') -> "
                             "StableDiffusionXLImg2ImgPipeline(image=latent, denoising_start=0.8)",
                    prompt=PROMPT, negative=NEGATIVE, seed=seed, steps=steps, cfg=cfg, width=w, height=h, sampler="euler",
                    scheduler="ddim_uniform", denoising_end=0.8, denoising_start=0.8, aesthetic_score=6.0,
                    negative_aesthetic_score=2.5, base_steps_run=len(recb.latents), refiner_steps_run=len(recr.latents),
                    refiner_first_step_index=len(rs.timesteps) - len(recr.latents),
                    switch_rule="diffusers: cutoff = round(1000 - 0.8*1000) = 200; base runs timesteps >= cutoff, "
                                "refiner runs timesteps < cutoff (set_begin_index); no noise is added at the switch",
                    token_ids=token_ids(refiner, PROMPT), base_scheduler=sched_info(s_base), **sched_info(rs))
        recr.rel = recb.rel + recr.rel
        add(name, t, meta, recr)
    except Exception as e:
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=6)

    # (6) refiner applied to case 1's final latent (img2img, strength 0.3).
    name = "refiner_img2img"
    try:
        if "euler_64" not in finals:
            raise RuntimeError("needs case euler_64")
        seed, steps, cfg, strength = 555, 10, 5.0, 0.3
        init = finals["euler_64"]
        refiner.scheduler = EulerDiscreteScheduler.from_config(refiner_cfg)
        seen = {}
        orig_add = refiner.scheduler.add_noise

        def add_noise(original, noise, timesteps):
            seen["noise"], seen["timesteps"] = noise.detach().clone(), timesteps.detach().clone()
            res = orig_add(original, noise, timesteps)
            seen["noised"] = res.detach().clone()
            return res

        refiner.scheduler.add_noise = add_noise
        rec = Recorder(refiner.unet)
        try:
            out = refiner(prompt=PROMPT, negative_prompt=NEGATIVE, image=init.clone(), strength=strength,
                          num_inference_steps=steps, guidance_scale=cfg, aesthetic_score=6.0, negative_aesthetic_score=2.5,
                          generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=rec.callback,
                          output_type="pt")
        finally:
            rec.close()
        rs = refiner.scheduler
        redraw = torch.randn(init.shape, generator=torch.Generator("cpu").manual_seed(seed))
        t = {"init_latent": init, "noise": seen["noise"], "noised_latent": seen["noised"],
             "noise_timestep": seen["timesteps"].float(), "sigmas": rs.sigmas.detach().float().clone(),
             "timesteps": rs.timesteps.detach().float().clone(), "model_timesteps": torch.tensor(rec.calls, dtype=torch.float32)}
        ctx, a = rec.first["context"], rec.first["added"]
        t["negative_prompt_embeds"], t["prompt_embeds"] = ctx[0:1], ctx[1:2]
        t["negative_pooled_prompt_embeds"], t["pooled_prompt_embeds"] = a["text_embeds"][0:1], a["text_embeds"][1:2]
        t["add_neg_time_ids"], t["add_time_ids"] = a["time_ids"][0:1], a["time_ids"][1:2]
        for i, l in enumerate(rec.latents):
            t[f"latent_after_step_{i}"] = l
        t["final_latent"] = rec.latents[-1]
        t["image"] = hwc(out.images)
        meta = dict(name=name, model="sdxl-refiner-tiny", pipeline="StableDiffusionXLImg2ImgPipeline(image=latent of euler_64)",
                    prompt=PROMPT, negative=NEGATIVE, seed=seed, steps=steps, strength=strength, cfg=cfg, width=64, height=64,
                    sampler="euler", scheduler="ddim_uniform", aesthetic_score=6.0, negative_aesthetic_score=2.5,
                    steps_run=len(rec.latents), first_step_index=len(rs.timesteps) - len(rec.latents),
                    noise_is_randn_of_seed=bool(torch.equal(redraw, seen["noise"])),
                    strength_rule="diffusers: init_timestep = int(steps*strength); the last init_timestep of the steps "
                                  "timesteps run; noise = randn(generator seeded) added by scheduler.add_noise at the first",
                    token_ids=token_ids(refiner, PROMPT), **sched_info(rs))
        add(name, t, meta, rec)
    except Exception as e:
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=6)

    # (7) img2img from an image on the base (StableDiffusionXLImg2ImgPipeline with the base's components): the image
    # is VAE-encoded and the posterior SAMPLED with the seeded generator (retrieve_latents' default), then the noise
    # is the generator's next draw.
    name = "img2img_image"
    try:
        from diffusers import StableDiffusionXLImg2ImgPipeline
        seed, steps, cfg, strength, w, h = 77, 10, 5.0, 0.6, 64, 64
        pix = init_pixels(w, h)
        i2i = StableDiffusionXLImg2ImgPipeline(**base.components)
        i2i.scheduler = euler()
        seen = {}
        orig_add = i2i.scheduler.add_noise

        def add_noise2(original, noise, timesteps):
            seen["original"], seen["noise"], seen["timesteps"] = original.detach().clone(), noise.detach().clone(), timesteps.detach().clone()
            res = orig_add(original, noise, timesteps)
            seen["noised"] = res.detach().clone()
            return res

        i2i.scheduler.add_noise = add_noise2
        rec = Recorder(i2i.unet)
        try:
            out = i2i(prompt=PROMPT, negative_prompt=NEGATIVE, image=pix / 255.0, strength=strength, num_inference_steps=steps,
                      guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=rec.callback,
                      output_type="pt")
        finally:
            rec.close()
        s = i2i.scheduler
        gen = torch.Generator("cpu").manual_seed(seed)
        eps = torch.randn(seen["original"].shape, generator=gen)
        noise2 = torch.randn(seen["original"].shape, generator=gen)
        moments = i2i.vae.encode(pix / 255.0 * 2 - 1).latent_dist
        t = {"init_pixels": pix, "posterior_mean": moments.mean * i2i.vae.config.scaling_factor,
             "posterior_std": moments.std * i2i.vae.config.scaling_factor, "posterior_eps": eps,
             "init_latent": seen["original"], "noise": seen["noise"], "noised_latent": seen["noised"],
             "noise_timestep": seen["timesteps"].float(), "sigmas": s.sigmas.detach().float().clone(),
             "timesteps": s.timesteps.detach().float().clone(), "model_timesteps": torch.tensor(rec.calls, dtype=torch.float32)}
        ctx, a = rec.first["context"], rec.first["added"]
        t["negative_prompt_embeds"], t["prompt_embeds"] = ctx[0:1], ctx[1:2]
        t["add_neg_time_ids"], t["add_time_ids"] = a["time_ids"][0:1], a["time_ids"][1:2]
        for i, l in enumerate(rec.latents):
            t[f"latent_after_step_{i}"] = l
        t["final_latent"] = rec.latents[-1]
        t["image"] = hwc(out.images)
        want = moments.mean * i2i.vae.config.scaling_factor + moments.std * i2i.vae.config.scaling_factor * eps
        meta = dict(name=name, model="sdxl-tiny", pipeline="StableDiffusionXLImg2ImgPipeline(**base.components, image=pixels/255)",
                    prompt=PROMPT, negative=NEGATIVE, seed=seed, steps=steps, strength=strength, cfg=cfg, width=w, height=h,
                    sampler="euler", scheduler="ddim_uniform", steps_run=len(rec.latents),
                    first_step_index=len(s.timesteps) - len(rec.latents),
                    noise_is_second_draw=bool(torch.equal(noise2, seen["noise"])),
                    init_latent_is_sampled_posterior=float((want - seen["original"]).abs().max()),
                    strength_rule="diffusers: init_timestep = int(steps*strength); the last init_timestep of the steps "
                                  "timesteps run; init latent = (mean + std*randn(gen))*scale, then noise = randn(gen)",
                    token_ids=token_ids(base, PROMPT), **sched_info(s))
        add(name, t, meta, rec)
    except Exception as e:
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=6)
    return tensors, manifest


def sd2_cases(sd2, commit):
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
    tensors, manifest = {}, []
    # The released SD 2.1 scheduler config (a DDIM one) names no timestep_spacing, so from_config gives diffusers'
    # Euler/DPM default "linspace"; the saved folder's config spells DDIM's "leading" out: ask for linspace.
    cfg0 = dict(sd2.scheduler.config, timestep_spacing="linspace")
    cases = [
        ("v_euler_64", lambda: EulerDiscreteScheduler.from_config(cfg0), 1234, 8, SD2_CFG, 64, 64, "euler", "normal", {}),
        ("v_dpmpp2m_karras_96x64", lambda: DPMSolverMultistepScheduler.from_config(cfg0, use_karras_sigmas=True), 42, 10, SD2_CFG, 96, 64,
         "dpmpp_2m", "karras", {}),
        ("eps_euler_64", lambda: EulerDiscreteScheduler.from_config(cfg0, prediction_type="epsilon"), 1234, 8, SD2_CFG, 64, 64, "euler",
         "normal", {}),
        ("v_zsnr_trailing_euler_64", lambda: EulerDiscreteScheduler.from_config(cfg0, rescale_betas_zero_snr=True,
                                                                                  timestep_spacing="trailing"),
         1234, 8, SD2_CFG, 64, 64, "euler", "simple", dict(guidance_rescale=0.0)),
    ]
    for name, mk, seed, steps, cfg, w, h, sampler, sched, extra in cases:
        try:
            s = mk()
            out, t, rec = run_t2i(sd2, s, SD2_PROMPT, NEGATIVE, seed, steps, cfg, w, h, xl=False, output_type="pt", **extra)
            lat = rec.latents[-1]
            finish(t, out.images, lat)
            for k, v in t.items():
                tensors[f"{name}/{k}"] = v.detach().cpu().float().contiguous()
            meta = dict(name=name, model="sd2-tiny", pipeline="StableDiffusionPipeline", prompt=SD2_PROMPT, negative=NEGATIVE,
                        seed=seed, steps=steps, cfg=cfg, width=w, height=h, sampler=sampler, scheduler=sched,
                        prediction_type=s.config.prediction_type, diffusers_call=extra,
                        token_ids=token_ids(sd2, SD2_PROMPT), negative_token_ids=token_ids(sd2, NEGATIVE),
                        diffusers_commit=commit, model_calls=len(rec.calls), **sched_info(s))
            meta["stats"] = image_stats(t["image"], rec.rel)
            meta["stats"]["final_latent_rms"] = float(lat.pow(2).mean().sqrt())
            manifest.append(meta)
            log(f"{name}: ok sigmas[:3]={[round(float(x), 3) for x in t['sigmas'][:3]]} stats={json.dumps(meta['stats'])}")
        except Exception as e:
            log(f"{name}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=6)
    return tensors, manifest


def finite(o):
    """JSON has no infinities (a scheduler config's lambda_min_clipped is -inf): non-finite floats become strings."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--diffusers", required=True, help="diffusers checkout (its scripts/ holds the conversion scripts)")
    ap.add_argument("--merges", required=True, help="OpenAI's bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    os.makedirs(args.out, exist_ok=True)
    import diffusers
    import transformers
    commit = ""
    cf = os.path.join(args.diffusers, "COMMIT")
    if os.path.isfile(cf):
        commit = open(cf).read().strip()
    versions = dict(diffusers=diffusers.__version__, diffusers_commit=commit, transformers=transformers.__version__,
                    torch=torch.__version__)
    log(f"versions: {versions}")
    conv_xl = load_module(os.path.join(args.diffusers, "scripts", "convert_diffusers_to_original_sdxl.py"), "convert_sdxl")
    conv_sd = load_module(os.path.join(args.diffusers, "scripts", "convert_diffusers_to_original_stable_diffusion.py"), "convert_sd")

    vocab, merges = tiny_vocab(args.merges)
    models = make_models(args.seed)
    folders, mem = build_and_save(models, args.out, vocab, merges, diffusers)
    from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    base, how_b = load_pipeline(StableDiffusionXLPipeline, folders["sdxl-tiny"], mem["base"])
    refiner, how_r = load_pipeline(StableDiffusionXLImg2ImgPipeline, folders["sdxl-refiner-tiny"], mem["refiner"])
    sd2, how_s = load_pipeline(StableDiffusionPipeline, folders["sd2-tiny"], mem["sd2"])
    log(f"loaded: base {how_b}, refiner {how_r}, sd2 {how_s}; max |reloaded - in-memory| "
        f"{check_same_weights(base, mem['base'], ['unet', 'vae', 'text_encoder', 'text_encoder_2'])}, "
        f"{check_same_weights(refiner, mem['refiner'], ['unet', 'vae', 'text_encoder_2'])}, "
        f"{check_same_weights(sd2, mem['sd2'], ['unet', 'vae', 'text_encoder'])}")

    # transformers' pooling position (released configs: eos_token_id 2 -> argmax(ids)) must be the first <|endoftext|>.
    ids = base.tokenizer_2(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    o = base.text_encoder_2(ids, output_hidden_states=True)
    first = int((ids[0] == EOS_ID).nonzero()[0])
    want = base.text_encoder_2.text_projection(o.last_hidden_state[:, first])
    log(f"bigG pooled at first end token ({first}): max |d| {float((o.text_embeds - want).abs().max()):.3g}")

    from safetensors.torch import save_file
    checks = {}
    for name, kind, pipe in (("sdxl-tiny", "sdxl", base), ("sdxl-refiner-tiny", "refiner", refiner), ("sd2-tiny", "sd2", sd2)):
        try:
            if kind == "sd2":
                sd = sd2_single_file(folders[name], conv_sd, conv_xl, args.seed + 7)
            else:
                sd = sdxl_single_file(folders[name], conv_xl, refiner=(kind == "refiner"))
            path = os.path.join(args.out, name, "single.safetensors")
            save_file(sd, path)
            checks[name] = check_single_file(name, sd, folders[name], pipe, kind)
            log(f"  {path}: {len(sd)} tensors, {os.path.getsize(path)} bytes")
        except Exception as e:
            log(f"{name} single file: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=6)
            checks[name] = dict(ok=False, error=str(e))

    failed = 0
    for fname, (tensors, manifest) in (("sdxl_cases", sdxl_cases(base, refiner, commit)), ("sd2_cases", sd2_cases(sd2, commit))):
        save_file({k: v.detach().cpu().float().clone().contiguous() for k, v in tensors.items()},
                  os.path.join(args.out, fname + ".safetensors"))
        with open(os.path.join(args.out, fname + ".json"), "w") as f:
            json.dump(finite(dict(versions=versions, loaded=dict(base=how_b, refiner=how_r, sd2=how_s), single_file_checks=checks,
                                  cases=manifest)), f, indent=1, default=str)
        log(f"{fname}: {len(manifest)} cases, {len(tensors)} tensors")
    want = 7 + 4
    got = sum(len(json.load(open(os.path.join(args.out, f + ".json")))["cases"]) for f in ("sdxl_cases", "sd2_cases"))
    failed = want - got + sum(0 if c.get("ok") else 1 for c in checks.values())
    log(f"done: {got}/{want} cases, single-file checks {[(k, v.get('ok')) for k, v in checks.items()]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
