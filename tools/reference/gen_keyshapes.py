#!/usr/bin/env python3
"""Real-size tensor key lists (names, dtypes, shapes; no data) of diffusion checkpoints.

Builds the real model configs on the torch `meta` device with the upstream model
code (diffusers, transformers, Black Forest Labs' `flux`, Stability AI's `sd3.5`
reference code), converts the state-dict names into the layouts users have on disk
(single-file, diffusers folder, split component files) and writes one gzip-compressed
JSON file per (model, layout). See tools/reference/keyshapes.md for the output format
and for how sure each layout is.

How to run (no weights, no network; a CPU is enough, about a minute):

    python3 tools/reference/gen_keyshapes.py --ref .ref/keyshapes --out OUTDIR

`--ref` is an ignored folder holding `src.tgz`, a tarball with
  diffusers/                src/diffusers of huggingface/diffusers @ 58eb52c0803ea9af3abec60841c2a093bdf1f951
                            (without pipelines/, modular_pipelines/, commands/, experimental/)
  diffusers_scripts/        scripts/convert_diffusers_to_original_stable_diffusion.py,
                            scripts/convert_diffusers_to_original_sdxl.py and
                            src/diffusers/pipelines/stable_diffusion/safety_checker.py (same commit)
  flux/                     src/flux/{__init__,math,model}.py, modules/{layers,lora,autoencoder}.py of
                            black-forest-labs/flux @ 802fb4713906133fcbd0d8dc5351620ca4773036
  flux2/                    src/flux2/model.py (+ empty __init__.py) of
                            black-forest-labs/flux2 @ ab7cca68018ad3ceadcace9d6ecb1bc1f6f46b4e
  sd35ref/                  mmditx.py, sd3_impls.py, other_impls.py, dit_embedder.py of
                            Stability-AI/sd3.5 @ fbf8f483f992d8d6ad4eaaeb23b1dc5f523c3b3a
It needs torch (>= 2.1), transformers (5.x), accelerate, safetensors, einops, numpy, PIL.
It was run with torch 2.11, transformers 5.17 on the project's remote machine.
The upstream code is imported at run time from that folder and is never copied into
the repo.

Each model is built in its own try/except; a summary table is printed at the end.
Every derived layout is checked where an independent converter exists: the single-file
names are run back through diffusers' own single-file loader converters
(diffusers/loaders/single_file_utils.py) and must give exactly the diffusers model's
names and shapes, with every source tensor consumed.
"""

import argparse
import copy
import gzip
import io
import json
import os
import re
import sys
import tarfile
import traceback
import types
from collections import OrderedDict

ap = argparse.ArgumentParser()
ap.add_argument("--ref", default=".ref/keyshapes", help="folder with src.tgz (see header)")
ap.add_argument("--out", default="testdata/keyshapes", help="output folder")
ap.add_argument("--only", default="", help="comma-separated name prefixes to build (default: all)")
ap.add_argument("--shared", default="", help="folder with sd15_keyshapes.json / sdxl_keyshapes.json to compare")
ARGS = ap.parse_args()

SRC = "/tmp/keyshapes_src"
if not os.path.isdir(SRC):
    os.makedirs(SRC)
    with tarfile.open(os.path.join(ARGS.ref, "src.tgz")) as tf:
        tf.extractall(SRC)
for p in (SRC, os.path.join(SRC, "sd35ref"), os.path.join(SRC, "diffusers_scripts")):
    sys.path.insert(0, p)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

OUT = ARGS.out
os.makedirs(OUT, exist_ok=True)

# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def on_meta(fn):
    """Build a module with all parameters and buffers on the meta device."""
    try:
        with torch.device("meta"):
            return fn()
    except Exception as e:  # some constructors compute buffers with numpy / .item()
        print("  (meta-device build failed: %r; retrying with accelerate.init_empty_weights)" % (e,))
        from accelerate import init_empty_weights
        with init_empty_weights():
            return fn()


def msd(module):
    """state_dict (names -> meta tensors), as torch would save it (persistent buffers included)."""
    return OrderedDict(module.state_dict().items())


def listing(sd, dtype, fp8=False):
    """names -> [safetensors dtype, shape].  Floating tensors get `dtype` (the dtype the released
    file stores); integer buffers keep their integer dtype; with fp8=True tensors of rank >= 2 are
    F8_E4M3 (the usual layout of fp8 checkpoints: matrices fp8, vectors in 16 bit)."""
    out = OrderedDict()
    for k, v in sd.items():
        if isinstance(v, list):
            out[k] = v
            continue
        shape = [int(s) for s in v.shape]
        if not v.dtype.is_floating_point:
            d = DTYPE_NAMES[v.dtype]
        elif fp8 and len(shape) >= 2:
            d = "F8_E4M3"
        else:
            d = dtype
        out[k] = [d, shape]
    return out


def prefixed(sd, prefix):
    return OrderedDict((prefix + k, v) for k, v in sd.items())


def shape_of(v):
    return [int(s) for s in (v[1] if isinstance(v, list) else v.shape)]


def compare(a, b):
    """(missing in a, extra in a, shape mismatches) between two name->tensor/[dtype,shape] maps."""
    missing = sorted(set(b) - set(a))
    extra = sorted(set(a) - set(b))
    bad = sorted(k for k in set(a) & set(b) if shape_of(a[k]) != shape_of(b[k]))
    return missing, extra, bad


CHECKS = []  # (model name, check description, ok, detail)


def check(name, what, a, b, leftover=None):
    missing, extra, bad = compare(a, b)
    ok = not (missing or extra or bad or leftover)
    detail = ""
    if not ok:
        detail = "missing %d %s extra %d %s shape %d %s leftover %s" % (
            len(missing), missing[:4], len(extra), extra[:4], len(bad), bad[:4],
            (sorted(leftover)[:4] if leftover else []))
    CHECKS.append((name, what, ok, detail))
    print("  check %-60s %s %s" % (what, "OK" if ok else "FAIL", detail))
    return ok


def fake(sd):
    """A state dict that the converters can mutate (meta tensors; shapes only)."""
    return OrderedDict((k, v if isinstance(v, torch.Tensor) else torch.empty(v[1], device="meta"))
                       for k, v in sd.items())


RESULTS = []  # (name, layout, family, n tensors, bytes of the json.gz, note)


def emit(name, family, layout, source, files, jsonfiles=None):
    doc = OrderedDict()
    doc["name"] = name
    doc["family"] = family
    doc["layout"] = layout
    doc["source"] = source
    doc["files"] = OrderedDict()
    n = 0
    for path, ent in files.items():
        if isinstance(ent, dict) and "tensors" in ent:
            e = OrderedDict()
            if ent.get("metadata"):
                e["metadata"] = ent["metadata"]
            e["tensors"] = ent["tensors"]
        else:
            e = OrderedDict([("tensors", ent)])
        n += len(e["tensors"])
        doc["files"][path] = e
    if jsonfiles:
        doc["json"] = jsonfiles
    raw = json.dumps(doc, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    path = os.path.join(OUT, name + ".json.gz")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    RESULTS.append((name, layout, family, n, len(buf.getvalue()), "ok"))
    print("  wrote %s: %d tensors, %d bytes" % (path, n, len(buf.getvalue())))


def dconfig(model, cls_name, version):
    """config.json as diffusers' save_pretrained writes it (all init arguments)."""
    cfg = OrderedDict([("_class_name", cls_name), ("_diffusers_version", version)])
    for k, v in dict(model.config).items():
        if not k.startswith("_"):
            cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def pick(cfg, names):
    return {k: cfg[k] for k in names.split() if k in cfg}


def expect(sd, name, shape):
    got = shape_of(sd[name]) if name in sd else None
    CHECKS.append(("shape", name, got == list(shape), "got %s want %s" % (got, list(shape))))
    print("  shape %-60s %s (got %s)" % (name, "OK" if got == list(shape) else "FAIL", got))


def load_script(name, path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_cache = {}


def cached(fn):
    def wrap(*a):
        key = (fn.__name__,) + a
        if key not in _cache:
            _cache[key] = fn(*a)
        return _cache[key]
    wrap.__name__ = fn.__name__
    return wrap


def sfu():
    from diffusers.loaders import single_file_utils
    return single_file_utils


def sd_script():
    return load_script("conv_sd", os.path.join(SRC, "diffusers_scripts", "convert_diffusers_to_original_stable_diffusion.py"))


def sdxl_script():
    return load_script("conv_sdxl", os.path.join(SRC, "diffusers_scripts", "convert_diffusers_to_original_sdxl.py"))


# ----------------------------------------------------------------------------------------
# real configs
# ----------------------------------------------------------------------------------------

# stable-diffusion-v1-5/stable-diffusion-v1-5 unet/config.json
SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# stable-diffusion-v1-5/stable-diffusion-v1-5 vae/config.json (SD2.1: sample_size 768)
SD_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# openai/clip-vit-large-patch14 text tower = SD1.5 text_encoder/config.json = FLUX.1 text_encoder/config.json
CLIP_L = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "vocab_size": 49408,
}
# laion/CLIP-ViT-bigG-14-laion2B-39B-b160k text tower = SDXL text_encoder_2/config.json
CLIP_G = {
    "architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1280, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 20, "num_hidden_layers": 32, "pad_token_id": 1,
    "projection_dim": 1280, "vocab_size": 49408,
}
# OpenCLIP ViT-H/14 text tower as stabilityai/stable-diffusion-2-1 text_encoder/config.json (23 of 24 layers)
CLIP_H_SD2 = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1024, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1,
    "projection_dim": 512, "vocab_size": 49408,
}
# CompVis/stable-diffusion-safety-checker config.json (vision tower ViT-L/14 + projection 768)
SAFETY = {
    "projection_dim": 768,
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "image_size": 224, "hidden_act": "quick_gelu"},
}
# stabilityai/stable-diffusion-2-1 unet/config.json
SD21_UNET = dict(SD15_UNET, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                 use_linear_projection=True, upcast_attention=True, sample_size=96)
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
SDXL_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
    "center_input_sample": False, "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False, "resnet_time_scale_shift": "default", "sample_size": 128,
    "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
    "use_linear_projection": True,
}
# stabilityai/stable-diffusion-xl-refiner-1.0 unet/config.json
SDXL_REFINER_UNET = dict(
    SDXL_UNET, attention_head_dim=[6, 12, 12, 12], block_out_channels=[384, 768, 1536, 1536],
    cross_attention_dim=1280,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    projection_class_embeddings_input_dim=2560, transformer_layers_per_block=4)
# stabilityai/stable-diffusion-xl-base-1.0 vae/config.json (refiner: same)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# black-forest-labs/FLUX.1-dev vae/config.json (= Z-Image-Turbo vae/config.json)
FLUX_VAE = dict(SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                force_upcast=True, use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)
# stabilityai/stable-diffusion-3.5-large vae/config.json (SD3 16-channel VAE)
SD3_VAE = dict(SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
               force_upcast=True, use_quant_conv=False, use_post_quant_conv=False)
# SD3 text encoders (stabilityai/stable-diffusion-3.5-large text_encoder*/config.json)
CLIP_L_PROJ = dict(CLIP_L, architectures=["CLIPTextModelWithProjection"])
# google/t5-v1_1-xxl encoder (FLUX.1 text_encoder_2/config.json, SD3 text_encoder_3/config.json)
T5XXL = {
    "architectures": ["T5EncoderModel"], "d_ff": 10240, "d_kv": 64, "d_model": 4096, "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06,
    "model_type": "t5", "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "output_past": True,
    "pad_token_id": 0, "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False, "vocab_size": 32128,
}
# stabilityai/stable-diffusion-3.5-large transformer/config.json
SD35L_TR = {"attention_head_dim": 64, "caption_projection_dim": 2432, "in_channels": 16, "joint_attention_dim": 4096,
            "num_attention_heads": 38, "num_layers": 38, "out_channels": 16, "patch_size": 2,
            "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "qk_norm": "rms_norm", "sample_size": 128}
# stabilityai/stable-diffusion-3.5-medium transformer/config.json
SD35M_TR = {"attention_head_dim": 64, "caption_projection_dim": 1536, "dual_attention_layers": list(range(13)),
            "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24,
            "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
            "qk_norm": "rms_norm", "sample_size": 128}
# stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
SD3M_TR = {"attention_head_dim": 64, "caption_projection_dim": 1536, "in_channels": 16, "joint_attention_dim": 4096,
           "num_attention_heads": 24, "num_layers": 24, "out_channels": 16, "patch_size": 2,
           "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "sample_size": 128}
# black-forest-labs/FLUX.1-dev transformer/config.json (schnell: guidance_embeds false)
FLUX_DEV_TR = {"attention_head_dim": 128, "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096,
               "num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38, "patch_size": 1,
               "pooled_projection_dim": 768, "axes_dims_rope": [16, 56, 56]}
# flux/util.py configs["flux-dev"].params (BFL)
FLUX_PARAMS = dict(in_channels=64, out_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                   mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                   theta=10_000, qkv_bias=True, guidance_embed=True)
# flux/util.py configs["flux-dev"].ae_params (BFL ae.safetensors)
FLUX_AE_PARAMS = dict(resolution=256, in_channels=3, ch=128, out_ch=3, ch_mult=[1, 2, 4, 4], num_res_blocks=2,
                      z_channels=16, scale_factor=0.3611, shift_factor=0.1159)
# Tongyi-MAI/Z-Image-Turbo transformer/config.json
ZIMAGE_TR = {"all_f_patch_size": [1], "all_patch_size": [2], "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
             "cap_feat_dim": 2560, "dim": 3840, "in_channels": 16, "n_heads": 30, "n_kv_heads": 30, "n_layers": 30,
             "n_refiner_layers": 2, "norm_eps": 1e-05, "qk_norm": True, "rope_theta": 256.0, "t_scale": 1000.0}
# Qwen/Qwen3-4B config.json (= Z-Image-Turbo text_encoder/config.json)
QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2560, "initializer_range": 0.02,
    "intermediate_size": 9728, "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000, "tie_word_embeddings": True, "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
# Qwen/Qwen-Image transformer/config.json
QWEN_IMAGE_TR = {"attention_head_dim": 128, "axes_dims_rope": [16, 56, 56], "guidance_embeds": False,
                 "in_channels": 64, "joint_attention_dim": 3584, "num_attention_heads": 24, "num_layers": 60,
                 "out_channels": 16, "patch_size": 2}
# Qwen/Qwen2.5-VL-7B-Instruct config.json (= Qwen/Qwen-Image text_encoder/config.json)
QWEN25VL_TEXT = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-06,
                 "max_position_embeddings": 128000, "rope_theta": 1000000.0, "hidden_act": "silu",
                 "tie_word_embeddings": False, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
QWEN25VL_VISION = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                   "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
                   "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2}
# black-forest-labs/FLUX.2-dev transformer/config.json (as in diffusers scripts/convert_flux2_to_diffusers.py)
FLUX2_DEV_TR = {"patch_size": 1, "in_channels": 128, "num_layers": 8, "num_single_layers": 48,
                "attention_head_dim": 128, "num_attention_heads": 48, "joint_attention_dim": 15360,
                "timestep_guidance_channels": 256, "mlp_ratio": 3.0, "axes_dims_rope": [32, 32, 32, 32],
                "rope_theta": 2000, "eps": 1e-6}
# lodestones/Chroma1-HD transformer/config.json (the class defaults)
CHROMA_TR = {"patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
             "num_attention_heads": 24, "joint_attention_dim": 4096, "axes_dims_rope": [16, 56, 56],
             "approximator_num_channels": 64, "approximator_hidden_dim": 5120, "approximator_layers": 5}
# fal/AuraFlow-v0.3 transformer/config.json
AURA_TR = {"sample_size": 64, "patch_size": 2, "in_channels": 4, "num_mmdit_layers": 4, "num_single_dit_layers": 32,
           "attention_head_dim": 256, "num_attention_heads": 12, "joint_attention_dim": 2048,
           "caption_projection_dim": 3072, "out_channels": 4, "pos_embed_max_size": 9216}
# HiDream-ai/HiDream-I1-Full transformer/config.json
HIDREAM_TR = {"patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 16, "num_single_layers": 32,
              "attention_head_dim": 128, "num_attention_heads": 20, "caption_channels": [4096, 4096],
              "text_emb_dim": 2048, "num_routed_experts": 4, "num_activated_experts": 2,
              "axes_dims_rope": [64, 32, 32], "max_resolution": [128, 128], "llama_layers": list(range(48))}
# Wan-AI/Wan2.1-T2V-14B-Diffusers / -1.3B-Diffusers transformer/config.json (diffusers scripts/convert_wan_to_diffusers.py)
WAN_14B_TR = {"added_kv_proj_dim": None, "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06,
              "ffn_dim": 13824, "freq_dim": 256, "in_channels": 16, "num_attention_heads": 40, "num_layers": 40,
              "out_channels": 16, "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "text_dim": 4096}
WAN_1_3B_TR = dict(WAN_14B_TR, ffn_dim=8960, num_attention_heads=12, num_layers=30)
# Lightricks/LTX-Video 0.9.x 2B transformer/config.json (diffusers scripts/convert_ltx_to_diffusers.py, not 0.9.7)
LTXV_TR = {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
           "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 28,
           "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
           "norm_eps": 1e-6, "caption_channels": 4096, "attention_bias": True, "attention_out_bias": True}

# scheduler configs and model_index.json of the HF folders
SCHED_SD15 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
              "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
              "clip_sample": False}
SCHED_SD21 = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
              "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
              "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
SCHED_SDXL = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
              "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
              "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
              "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}
SCHED_SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.31.0.dev0",
             "num_train_timesteps": 1000, "shift": 3.0}
SCHED_FLUX_DEV = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
                  "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                  "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
SCHED_FLUX_SCHNELL = dict(SCHED_FLUX_DEV, shift=1.0, use_dynamic_shifting=False)
SCHED_ZIMAGE = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.36.0.dev0",
                "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
SCHED_QWEN = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.35.0.dev0",
              "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192,
              "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
              "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
              "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False}


# ----------------------------------------------------------------------------------------
# builders (cached)
# ----------------------------------------------------------------------------------------

@cached
def unet(which):
    from diffusers import UNet2DConditionModel
    cfg = {"sd15": SD15_UNET, "sd21": SD21_UNET, "sdxl": SDXL_UNET, "refiner": SDXL_REFINER_UNET}[which]
    return on_meta(lambda: UNet2DConditionModel.from_config(cfg))


@cached
def vae_kl(which):
    from diffusers import AutoencoderKL
    cfg = {"sd15": SD_VAE, "sd21": dict(SD_VAE, sample_size=768), "sdxl": SDXL_VAE, "flux": FLUX_VAE,
           "sd3": SD3_VAE}[which]
    return on_meta(lambda: AutoencoderKL.from_config(cfg))


@cached
def clip(which):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cfg, proj = {"L": (CLIP_L, False), "Lp": (CLIP_L_PROJ, True), "G": (CLIP_G, True),
                 "H23": (CLIP_H_SD2, False),
                 "H24p": (dict(CLIP_H_SD2, num_hidden_layers=24, projection_dim=1024), True)}[which]
    c = CLIPTextConfig(**pick(cfg, "hidden_act hidden_size intermediate_size layer_norm_eps max_position_embeddings "
                                   "num_attention_heads num_hidden_layers projection_dim vocab_size bos_token_id "
                                   "eos_token_id pad_token_id"))
    cls = CLIPTextModelWithProjection if proj else CLIPTextModel
    return on_meta(lambda: cls(c))


def clip_sd(which):
    """names as the released files store them: transformers 5 flattened CLIPTextModel (no `text_model.`
    level; it maps the stored names on load), so the stored `text_model.` prefix is put back."""
    out = OrderedDict()
    for k, v in msd(clip(which)).items():
        if not (k.startswith("text_model.") or k.startswith("text_projection.")):
            k = "text_model." + k
        out[k] = v
    out.pop("text_model.embeddings.position_ids", None)  # not persistent in transformers >= 4.31
    return out


@cached
def t5xxl():
    from transformers import T5Config, T5EncoderModel
    c = T5Config(**pick(T5XXL, "d_ff d_kv d_model num_heads num_layers vocab_size feed_forward_proj layer_norm_epsilon "
                            "relative_attention_max_distance relative_attention_num_buckets"))
    return on_meta(lambda: T5EncoderModel(c))


def t5_sd(with_embed_tokens):
    sd = msd(t5xxl())
    if not with_embed_tokens:
        sd.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, dropped by save_pretrained
    elif "encoder.embed_tokens.weight" not in sd:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    return sd


@cached
def qwen3_4b():
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(**pick(QWEN3_4B, "hidden_size intermediate_size num_hidden_layers num_attention_heads "
                              "num_key_value_heads head_dim vocab_size rms_norm_eps tie_word_embeddings attention_bias "
                              "hidden_act max_position_embeddings"))
    return on_meta(lambda: Qwen3ForCausalLM(c))


def qwen3_sd():
    sd = msd(qwen3_4b())
    sd.pop("lm_head.weight", None)  # tie_word_embeddings: not stored
    expect(sd, "model.layers.0.self_attn.q_proj.weight", [4096, 2560])
    expect(sd, "model.layers.0.self_attn.k_proj.weight", [1024, 2560])
    expect(sd, "model.layers.35.mlp.down_proj.weight", [2560, 9728])
    expect(sd, "model.embed_tokens.weight", [151936, 2560])
    return sd


@cached
def qwen25vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    text = pick(QWEN25VL_TEXT, "hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
                               "vocab_size rms_norm_eps hidden_act max_position_embeddings tie_word_embeddings")
    vision = pick(QWEN25VL_VISION, "depth hidden_size intermediate_size num_heads in_chans out_hidden_size patch_size "
                                   "spatial_merge_size temporal_patch_size window_size fullatt_block_indexes hidden_act")
    c = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    return on_meta(lambda: Qwen2_5_VLForConditionalGeneration(c))


def qwen25vl_sd():
    """names as the checkpoints store them (transformers' pre-4.52 layout, which save_pretrained keeps
    writing): model.* (language model), visual.*, lm_head.weight."""
    out = OrderedDict()
    for k, v in msd(qwen25vl()).items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = "visual." + k[len("model.visual."):]
        out[k] = v
    expect(out, "model.layers.0.self_attn.k_proj.weight", [512, 3584])
    expect(out, "model.layers.27.mlp.gate_proj.weight", [18944, 3584])
    expect(out, "lm_head.weight", [152064, 3584])
    expect(out, "visual.blocks.31.attn.qkv.weight", [3840, 1280])
    expect(out, "visual.merger.mlp.0.weight", [5120, 5120])
    expect(out, "visual.patch_embed.proj.weight", [1280, 3, 2, 14, 14])
    return out


@cached
def dmodel(cls_name, key):
    import diffusers
    cfg = {"SD3Transformer2DModel": {"L": SD35L_TR, "M": SD35M_TR, "3M": SD3M_TR},
           "FluxTransformer2DModel": {"dev": FLUX_DEV_TR, "schnell": dict(FLUX_DEV_TR, guidance_embeds=False)},
           "ZImageTransformer2DModel": {"turbo": ZIMAGE_TR},
           "QwenImageTransformer2DModel": {"base": QWEN_IMAGE_TR},
           "AutoencoderKLQwenImage": {"base": {}},
           "Flux2Transformer2DModel": {"dev": FLUX2_DEV_TR},
           "ChromaTransformer2DModel": {"hd": CHROMA_TR},
           "AuraFlowTransformer2DModel": {"v0.3": AURA_TR},
           "HiDreamImageTransformer2DModel": {"full": HIDREAM_TR},
           "WanTransformer3DModel": {"14b": WAN_14B_TR, "1.3b": WAN_1_3B_TR},
           "LTXVideoTransformer3DModel": {"2b": LTXV_TR}}[cls_name][key]
    cls = getattr(diffusers, cls_name)
    return on_meta(lambda: cls.from_config(cfg))


@cached
def bfl_flux(guidance):
    from flux.model import Flux, FluxParams
    return on_meta(lambda: Flux(FluxParams(**dict(FLUX_PARAMS, guidance_embed=guidance))))


@cached
def bfl_ae():
    from flux.modules.autoencoder import AutoEncoder, AutoEncoderParams
    return on_meta(lambda: AutoEncoder(AutoEncoderParams(**FLUX_AE_PARAMS)))


@cached
def mmditx(which):
    """Stability's reference MMDiT(-X), built the way sd3_impls.BaseModel derives it from a file."""
    import mmditx as M
    depth, pmax, qk, xattn = {"L": (38, 192, "rms", []), "M": (24, 384, "rms", list(range(13))),
                              "3M": (24, 192, None, [])}[which]
    hidden = 64 * depth
    return on_meta(lambda: M.MMDiTX(
        input_size=None, pos_embed_scaling_factor=None, pos_embed_offset=None, pos_embed_max_size=pmax,
        patch_size=2, in_channels=16, depth=depth, num_patches=pmax * pmax, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        qk_norm=qk, x_block_self_attn_layers=xattn))


@cached
def sd3_vae_ref():
    import sd3_impls
    return on_meta(lambda: sd3_impls.SDVAE(dtype=torch.float32))


@cached
def safety_checker():
    src = open(os.path.join(SRC, "diffusers_scripts", "safety_checker_src.py")).read()
    src = src.replace("from ...utils import", "from diffusers.utils import")
    mod = types.ModuleType("sd_safety_checker")
    exec(compile(src, "safety_checker.py", "exec"), mod.__dict__)
    from transformers import CLIPConfig
    c = CLIPConfig(text_config=SAFETY["text_config"], vision_config=SAFETY["vision_config"],
                   projection_dim=SAFETY["projection_dim"])
    return on_meta(lambda: mod.StableDiffusionSafetyChecker(c))


# ----------------------------------------------------------------------------------------
# layout converters
# ----------------------------------------------------------------------------------------

DDPM_BUFFERS = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2"]


def ddpm_buffers():
    """ldm.models.diffusion.ddpm.DDPM.register_schedule buffers (persistent), 1000 timesteps."""
    return OrderedDict((k, torch.empty(1000, device="meta")) for k in DDPM_BUFFERS)


def position_ids(prefix=""):
    return OrderedDict([(prefix + "text_model.embeddings.position_ids", torch.empty(1, 77, dtype=torch.int64, device="meta"))])


def openclip_text(which, prefix):
    """OpenCLIP text tower names (open_clip CLIP with visual deleted, as SD2/SDXL keep it):
    HF names -> open_clip names with diffusers' own SDXL converter, text_projection back to the
    un-transposed nn.Parameter, plus logit_scale."""
    conv = sdxl_script()
    sd = clip_sd(which)
    oc = conv.convert_openclip_text_enc_state_dict(sd)
    tp = oc.pop("text_projection.weight")
    oc["text_projection"] = tp.T.contiguous()
    oc["logit_scale"] = torch.empty((), device="meta")
    return prefixed(oc, prefix)


def check_ldm_unet(name, ckpt, u):
    S = sfu()
    ck = fake(ckpt)
    conv = S.convert_ldm_unet_checkpoint(ck, dict(u.config))
    return check(name, "LDM unet -> diffusers (single_file_utils)", conv, msd(u))


def check_ldm_vae(name, ckpt, v):
    S = sfu()
    ck = fake(ckpt)
    conv = S.convert_ldm_vae_checkpoint(ck, dict(v.config))
    return check(name, "LDM vae -> diffusers (single_file_utils)", conv, msd(v))


def check_openclip(name, ckpt, prefix, hf_model, ignore_23=False):
    S = sfu()
    conv = S.convert_open_clip_checkpoint(hf_model, fake(ckpt), prefix=prefix)
    want = OrderedDict((k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k, v)
                       for k, v in msd(hf_model).items() if not k.endswith("position_ids"))
    return check(name, "OpenCLIP %s -> HF CLIP (single_file_utils)" % prefix, conv, want)


def check_ldm_clip(name, ckpt, prefix, which):
    conv = sfu().convert_ldm_clip_checkpoint(fake(OrderedDict((k, v) for k, v in ckpt.items() if k.startswith(prefix))))
    conv.pop("text_model.embeddings.position_ids", None)
    return check(name, "LDM CLIP-L %s -> HF CLIP (single_file_utils)" % prefix, conv, clip_sd(which))


def ldm_unet(u, script):
    return prefixed(script.convert_unet_state_dict(OrderedDict(msd(u))), "model.diffusion_model.")


def ldm_vae(v, script, prefix="first_stage_model."):
    return prefixed(script.convert_vae_state_dict(OrderedDict(msd(v))), prefix)


def load_shared(fn):
    for d in [ARGS.shared, "/work/shared/keyshapes", "../shared/keyshapes", "shared/keyshapes"]:
        if d and os.path.exists(os.path.join(d, fn)):
            return json.load(open(os.path.join(d, fn)))
    return None


DIFFS = []


def compare_shared(name, mine, fn):
    ref = load_shared(fn)
    if ref is None:
        print("  (no %s to compare)" % fn)
        return
    missing, extra, bad = compare(mine, ref)
    dt = sorted(k for k in set(mine) & set(ref) if mine[k][0] != ref[k][0])
    msg = "%s vs %s: %d in mine only %s; %d in shared only %s; %d shape diffs %s; %d dtype diffs (e.g. %s)" % (
        name, fn, len(extra), extra[:20], len(missing), missing[:20], len(bad), bad[:5], len(dt),
        ["%s %s/%s" % (k, mine[k][0], ref[k][0]) for k in dt[:2]])
    DIFFS.append(msg)
    print("  " + msg)


# ----------------------------------------------------------------------------------------
# model tasks
# ----------------------------------------------------------------------------------------

def mi(cls, version, **comps):
    d = OrderedDict([("_class_name", cls), ("_diffusers_version", version)])
    for k in sorted(comps):
        d[k] = comps[k]
    return d


def t_sd15():
    S = sd_script()
    u, v, te, sc = unet("sd15"), vae_kl("sd15"), clip("L"), safety_checker()
    te_sd = OrderedDict(list(clip_sd("L").items()) + list(position_ids().items()))
    sc_sd = OrderedDict()
    for k, t in msd(sc).items():  # transformers 5 flattened CLIPVisionModel too: restore vision_model.vision_model.
        if k.startswith("vision_model.") and not k.startswith("vision_model.vision_model."):
            k = "vision_model." + k
        sc_sd[k] = t
    if not any(k.endswith("position_ids") for k in sc_sd):
        sc_sd["vision_model.vision_model.embeddings.position_ids"] = torch.empty(1, 257, dtype=torch.int64, device="meta")
    emit("sd15.diffusers", "SD1.x", "diffusers",
         "stable-diffusion-v1-5/stable-diffusion-v1-5 folder: diffusers UNet2DConditionModel/AutoencoderKL, "
         "transformers CLIPTextModel and StableDiffusionSafetyChecker on meta; fp32 (non-variant files); "
         "text_encoder/safety_checker position_ids kept (files saved with transformers<4.31, believed)",
         OrderedDict([
             ("unet/diffusion_pytorch_model.safetensors", listing(msd(u), "F32")),
             ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "F32")),
             ("text_encoder/model.safetensors", listing(te_sd, "F32")),
             ("safety_checker/model.safetensors", listing(sc_sd, "F32")),
         ]),
         OrderedDict([
             ("model_index.json", mi("StableDiffusionPipeline", "0.6.0",
                                     feature_extractor=["transformers", "CLIPImageProcessor"],
                                     safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                                     scheduler=["diffusers", "PNDMScheduler"], text_encoder=["transformers", "CLIPTextModel"],
                                     tokenizer=["transformers", "CLIPTokenizer"], unet=["diffusers", "UNet2DConditionModel"],
                                     vae=["diffusers", "AutoencoderKL"])),
             ("scheduler/scheduler_config.json", SCHED_SD15),
             ("unet/config.json", dconfig(u, "UNet2DConditionModel", "0.6.0")),
             ("vae/config.json", dconfig(v, "AutoencoderKL", "0.6.0")),
             ("text_encoder/config.json", CLIP_L),
         ]))
    ck = OrderedDict()
    ck.update(ddpm_buffers())
    ck.update(ldm_unet(u, S))
    ck.update(ldm_vae(v, S))
    ck.update(prefixed(OrderedDict(list(clip_sd("L").items()) + list(position_ids().items())), "cond_stage_model.transformer."))
    check_ldm_unet("sd15.single", ck, u)
    check_ldm_vae("sd15.single", ck, v)
    check_ldm_clip("sd15.single", ck, "cond_stage_model.transformer.", "L")
    lst = listing(ck, "F32")
    compare_shared("sd15.single", lst, "sd15_keyshapes.json")
    emit("sd15.single", "SD1.x", "single-file",
         "v1-5-pruned-emaonly.safetensors (fp32, 4.27 GB): diffusers scripts/convert_diffusers_to_original_stable_diffusion.py "
         "applied to the meta UNet/VAE/CLIP state dicts, plus the LDM DDPM schedule buffers and CLIP position_ids "
         "(I64) the original CompVis checkpoints carry (believed present; not read from the file)",
         {"v1-5-pruned-emaonly.safetensors": lst})


def t_sd21():
    S = sd_script()
    u, v, te = unet("sd21"), vae_kl("sd21"), clip("H23")
    te_sd = OrderedDict(list(clip_sd("H23").items()) + list(position_ids().items()))
    emit("sd21-768v.diffusers", "SD2.x", "diffusers",
         "stabilityai/stable-diffusion-2-1 folder: diffusers UNet/VAE, transformers CLIPTextModel (OpenCLIP-H, 23 layers) "
         "on meta; fp32 (non-variant files); text_encoder position_ids kept (saved with transformers<4.31, believed)",
         OrderedDict([
             ("unet/diffusion_pytorch_model.safetensors", listing(msd(u), "F32")),
             ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "F32")),
             ("text_encoder/model.safetensors", listing(te_sd, "F32")),
         ]),
         OrderedDict([
             ("model_index.json", mi("StableDiffusionPipeline", "0.8.0",
                                     feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=False,
                                     safety_checker=[None, None], scheduler=["diffusers", "DDIMScheduler"],
                                     text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"],
                                     unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"])),
             ("scheduler/scheduler_config.json", SCHED_SD21),
             ("unet/config.json", dconfig(u, "UNet2DConditionModel", "0.8.0")),
             ("vae/config.json", dconfig(v, "AutoencoderKL", "0.8.0")),
             ("text_encoder/config.json", CLIP_H_SD2),
         ]))
    ck = OrderedDict()
    ck.update(ddpm_buffers())
    ck.update(ldm_unet(u, S))
    ck.update(ldm_vae(v, S))
    ck.update(openclip_text("H24p", "cond_stage_model.model."))
    check_ldm_unet("sd21-768v.single", ck, u)
    check_ldm_vae("sd21-768v.single", ck, v)
    check_openclip("sd21-768v.single", ck, "cond_stage_model.model.", te)
    emit("sd21-768v.single", "SD2.x", "single-file",
         "v2-1_768-ema-pruned.safetensors (fp32): diffusers convert_diffusers_to_original_stable_diffusion.py for UNet/VAE; "
         "OpenCLIP ViT-H text tower with all 24 resblocks, text_projection and logit_scale (open_clip keeps them; "
         "diffusers' loader ignores resblocks.23/text_projection); DDPM schedule buffers (believed present)",
         {"v2-1_768-ema-pruned.safetensors": listing(ck, "F32")})


SDXL_META = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base",
             "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
             "modelspec.title": "Stable Diffusion XL 1.0 Base"}


def t_sdxl():
    X = sdxl_script()
    u, v, te, te2 = unet("sdxl"), vae_kl("sdxl"), clip("L"), clip("G")
    emit("sdxl-base.diffusers", "SDXL", "diffusers",
         "stabilityai/stable-diffusion-xl-base-1.0 folder: diffusers UNet/VAE, transformers CLIPTextModel + "
         "CLIPTextModelWithProjection (bigG) on meta; fp32 non-variant files (an .fp16 variant holds the same names in F16)",
         OrderedDict([
             ("unet/diffusion_pytorch_model.safetensors", listing(msd(u), "F32")),
             ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "F32")),
             ("text_encoder/model.safetensors", listing(clip_sd("L"), "F32")),
             ("text_encoder_2/model.safetensors", listing(clip_sd("G"), "F32")),
         ]),
         OrderedDict([
             ("model_index.json", mi("StableDiffusionXLPipeline", "0.19.0.dev0", force_zeros_for_empty_prompt=True,
                                     scheduler=["diffusers", "EulerDiscreteScheduler"], text_encoder=["transformers", "CLIPTextModel"],
                                     text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                                     tokenizer=["transformers", "CLIPTokenizer"], tokenizer_2=["transformers", "CLIPTokenizer"],
                                     unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"])),
             ("scheduler/scheduler_config.json", SCHED_SDXL),
             ("unet/config.json", dconfig(u, "UNet2DConditionModel", "0.19.0.dev0")),
             ("vae/config.json", dconfig(v, "AutoencoderKL", "0.19.0.dev0")),
             ("text_encoder/config.json", CLIP_L),
             ("text_encoder_2/config.json", CLIP_G),
         ]))
    ck = OrderedDict()
    ck.update(ldm_unet(u, X))
    ck.update(ldm_vae(v, X))
    ck.update(prefixed(OrderedDict(list(clip_sd("L").items()) + list(position_ids().items())), "conditioner.embedders.0.transformer."))
    ck.update(openclip_text("G", "conditioner.embedders.1.model."))
    check_ldm_unet("sdxl-base.single", ck, u)
    check_ldm_vae("sdxl-base.single", ck, v)
    check_ldm_clip("sdxl-base.single", ck, "conditioner.embedders.0.transformer.", "L")
    check_openclip("sdxl-base.single", ck, "conditioner.embedders.1.model.", te2)
    lst = listing(ck, "F16")
    compare_shared("sdxl-base.single", lst, "sdxl_keyshapes.json")
    emit("sdxl-base.single", "SDXL", "single-file",
         "sd_xl_base_1.0.safetensors (fp16): diffusers scripts/convert_diffusers_to_original_sdxl.py (incl. its main()'s "
         "text_projection rename) on the meta state dicts, plus conditioner.embedders.0 position_ids (I64) and "
         "conditioner.embedders.1.model.logit_scale, which the released file carries; metadata: modelspec keys believed present (partial)",
         {"sd_xl_base_1.0.safetensors": {"metadata": SDXL_META, "tensors": lst}})
    # UNet-only file with bare LDM names (ComfyUI/Forge "diffusion_models" extracts)
    emit("sdxl-unet.component", "component", "component",
         "SDXL base UNet alone in LDM names without the model.diffusion_model. prefix (as UNet-only extracts store it; "
         "ComfyUI's UNETLoader also accepts the prefixed and the diffusers names); fp16; layout inferred",
         {"sdxl_unet.safetensors": listing(X.convert_unet_state_dict(OrderedDict(msd(u))), "F16")})


def t_refiner():
    S = sd_script()
    u, v, te2 = unet("refiner"), vae_kl("sdxl"), clip("G")
    emit("sdxl-refiner.diffusers", "SDXL refiner", "diffusers",
         "stabilityai/stable-diffusion-xl-refiner-1.0 folder: diffusers UNet (384 ch, adm 2560)/VAE, transformers "
         "CLIPTextModelWithProjection (bigG) on meta; fp32 non-variant files",
         OrderedDict([
             ("unet/diffusion_pytorch_model.safetensors", listing(msd(u), "F32")),
             ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "F32")),
             ("text_encoder_2/model.safetensors", listing(clip_sd("G"), "F32")),
         ]),
         OrderedDict([
             ("model_index.json", mi("StableDiffusionXLImg2ImgPipeline", "0.19.0.dev0", force_zeros_for_empty_prompt=False,
                                     requires_aesthetics_score=True, scheduler=["diffusers", "EulerDiscreteScheduler"],
                                     text_encoder=[None, None], text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                                     tokenizer=[None, None], tokenizer_2=["transformers", "CLIPTokenizer"],
                                     unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"])),
             ("scheduler/scheduler_config.json", SCHED_SDXL),
             ("unet/config.json", dconfig(u, "UNet2DConditionModel", "0.19.0.dev0")),
             ("vae/config.json", dconfig(v, "AutoencoderKL", "0.19.0.dev0")),
             ("text_encoder_2/config.json", CLIP_G),
         ]))
    un = S.convert_unet_state_dict(OrderedDict(msd(u)))  # 4-level map of the SD script
    ren = OrderedDict()
    for k, t in un.items():
        k = k.replace("add_embedding.linear_1.", "label_emb.0.0.").replace("add_embedding.linear_2.", "label_emb.0.2.")
        ren[k] = t
    ck = OrderedDict()
    ck.update(prefixed(ren, "model.diffusion_model."))
    ck.update(ldm_vae(v, S))
    ck.update(openclip_text("G", "conditioner.embedders.0.model."))
    check_ldm_unet("sdxl-refiner.single", ck, u)
    check_ldm_vae("sdxl-refiner.single", ck, v)
    check_openclip("sdxl-refiner.single", ck, "conditioner.embedders.0.model.", te2)
    meta = dict(SDXL_META, **{"modelspec.architecture": "stable-diffusion-xl-v1-refiner",
                              "modelspec.title": "Stable Diffusion XL 1.0 Refiner"})
    emit("sdxl-refiner.single", "SDXL refiner", "single-file",
         "sd_xl_refiner_1.0.safetensors (fp16): UNet/VAE via diffusers convert_diffusers_to_original_stable_diffusion.py maps "
         "(4 levels) + label_emb rename, OpenCLIP bigG as conditioner.embedders.0.model.* with text_projection and logit_scale; "
         "metadata partial",
         {"sd_xl_refiner_1.0.safetensors": {"metadata": meta, "tensors": listing(ck, "F16")}})


def sd3_native(which):
    """model.diffusion_model.* of Stability's reference MMDiT-X, checked through diffusers' converter."""
    m = mmditx(which)
    sd = msd(m)
    ck = fake(prefixed(sd, "model.diffusion_model."))
    conv = sfu().convert_sd3_transformer_checkpoint_to_diffusers(ck)
    tr = dmodel("SD3Transformer2DModel", which)
    check("sd3-" + which, "sd3.5 ref MMDiTX -> diffusers SD3Transformer2DModel", conv, msd(tr), leftover=ck)
    return sd


def sd3_vae_native():
    sd = msd(sd3_vae_ref())
    v = vae_kl("sd3")
    check_ldm_vae("sd3-vae", prefixed(sd, "first_stage_model."), v)
    return sd


def sd3_diffusers(name, which, repo, version):
    tr, v = dmodel("SD3Transformer2DModel", which), vae_kl("sd3")
    emit(name, "SD3", "diffusers",
         repo + " folder: diffusers SD3Transformer2DModel/AutoencoderKL (16 ch), transformers CLIPTextModelWithProjection "
         "(L, bigG) and T5EncoderModel (shared.weight only) on meta; transformer/vae BF16, text encoders F16 (as released, believed)",
         OrderedDict([
             ("transformer/diffusion_pytorch_model.safetensors", listing(msd(tr), "BF16")),
             ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "BF16")),
             ("text_encoder/model.safetensors", listing(clip_sd("Lp"), "F16")),
             ("text_encoder_2/model.safetensors", listing(clip_sd("G"), "F16")),
             ("text_encoder_3/model.safetensors", listing(t5_sd(False), "F16")),
         ]),
         OrderedDict([
             ("model_index.json", mi("StableDiffusion3Pipeline", version, feature_extractor=[None, None], image_encoder=[None, None],
                                     scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                     text_encoder=["transformers", "CLIPTextModelWithProjection"],
                                     text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                                     text_encoder_3=["transformers", "T5EncoderModel"], tokenizer=["transformers", "CLIPTokenizer"],
                                     tokenizer_2=["transformers", "CLIPTokenizer"], tokenizer_3=["transformers", "T5TokenizerFast"],
                                     transformer=["diffusers", "SD3Transformer2DModel"], vae=["diffusers", "AutoencoderKL"])),
             ("scheduler/scheduler_config.json", SCHED_SD3),
             ("transformer/config.json", dconfig(tr, "SD3Transformer2DModel", version)),
             ("vae/config.json", dconfig(v, "AutoencoderKL", version)),
             ("text_encoder/config.json", CLIP_L_PROJ),
             ("text_encoder_2/config.json", CLIP_G),
             ("text_encoder_3/config.json", T5XXL),
         ]))


def t_sd35():
    for which, key, fn, arch, repo in [("L", "large", "sd3.5_large.safetensors", "stable-diffusion-v3.5-large", "stabilityai/stable-diffusion-3.5-large"),
                                       ("M", "medium", "sd3.5_medium.safetensors", "stable-diffusion-v3.5-medium", "stabilityai/stable-diffusion-3.5-medium")]:
        try:
            ck = OrderedDict()
            ck.update(prefixed(sd3_native(which), "model.diffusion_model."))
            ck.update(prefixed(sd3_vae_native(), "first_stage_model."))
            emit("sd35-%s.single" % key, "SD3", "single-file",
                 "%s (bf16; no text encoders, they ship as text_encoders/clip_l, clip_g, t5xxl_*.safetensors): "
                 "Stability-AI/sd3.5 reference MMDiTX (mmditx.py, built as sd3_impls.BaseModel derives it) and SDVAE on meta, "
                 "names checked through diffusers convert_sd3_transformer_checkpoint_to_diffusers; metadata partial/uncertain" % fn,
                 {fn: {"metadata": {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": arch},
                       "tensors": listing(ck, "BF16")}})
        except Exception:
            fail("sd35-%s.single" % key)
        try:
            sd3_diffusers("sd35-%s.diffusers" % key, which, repo, "0.31.0.dev0")
        except Exception:
            fail("sd35-%s.diffusers" % key)


def comfy_clip(which, prefix):
    """ComfyUI's CLIP module names: transformer.text_model.* + transformer.text_projection.weight (no position_ids)."""
    sd = clip_sd({"L": "Lp", "G": "G"}[which])
    return prefixed(sd, prefix + "transformer.")


def t_sd3_incl_clips():
    ck = OrderedDict()
    ck.update(prefixed(sd3_native("3M"), "model.diffusion_model."))
    ck.update(prefixed(sd3_vae_native(), "first_stage_model."))
    te = OrderedDict()
    te.update(comfy_clip("L", "text_encoders.clip_l."))
    te.update(comfy_clip("G", "text_encoders.clip_g."))
    t5 = prefixed(t5_sd(True), "text_encoders.t5xxl.transformer.")
    lst = listing(ck, "F16")
    lst.update(listing(te, "F16"))
    lst.update(listing(t5, "F16", fp8=True))
    emit("sd3-medium-incl-clips.single", "SD3", "single-file",
         "sd3_medium_incl_clips_t5xxlfp8.safetensors: Stability-AI/sd3.5 reference MMDiT (SD3 medium: depth 24, no qk norm) + SDVAE, "
         "text_encoders.{clip_l,clip_g}.transformer.* (HF CLIPTextModelWithProjection names) and text_encoders.t5xxl.transformer.* "
         "(HF T5 names with shared.weight and encoder.embed_tokens.weight) as diffusers' single_file_utils and sd.cpp expect them; "
         "fp8 T5 matrices; exact dtypes and the embed_tokens/logit_scale extras not verified",
         {"sd3_medium_incl_clips_t5xxlfp8.safetensors": {"metadata": {"modelspec.sai_model_spec": "1.0.0",
                                                                        "modelspec.architecture": "stable-diffusion-v3-medium"},
                                                           "tensors": lst}})


def flux_native(guidance):
    sd = msd(bfl_flux(guidance))
    ck = fake(sd)
    conv = sfu().convert_flux_transformer_checkpoint_to_diffusers(ck)
    tr = dmodel("FluxTransformer2DModel", "dev" if guidance else "schnell")
    check("flux-%s" % ("dev" if guidance else "schnell"), "BFL Flux -> diffusers FluxTransformer2DModel", conv, msd(tr), leftover=ck)
    return sd


def ae_native():
    sd = msd(bfl_ae())
    check_ldm_vae("flux-ae", prefixed(sd, "first_stage_model."), vae_kl("flux"))
    return sd


def t_flux():
    for guidance, key, sched in [(True, "dev", SCHED_FLUX_DEV), (False, "schnell", SCHED_FLUX_SCHNELL)]:
        try:
            emit("flux1-%s.single" % key, "Flux.1", "single-file",
                 "BFL flux1-%s.safetensors (bf16, transformer only, bare names): black-forest-labs/flux src/flux/model.py Flux "
                 "with flux/util.py flux-%s params on meta; checked through diffusers convert_flux_transformer_checkpoint_to_diffusers" % (key, key),
                 {"flux1-%s.safetensors" % key: listing(flux_native(guidance), "BF16")})
        except Exception:
            fail("flux1-%s.single" % key)
        try:
            tr, v = dmodel("FluxTransformer2DModel", key), vae_kl("flux")
            emit("flux1-%s.diffusers" % key, "Flux.1", "diffusers",
                 "black-forest-labs/FLUX.1-%s folder: diffusers FluxTransformer2DModel/AutoencoderKL (16 ch, no quant convs), "
                 "transformers CLIPTextModel + T5EncoderModel (shared.weight only) on meta; bf16" % key,
                 OrderedDict([
                     ("transformer/diffusion_pytorch_model.safetensors", listing(msd(tr), "BF16")),
                     ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "BF16")),
                     ("text_encoder/model.safetensors", listing(clip_sd("L"), "BF16")),
                     ("text_encoder_2/model.safetensors", listing(t5_sd(False), "BF16")),
                 ]),
                 OrderedDict([
                     ("model_index.json", mi("FluxPipeline", "0.30.0.dev0", feature_extractor=[None, None], image_encoder=[None, None],
                                             scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                             text_encoder=["transformers", "CLIPTextModel"], text_encoder_2=["transformers", "T5EncoderModel"],
                                             tokenizer=["transformers", "CLIPTokenizer"], tokenizer_2=["transformers", "T5TokenizerFast"],
                                             transformer=["diffusers", "FluxTransformer2DModel"], vae=["diffusers", "AutoencoderKL"])),
                     ("scheduler/scheduler_config.json", sched),
                     ("transformer/config.json", dconfig(tr, "FluxTransformer2DModel", "0.30.0.dev0")),
                     ("vae/config.json", dconfig(v, "AutoencoderKL", "0.30.0.dev0")),
                     ("text_encoder/config.json", CLIP_L),
                     ("text_encoder_2/config.json", T5XXL),
                 ]))
        except Exception:
            fail("flux1-%s.diffusers" % key)
    try:
        emit("flux-ae.component", "component", "component",
             "BFL ae.safetensors (also Comfy-Org split_files/vae/ae.safetensors): flux/modules/autoencoder.py AutoEncoder on meta, "
             "LDM names without prefix, no quant_conv; checked through diffusers convert_ldm_vae_checkpoint; dtype believed F32",
             {"ae.safetensors": listing(ae_native(), "F32")})
    except Exception:
        fail("flux-ae.component")
    try:
        emit("flux1-dev-fp8-e4m3fn.component", "component", "component",
             "flux1-dev-fp8-e4m3fn.safetensors (diffusion model only, e.g. Kijai/flux-fp8): BFL Flux names without prefix; "
             "F8_E4M3 for matrices, BF16 for vectors (which tensors stay 16-bit is not verified)",
             {"flux1-dev-fp8-e4m3fn.safetensors": listing(flux_native(True), "BF16", fp8=True)})
    except Exception:
        fail("flux1-dev-fp8-e4m3fn.component")
    try:
        lst = listing(prefixed(flux_native(True), "model.diffusion_model."), "BF16", fp8=True)
        lst.update(listing(prefixed(ae_native(), "vae."), "BF16"))
        te = prefixed(clip_sd("Lp"), "text_encoders.clip_l.transformer.")
        te["text_encoders.clip_l.logit_scale"] = torch.empty((), device="meta")
        lst.update(listing(te, "F16"))
        t5 = prefixed(t5_sd(False), "text_encoders.t5xxl.transformer.")
        t5["text_encoders.t5xxl.logit_scale"] = torch.empty((), device="meta")
        lst.update(listing(t5, "F16", fp8=True))
        emit("flux1-dev-fp8.comfy", "Flux.1", "single-file",
             "Comfy-Org/flux1-dev flux1-dev-fp8.safetensors (ComfyUI all-in-one): prefixes from ComfyUI supported_models.Flux "
             "(model.diffusion_model., vae., text_encoders.clip_l.transformer., text_encoders.t5xxl.transformer.), module names from "
             "ComfyUI's clip_model.py/t5.py (text_projection, shared.weight, logit_scale per encoder); INFERRED, file not inspected; "
             "fp8 matrices in the diffusion model and T5",
             {"flux1-dev-fp8.safetensors": lst})
    except Exception:
        fail("flux1-dev-fp8.comfy")


def zimage_native():
    """ComfyUI NextDiT (comfy/ldm/lumina/model.py, z_image_modulation) names = inverse of diffusers'
    convert_z_image_transformer_checkpoint_to_diffusers; checked by running that converter forward."""
    tr = dmodel("ZImageTransformer2DModel", "turbo")
    d = msd(tr)
    out = OrderedDict()
    for k, t in d.items():
        if re.search(r"\.attention\.to_[kv]\.weight$", k):
            continue
        if re.search(r"\.attention\.to_q\.weight$", k):
            base = k[: -len("to_q.weight")]
            out[base + "qkv.weight"] = torch.cat([d[base + "to_q.weight"], d[base + "to_k.weight"], d[base + "to_v.weight"]], 0)
            continue
        n = k.replace("all_final_layer.2-1.", "final_layer.").replace("all_x_embedder.2-1.", "x_embedder.")
        n = n.replace(".attention.to_out.0.", ".attention.out.").replace(".attention.norm_k.", ".attention.k_norm.")
        n = n.replace(".attention.norm_q.", ".attention.q_norm.")
        out[n] = t
    ck = fake(out)
    conv = sfu().convert_z_image_transformer_checkpoint_to_diffusers(ck)
    check("zimage", "ComfyUI NextDiT names -> diffusers ZImageTransformer2DModel", conv, d, leftover=ck)
    return out


def t_zimage():
    try:
        emit("zimage-turbo.single", "Z-Image", "single-file",
             "Comfy-Org/z_image_turbo split_files/diffusion_models/z_image_turbo_bf16.safetensors: ComfyUI NextDiT names "
             "(fused attention.qkv, attention.out, q_norm/k_norm, x_embedder, final_layer, adaLN_modulation.0, x_pad_token [1,3840]) "
             "derived as the inverse of diffusers convert_z_image_transformer_checkpoint_to_diffusers and checked forward; "
             "no prefix and no norm_final.weight assumed (ComfyUI-saved finetunes add model.diffusion_model. and a junk norm_final.weight)",
             {"z_image_turbo_bf16.safetensors": listing(zimage_native(), "BF16")})
    except Exception:
        fail("zimage-turbo.single")
    try:
        tr, v = dmodel("ZImageTransformer2DModel", "turbo"), vae_kl("flux")
        emit("zimage-turbo.diffusers", "Z-Image", "diffusers",
             "Tongyi-MAI/Z-Image-Turbo folder: diffusers ZImageTransformer2DModel, AutoencoderKL (Flux VAE config), "
             "text_encoder = Qwen3-4B as stored in its 3 shards (model.* names of Qwen3ForCausalLM, lm_head tied so absent; "
             "believed, model_index names Qwen3Model which loads both); bf16",
             OrderedDict([
                 ("transformer/diffusion_pytorch_model.safetensors", listing(msd(tr), "BF16")),
                 ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "BF16")),
                 ("text_encoder/model.safetensors", listing(qwen3_sd(), "BF16")),
             ]),
             OrderedDict([
                 ("model_index.json", mi("ZImagePipeline", "0.36.0.dev0", scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                         text_encoder=["transformers", "Qwen3Model"], tokenizer=["transformers", "Qwen2Tokenizer"],
                                         transformer=["diffusers", "ZImageTransformer2DModel"], vae=["diffusers", "AutoencoderKL"])),
                 ("scheduler/scheduler_config.json", SCHED_ZIMAGE),
                 ("transformer/config.json", dconfig(tr, "ZImageTransformer2DModel", "0.36.0.dev0")),
                 ("vae/config.json", dconfig(v, "AutoencoderKL", "0.36.0.dev0")),
                 ("text_encoder/config.json", QWEN3_4B),
             ]))
    except Exception:
        fail("zimage-turbo.diffusers")


def t_qwen_image():
    tr = dmodel("QwenImageTransformer2DModel", "base")
    try:
        emit("qwen-image.single", "Qwen-Image", "single-file",
             "Comfy-Org/Qwen-Image_ComfyUI split_files/diffusion_models/qwen_image_bf16.safetensors: ComfyUI's "
             "comfy/ldm/qwen_image/model.py uses the diffusers names (img_in, txt_norm, txt_in, time_text_embed.timestep_embedder, "
             "transformer_blocks.N.{img_mod.1,attn.*,img_mlp.net.*}, norm_out.linear, proj_out), no prefix; built with diffusers "
             "QwenImageTransformer2DModel on meta; prefix-free layout believed, not read from the file",
             {"qwen_image_bf16.safetensors": listing(msd(tr), "BF16")})
    except Exception:
        fail("qwen-image.single")
    try:
        v = dmodel("AutoencoderKLQwenImage", "base")
        emit("qwen-image.diffusers", "Qwen-Image", "diffusers",
             "Qwen/Qwen-Image folder: diffusers QwenImageTransformer2DModel and AutoencoderKLQwenImage, transformers "
             "Qwen2_5_VLForConditionalGeneration (7B) on meta with names mapped back to the stored layout (model.*, visual.*, lm_head); bf16",
             OrderedDict([
                 ("transformer/diffusion_pytorch_model.safetensors", listing(msd(tr), "BF16")),
                 ("vae/diffusion_pytorch_model.safetensors", listing(msd(v), "BF16")),
                 ("text_encoder/model.safetensors", listing(qwen25vl_sd(), "BF16")),
             ]),
             OrderedDict([
                 ("model_index.json", mi("QwenImagePipeline", "0.35.0.dev0", scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"],
                                         text_encoder=["transformers", "Qwen2_5_VLForConditionalGeneration"],
                                         tokenizer=["transformers", "Qwen2Tokenizer"],
                                         transformer=["diffusers", "QwenImageTransformer2DModel"],
                                         vae=["diffusers", "AutoencoderKLQwenImage"])),
                 ("scheduler/scheduler_config.json", SCHED_QWEN),
                 ("transformer/config.json", dconfig(tr, "QwenImageTransformer2DModel", "0.35.0.dev0")),
                 ("vae/config.json", dconfig(v, "AutoencoderKLQwenImage", "0.35.0.dev0")),
                 ("text_encoder/config.json", {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
                                               **QWEN25VL_TEXT, "vision_config": QWEN25VL_VISION}),
             ]))
    except Exception:
        fail("qwen-image.diffusers")


def t_components():
    for name, src, fn, sd, dt in [
        ("clip_l.component", "comfyanonymous/flux_text_encoders clip_l.safetensors (= SD3.5 text_encoders/clip_l.safetensors): "
         "transformers CLIPTextModelWithProjection names text_model.* + text_projection.weight (text_projection believed present; "
         "no position_ids)", "clip_l.safetensors", lambda: clip_sd("Lp"), "F16"),
        ("clip_g.component", "SD3.5 text_encoders/clip_g.safetensors: CLIPTextModelWithProjection (bigG) names text_model.* + "
         "text_projection.weight", "clip_g.safetensors", lambda: clip_sd("G"), "F16"),
        ("t5xxl.component", "comfyanonymous/flux_text_encoders t5xxl_fp16.safetensors: transformers T5EncoderModel names with both "
         "shared.weight and encoder.embed_tokens.weight (the 9.79 GB size holds two embedding copies)", "t5xxl_fp16.safetensors",
         lambda: t5_sd(True), "F16"),
        ("qwen3-4b.component", "Comfy-Org/z_image_turbo split_files/text_encoders/qwen_3_4b.safetensors: Qwen3-4B with "
         "HF Qwen3ForCausalLM names model.* (ComfyUI's comfy/text_encoders/llama.py uses the same), no lm_head (tied; 8.04 GB "
         "= all parameters once); believed", "qwen_3_4b.safetensors", qwen3_sd, "BF16"),
        ("qwen25-vl-7b.component", "Comfy-Org/Qwen-Image_ComfyUI split_files/text_encoders/qwen_2.5_vl_7b.safetensors: "
         "Qwen2.5-VL-7B with the stored HF names model.*, visual.*, lm_head.weight (ComfyUI's llama.py/qwen_vl.py modules use "
         "them; the 16.6 GB size holds lm_head and the vision tower); believed", "qwen_2.5_vl_7b.safetensors", qwen25vl_sd, "BF16"),
    ]:
        try:
            emit(name, "component", "component", src, {fn: listing(sd(), dt)})
        except Exception:
            fail(name)


def chroma_native():
    """Chroma's BFL-like names: Flux (schnell, no guidance_in) without the per-block modulation layers, plus
    distilled_guidance_layer; checked through diffusers convert_chroma_transformer_checkpoint_to_diffusers."""
    sd = msd(bfl_flux(False))
    drop = re.compile(r"(^time_in\.|^vector_in\.|^guidance_in\.|\.img_mod\.|\.txt_mod\.|\.modulation\.|^final_layer\.adaLN_modulation\.)")
    out = OrderedDict((k, v) for k, v in sd.items() if not drop.search(k))
    H, C = CHROMA_TR["approximator_hidden_dim"], CHROMA_TR["approximator_num_channels"]
    e = lambda *s: torch.empty(*s, device="meta")
    out["distilled_guidance_layer.in_proj.weight"] = e(H, C)
    out["distilled_guidance_layer.in_proj.bias"] = e(H)
    for i in range(CHROMA_TR["approximator_layers"]):
        out["distilled_guidance_layer.layers.%d.in_layer.weight" % i] = e(H, H)
        out["distilled_guidance_layer.layers.%d.in_layer.bias" % i] = e(H)
        out["distilled_guidance_layer.layers.%d.out_layer.weight" % i] = e(H, H)
        out["distilled_guidance_layer.layers.%d.out_layer.bias" % i] = e(H)
        out["distilled_guidance_layer.norms.%d.scale" % i] = e(H)
    out["distilled_guidance_layer.out_proj.weight"] = e(3072, H)
    out["distilled_guidance_layer.out_proj.bias"] = e(3072)
    ck = fake(out)
    conv = sfu().convert_chroma_transformer_checkpoint_to_diffusers(ck)
    ok = check("chroma", "Chroma native names -> diffusers ChromaTransformer2DModel", conv,
               msd(dmodel("ChromaTransformer2DModel", "hd")), leftover=ck)
    return out if ok else None


def t_more():
    for name, cls, key, fam, src in [
        ("flux2-dev.diffusers", "Flux2Transformer2DModel", "dev", "Flux.2", "black-forest-labs/FLUX.2-dev transformer"),
        ("chroma.diffusers", "ChromaTransformer2DModel", "hd", "Chroma", "lodestones/Chroma1-HD transformer"),
        ("auraflow.diffusers", "AuraFlowTransformer2DModel", "v0.3", "AuraFlow", "fal/AuraFlow-v0.3 transformer"),
        ("hidream-i1.diffusers", "HiDreamImageTransformer2DModel", "full", "HiDream", "HiDream-ai/HiDream-I1-Full transformer"),
        ("wan21-14b.diffusers", "WanTransformer3DModel", "14b", "Wan", "Wan-AI/Wan2.1-T2V-14B-Diffusers transformer"),
        ("wan21-1.3b.diffusers", "WanTransformer3DModel", "1.3b", "Wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer"),
        ("ltxv.diffusers", "LTXVideoTransformer3DModel", "2b", "LTX-Video", "Lightricks/LTX-Video (0.9.0-0.9.5 2B) transformer"),
    ]:
        if not want(name):
            continue
        try:
            tr = dmodel(cls, key)
            dt = "F32" if cls in ("WanTransformer3DModel",) else "BF16"
            emit(name, fam, "diffusers",
                 src + " only: diffusers %s on meta with the real config (transformer/diffusion_pytorch_model.safetensors; "
                 "other components not listed); dtype as commonly released, not verified" % cls,
                 {"transformer/diffusion_pytorch_model.safetensors": listing(msd(tr), dt)},
                 {"transformer/config.json": dconfig(tr, cls, "0.33.0")})
        except Exception:
            fail(name)
    if want("chroma.single"):
        try:
            out = chroma_native()
            if out is not None:
                emit("chroma.single", "Chroma", "single-file",
                     "Chroma1-HD.safetensors (bare BFL-like names with distilled_guidance_layer, no per-block modulation): "
                     "BFL Flux names minus img_mod/txt_mod/modulation/time_in/vector_in/final adaLN plus the approximator, "
                     "verified by diffusers convert_chroma_transformer_checkpoint_to_diffusers consuming every tensor and "
                     "giving exactly ChromaTransformer2DModel's names/shapes; inferred",
                     {"Chroma1-HD.safetensors": listing(out, "BF16")})
        except Exception:
            fail("chroma.single")


@cached
def bfl_flux2():
    from flux2.model import Flux2, Flux2Params
    return on_meta(lambda: Flux2(Flux2Params()))


def flux2_native():
    sd = msd(bfl_flux2())
    ck = fake(sd)
    conv = sfu().convert_flux2_transformer_checkpoint_to_diffusers(ck)
    ok = check("flux2-dev", "BFL Flux2 -> diffusers Flux2Transformer2DModel", conv,
               msd(dmodel("Flux2Transformer2DModel", "dev")), leftover=ck)
    return sd if ok else None


def wan_native(key):
    """Wan-Video/Wan2.1 WanModel names (blocks.N.self_attn.q, norm3, ffn.0, head.head, head.modulation ...):
    hand-written inverse of diffusers convert_wan_transformer_to_diffusers, verified by running it forward."""
    d = msd(dmodel("WanTransformer3DModel", key))
    rules = [("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
             ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
             ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
             ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
             ("condition_embedder.time_proj.", "time_projection.1."),
             (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
             (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
             (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."), (".norm2.", ".norm3.")]
    out = OrderedDict()
    for k, t in d.items():
        if k == "scale_shift_table":
            n = "head.modulation"
        elif k.startswith("proj_out."):
            n = "head.head." + k[len("proj_out."):]
        elif k.endswith(".scale_shift_table"):
            n = k[: -len("scale_shift_table")] + "modulation"
        else:
            n = k
            for a, b in rules:
                n = n.replace(a, b)
        out[n] = t
    ck = fake(out)
    conv = sfu().convert_wan_transformer_to_diffusers(ck)
    ok = check("wan21-" + key, "Wan native names -> diffusers WanTransformer3DModel", conv, d, leftover=ck)
    return out if ok else None


def t_native_more():
    if want("flux2-dev.single"):
        try:
            sd = flux2_native()
            if sd is not None:
                emit("flux2-dev.single", "Flux.2", "single-file",
                     "BFL flux2-dev.safetensors (bf16, transformer only, bare names): black-forest-labs/flux2 src/flux2/model.py "
                     "Flux2(Flux2Params()) on meta (@ab7cca68018ad3ceadcace9d6ecb1bc1f6f46b4e); checked through diffusers "
                     "convert_flux2_transformer_checkpoint_to_diffusers (every tensor consumed, exact diffusers names/shapes)",
                     {"flux2-dev.safetensors": listing(sd, "BF16")})
        except Exception:
            fail("flux2-dev.single")
    for key, fn in [("14b", "wan2.1_t2v_14B_bf16.safetensors"), ("1.3b", "wan2.1_t2v_1.3B_bf16.safetensors")]:
        name = "wan21-%s.single" % key
        if not want(name):
            continue
        try:
            sd = wan_native(key)
            if sd is not None:
                emit(name, "Wan", "single-file",
                     "%s (Comfy-Org Wan_2.1_ComfyUI_repackaged diffusion model, bare names of the official Wan2.1 WanModel; "
                     "fp16/fp8 variants hold the same names): inverse of diffusers convert_wan_transformer_to_diffusers, verified "
                     "forward; file name/dtype believed" % fn,
                     {fn: listing(sd, "BF16")})
        except Exception:
            fail(name)
    if want("hidream-i1.single"):
        try:
            tr = dmodel("HiDreamImageTransformer2DModel", "full")
            ck = fake(prefixed(msd(tr), "model.diffusion_model."))
            conv = sfu().convert_hidream_transformer_to_diffusers(ck)
            if check("hidream", "HiDream single names -> diffusers", conv, msd(tr)):
                emit("hidream-i1.single", "HiDream", "single-file",
                     "Comfy-Org HiDream-I1_ComfyUI hidream_i1_full_fp16.safetensors: the diffusers names without prefix "
                     "(diffusers' single-file converter only strips model.diffusion_model.); inferred",
                     {"hidream_i1_full_fp16.safetensors": listing(msd(tr), "F16")})
        except Exception:
            fail("hidream-i1.single")


def fail(name):
    tb = traceback.format_exc()
    print("  FAILED %s\n%s" % (name, tb))
    RESULTS.append((name, "-", "-", 0, 0, "FAILED: " + tb.strip().splitlines()[-1][:150]))


ONLY = [s for s in ARGS.only.split(",") if s]


def want(name):
    return not ONLY or any(name.startswith(p) for p in ONLY)


TASKS = [("sd15", t_sd15), ("sd21", t_sd21), ("sdxl-base", t_sdxl), ("sdxl-refiner", t_refiner), ("sd35", t_sd35),
         ("sd3-medium", t_sd3_incl_clips), ("flux", t_flux), ("zimage", t_zimage), ("qwen-image", t_qwen_image),
         ("components", t_components), ("more", t_more), ("more", t_native_more)]

if __name__ == "__main__":
    import transformers
    import diffusers
    print("torch", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__)
    for tname, fn in TASKS:
        if ONLY and not any(tname.startswith(p) or p.startswith(tname) for p in ONLY) and tname != "more":
            continue
        print("== " + tname)
        try:
            fn()
        except Exception:
            fail(tname)
    print("\n== summary")
    print("%-34s %-12s %-13s %8s %9s  %s" % ("name", "layout", "family", "tensors", "bytes", "status"))
    total = 0
    for r in RESULTS:
        print("%-34s %-12s %-13s %8d %9d  %s" % r)
        total += r[4]
    print("total bytes %d in %d files" % (total, sum(1 for r in RESULTS if r[5] == "ok")))
    print("\n== checks")
    for c in CHECKS:
        print("%-22s %-62s %s %s" % (c[0], c[1], "OK" if c[2] else "FAIL", c[3]))
    print("\n== differences from the shared lists")
    for d in DIFFS:
        print(d)
