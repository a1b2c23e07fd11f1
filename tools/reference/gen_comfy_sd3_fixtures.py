#!/usr/bin/env python3
"""ComfyUI reference fixtures for SD3 / SD3.5 on the tiny model "a" of gen_sd3_fixtures.py.

ComfyUI cannot load the tiny SD3.5 file as it is (its model detection and its text encoders only know the real
sizes), so this script runs ComfyUI's OWN code, loaded at run time from a local copy (--comfy; never committed),
at the tiny sizes, with the machinery of gen_comfy_flux_fixtures.py (its stubs, ast extraction, ModelPatcher and
sd.CLIP stand-ins, KSampler run). What runs, all of it ComfyUI's code unless said otherwise:

- the checkpoint: testdata/reference/sd3/single/sd35_tiny_incl_clips.safetensors (Stability's layout:
  model.diffusion_model.*, text_encoders.clip_l/clip_g.transformer.*; first_stage_model.* unused) with, for the
  cases with T5, the tiny T5's tensors added as text_encoders.t5xxl.transformer.* (the layout of
  sd3_medium_incl_clips_t5xxlfp16.safetensors), loaded as sd.load_state_dict_guess_config does:
  model_detection.detect_unet_config on the state dict, supported_models.SD3 (matches, set_inference_dtype,
  get_model -> model_base.SD3 -> BaseModel building OpenAISignatureMMDITWrapper, load_model_weights),
  SD3.clip_target (which CLIPs and whether T5, from the keys) and process_clip_state_dict, then
  cond_stage_model.load_state_dict(strict=False) as CLIP.load_sd(full_model=True).
- text: comfy/text_encoders/sd3_clip.py SD3Tokenizer (sd1_clip.SDTokenizer for CLIP-L,
  sdxl_clip.SDXLClipGTokenizer, T5XXLTokenizer with min_length 77) and SD3ClipModel (sd1_clip.SDClipModel at
  layer -2, no final layer norm, return_projected_pooled=False; sdxl_clip.SDXLClipG; T5XXLModel), with
  sd1_clip.ClipTokenWeightEncoder's weighting, driven by sd.CLIP's tokenize / encode_from_tokens_scheduled as
  CLIPTextEncode calls them.
- ModelSamplingSD3 (comfy_extras/nodes_model_advanced.py), SkipLayerGuidanceSD3 -> SkipLayerGuidanceDiT's
  post_cfg_function (comfy_extras/nodes_sd3.py, nodes_slg.py, with model_patcher's
  set_model_options_patch_replace / set_model_options_post_cfg_function), ModelSamplingDiscreteFlow + CONST.
- sampling: as gen_comfy_flux_fixtures.ksample (EmptySD3LatentImage, comfy.sample.prepare_noise / sample ->
  KSampler -> CFGGuider -> k-diffusion samplers, sampling_function / calc_cond_batch / cfg_function over
  CONDRegular c_crossattn and y).
- network: comfy/ldm/modules/diffusionmodules/mmdit.py's MMDiT (OpenAISignatureMMDITWrapper), circular
  padding to whole patches, patching, the cropped pos_embed, joint blocks with RMS q/k norms and the MMDiT-X
  attn2, the pre-only last context block, the dit/double_block patches_replace SLG uses, unpatchify and crop.
  It is diffusers' SD3Transformer2DModel of sd35/transformer that is cross-checked against it on the first
  network call of every case and on the first skip-layer call (checks in cases.json).
- VAE: latent_formats.SD3.process_out (z / 1.5305 + 0.0609, in CFGGuider.inner_sample), then the tiny
  diffusers AutoencoderKL of sd35/vae standing in for ComfyUI's VAE; image = clamp((x+1)/2, 0, 1) as
  [B, H, W, 3].

Tiny-size adaptations, and nothing else:
- MMDiT's head width: ComfyUI's MMDiT fixes it at 64 (hidden = 64 * depth, heads = depth) and
  detect_unet_config reads depth = hidden // 64; the tiny model has 2 heads of 16, so the one line
  "self.hidden_size = 64 * depth" reads 16 for 64 (source patch, checked to occur once), depth is the head
  count (2; = hidden / 64 for every released model) and num_blocks the joint-block count (3);
- SD3ClipModel.encode_token_weights's widths of the real encoders (4096 T5 / joint width, 768 CLIP-L,
  1280 CLIP-G) are the tiny ones (32, 12, 16), by an ast rewrite of those constants in that method alone;
- as in gen_comfy_flux_fixtures: both CLIP tokenizers read the tiny vocabulary folder (sd35/tokenizer); the
  special tokens ComfyUI hard-codes (49406 / 49407) are the tiny vocabulary's (pad stays: end for CLIP-L, 0
  for bigG); the text-model sizes are config overrides (model_options["clip_l_model_config"],
  ["clip_g_model_config"], ["t5xxl_model_config"]); the token tables are zero-padded to 49408 rows.

Outputs (--out): cases.json, cases.safetensors ("<case>/<what>": token ids and weights, cond / pooled and
negative_cond / negative_pooled, noise, sigmas, latents after every step, final_latent, model_timesteps in
float32; the image [B, H, W, 3] in float16).
Usage (no network, CPU, float32):
    PYTHONPATH=.ref/diffusers_src/src CUDA_VISIBLE_DEVICES= python3 tools/reference/gen_comfy_sd3_fixtures.py \\
        --comfy DIR --sd3 testdata/reference/sd3 --t5-tiny testdata/reference/t5-tiny --out DIR
"""
import argparse
import ast
import enum
import importlib.util
import json
import logging
import math
import os
import re
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import gen_comfy_flux_fixtures as fx  # noqa: E402

SINGLE = os.path.join("single", "sd35_tiny_incl_clips.safetensors")
UNET_PREFIX = "model.diffusion_model."
MID_PROMPT = ("A vast panoramic matte painting of a floating citadel above a sea of clouds, waterfalls pouring off "
              "its terraces into the mist, airships with patched canvas sails docking at crystal spires, flocks of "
              "white birds circling the towers, sunrise colours of coral, gold and lavender, ultra detailed, "
              "volumetric light, in the style of nineteenth-century romantic landscape painters")

# ksample's tensors left out of cases.safetensors to keep it under 1 MB (the image is stored as float16)
DROPPED = ("denoised", "x_start", "latent_out")

# The request of each case as darkroom is asked for it. shift None: the model's (3.0); a number: the
# ModelSamplingSD3 node with that shift (darkroom's --shift). slg: the SkipLayerGuidanceSD3 node.
BASE = dict(negative="", width=64, height=64, steps=4, sampler="euler", scheduler="simple", cfg=4.5, seed=42,
            batch=1, shift=None, slg=None, t5=True)
CASES = [dict(BASE, **c) for c in [
    dict(name="weighted", prompt="(red:1.3) fox"),
    dict(name="long_prompt", prompt=fx.LONG_PROMPT, negative="blurry, low quality", width=80, height=48, steps=3,
         cfg=3.0, seed=7),
    dict(name="long_negative", prompt="An old lighthouse on a cliff at night, stormy sea", negative=MID_PROMPT,
         steps=3, cfg=4.0, seed=5),
    dict(name="no_t5", prompt="Ein Straßencafé in Köln, 1920s Postkarte", negative="blurry", steps=3, cfg=5.0,
         seed=9, t5=False),
    dict(name="slg", prompt="A lighthouse on a cliff, (stormy:1.2) sea", negative="blurry", width=80, height=48,
         steps=5, cfg=4.0, seed=5, slg=dict(layers="1", scale=3.0, start=0.01, end=0.5)),
    dict(name="dpmpp_2m_sgm", prompt="a bowl of ramen, studio lighting", negative="ugly", sampler="dpmpp_2m",
         scheduler="sgm_uniform", seed=11),
    dict(name="euler_ancestral", prompt="Portrait of an astronaut cat, oil on canvas", negative="ugly",
         sampler="euler_ancestral", seed=3),
    dict(name="shift2", prompt="a red fox in the snow", negative="blurry", shift=2.0, seed=21),
    dict(name="cfg1", prompt="a watercolor of a (quiet:1.1) harbour", cfg=1.0, seed=13, batch=2),
]]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------- ComfyUI --

def load_mmdit(ns, head_width):
    """comfy/ldm/modules/diffusionmodules/mmdit.py as module comfy.ldm.modules.diffusionmodules.mmdit, its head
    width (64 in "self.hidden_size = 64 * depth") set to head_width."""
    name = "comfy.ldm.modules.diffusionmodules.mmdit"
    path = os.path.join(ns.dir, "comfy", "ldm", "modules", "diffusionmodules", "mmdit.py")
    src = open(path, encoding="utf-8").read()
    old = "self.hidden_size = 64 * depth"
    if src.count(old) != 1:
        raise RuntimeError(f"{path}: {old!r} occurs {src.count(old)} times, want once")
    src = src.replace(old, "self.hidden_size = TINY_HEAD_WIDTH * depth")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    mod.TINY_HEAD_WIDTH = head_width
    sys.modules[name] = mod
    exec(compile(src, path, "exec"), mod.__dict__)
    return mod


class _Consts(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping, self.count = mapping, {}

    def visit_Constant(self, node):
        v = node.value
        if type(v) is int and v in self.mapping:
            self.count[v] = self.count.get(v, 0) + 1
            return ast.copy_location(ast.Constant(self.mapping[v]), node)
        return node


def patch_constants(path, cls, meth, mapping, env):
    """Class.meth of a ComfyUI file with the integer constants of mapping replaced (ast), executed in env; returns
    (function, replacement counts)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and sub.name == meth:
                    t = _Consts(mapping)
                    fn = ast.fix_missing_locations(t.visit(sub))
                    e = dict(env)
                    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), e)
                    return e[meth], t.count
    raise RuntimeError(f"{path}: {cls}.{meth} not found")


def load_sd3(ns, head_width, widths):
    """The SD3 parts of ComfyUI on top of gen_comfy_flux_fixtures.load_comfy."""
    comfy, cd = ns.comfy, os.path.join(ns.dir, "comfy")
    ex = fx.extract
    comfy.utils.state_dict_prefix_replace = ex(os.path.join(cd, "utils.py"), ["state_dict_prefix_replace"], {})[
        "state_dict_prefix_replace"]
    comfy.utils.calculate_parameters = lambda sd, prefix="": sum(v.nelement() for k, v in sd.items() if k.startswith(prefix))
    mp = ex(os.path.join(cd, "model_patcher.py"), ["set_model_options_patch_replace", "set_model_options_post_cfg_function"], {})
    comfy.model_patcher.__dict__.update(mp)
    ns.set_post_cfg = mp["set_model_options_post_cfg_function"]
    mmdit = load_mmdit(ns, head_width)
    # model_detection.detect_unet_config (+ count_blocks)
    md = ex(os.path.join(cd, "model_detection.py"), ["count_blocks", "detect_unet_config"],
            {"torch": torch, "math": math, "logging": logging, "json": json, "comfy": comfy})
    ns.detect_unet_config, ns.count_blocks = md["detect_unet_config"], md["count_blocks"]
    # model_base: ModelType, model_sampling(), convert_tensor, BaseModel, SD3
    mb_env = {"torch": torch, "math": math, "logging": logging, "Enum": enum.Enum, "comfy": comfy,
              "utils": comfy.utils, "UNetModel": None, "OpenAISignatureMMDITWrapper": mmdit.OpenAISignatureMMDITWrapper,
              "__name__": "comfy.model_base"}
    ex(os.path.join(cd, "model_base.py"), ["ModelType", "model_sampling", "convert_tensor", "BaseModel", "SD3"], mb_env)
    model_base = types.SimpleNamespace(ModelType=mb_env["ModelType"], SD3=mb_env["SD3"])
    smb_env = {"torch": torch, "model_base": model_base, "utils": comfy.utils, "latent_formats": comfy.latent_formats,
               "__name__": "comfy.supported_models_base"}
    ex(os.path.join(cd, "supported_models_base.py"), ["BASE", "ClipTarget"], smb_env)
    sm_env = {"torch": torch, "comfy": comfy, "model_base": model_base, "latent_formats": comfy.latent_formats,
              "utils": comfy.utils,
              "supported_models_base": types.SimpleNamespace(BASE=smb_env["BASE"], ClipTarget=smb_env["ClipTarget"]),
              "__name__": "comfy.supported_models"}
    ns.SupportedSD3 = ex(os.path.join(cd, "supported_models.py"), ["SD3"], sm_env)["SD3"]
    # nodes: ModelSamplingSD3, SkipLayerGuidanceSD3 -> SkipLayerGuidanceDiT
    nma_env = {"torch": torch, "comfy": comfy, "nodes": types.SimpleNamespace(MAX_RESOLUTION=16384),
               "__name__": "comfy_extras.nodes_model_advanced"}
    ns.ModelSamplingSD3Node = ex(os.path.join(ns.dir, "comfy_extras", "nodes_model_advanced.py"), ["ModelSamplingSD3"],
                                 nma_env)["ModelSamplingSD3"]
    io = types.SimpleNamespace(NodeOutput=lambda *a, **k: a)
    dit = ex(os.path.join(ns.dir, "comfy_extras", "nodes_slg.py"), ["SkipLayerGuidanceDiT.execute"],
             {"comfy": comfy, "re": re, "io": io})["SkipLayerGuidanceDiT.execute"]

    class SkipLayerGuidanceDiT:
        def execute(self, **kw):
            return dit.__func__(SkipLayerGuidanceDiT, **kw)

    sd3_exec = ex(os.path.join(ns.dir, "comfy_extras", "nodes_sd3.py"), ["SkipLayerGuidanceSD3.execute"],
                  {"SkipLayerGuidanceDiT": SkipLayerGuidanceDiT, "io": io})["SkipLayerGuidanceSD3.execute"]
    ns.slg_node = lambda model, layers, scale, start, end: sd3_exec.__func__(None, model, layers, scale, start, end)[0]
    # SD3ClipModel.encode_token_weights at the tiny widths
    sd3_clip = comfy.text_encoders.sd3_clip
    fn, counts = patch_constants(os.path.join(cd, "text_encoders", "sd3_clip.py"), "SD3ClipModel", "encode_token_weights",
                                 widths, vars(sd3_clip))
    sd3_clip.SD3ClipModel.encode_token_weights = fn
    ns.width_patch = dict(mapping={str(k): v for k, v in widths.items()}, replaced={str(k): v for k, v in counts.items()})
    return ns


class SD3Patcher(fx.Patcher):
    """gen_comfy_flux_fixtures.Patcher plus ModelPatcher.set_model_sampler_post_cfg_function."""

    post_cfg = None

    def clone(self):
        n = SD3Patcher(self.model)
        n.model_options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.model_options.items()}
        n.object_patches = dict(self.object_patches)
        return n

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options = SD3Patcher.post_cfg(self.model_options, post_cfg_function, disable_cfg1_optimization)


# ------------------------------------------------------------ checkpoint --

def checkpoint(sd3_dir, t5_dir, with_t5):
    """The single file's tensors (float32), with the tiny T5 as text_encoders.t5xxl.transformer.* if with_t5."""
    sd = fx.read_st(os.path.join(sd3_dir, SINGLE))
    if with_t5:
        for k, v in fx.read_st(os.path.join(t5_dir, "model.safetensors")).items():
            sd["text_encoders.t5xxl.transformer." + k] = v
    return sd


def tiny_unet_config(ns, sd):
    """detect_unet_config as ComfyUI runs it, then the tiny head width: depth = the head count, num_blocks =
    the joint-block count (detect_unet_config's depth is hidden // 64, 0 here)."""
    uc = ns.detect_unet_config(sd, UNET_PREFIX, None)
    detected = dict(uc)
    hidden = sd[UNET_PREFIX + "x_embedder.proj.weight"].shape[0]
    head = sd[UNET_PREFIX + "joint_blocks.0.x_block.attn.ln_q.weight"].shape[0]
    uc["depth"] = hidden // head
    uc["num_blocks"] = ns.count_blocks(list(sd), UNET_PREFIX + "joint_blocks.{}.")
    return uc, detected, head


def build_model(ns, sd):
    """model_detection -> supported_models.SD3 -> get_model (model_base.SD3, BaseModel builds the MMDiT) ->
    load_model_weights, as load_state_dict_guess_config."""
    uc, detected, _ = tiny_unet_config(ns, sd)
    if not ns.SupportedSD3.matches(uc, sd):
        raise RuntimeError(f"supported_models.SD3 does not match the detected unet config {uc}")
    model_config = ns.SupportedSD3(uc)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(sd, UNET_PREFIX, device="cpu")
    to_load = {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    to_load = model_config.process_unet_state_dict(to_load)
    m, u = model.diffusion_model.load_state_dict(to_load, strict=False)
    if m or u:
        raise RuntimeError(f"MMDiT: missing {sorted(m)}, unexpected {sorted(u)}")
    model.diffusion_model.float().eval()
    info = dict(detected={k: v for k, v in detected.items()}, built=dict(uc), hidden_size=model.diffusion_model.hidden_size,
                num_heads=model.diffusion_model.num_heads, blocks=len(model.diffusion_model.joint_blocks))
    return model, model_config, info


def load_clip(ns, sd, sd3_dir, t5_dir):
    """SD3.clip_target + process_clip_state_dict + CLIP(...) + load_sd(full_model=True), at the tiny sizes."""
    model_config = ns.SupportedSD3(tiny_unet_config(ns, sd)[0])
    target = model_config.clip_target(state_dict=sd)
    clip_sd = model_config.process_clip_state_dict(dict(sd))
    fx.use_clip_tokenizer(ns, os.path.join(sd3_dir, "sd35", "tokenizer"))
    tokenizer = target.tokenizer(embedding_directory=None, tokenizer_data=clip_sd)
    _, l_over = fx.clip_overrides(os.path.join(sd3_dir, "sd35", "text_encoder", "config.json"), tokenizer.clip_l.end_token)
    _, g_over = fx.clip_overrides(os.path.join(sd3_dir, "sd35", "text_encoder_2", "config.json"), tokenizer.clip_g.end_token)
    t5_cfg, t5_over = fx.t5_overrides(t5_dir)
    model_options = {"clip_l_model_config": l_over, "clip_g_model_config": g_over, "t5xxl_model_config": t5_over}
    clip = target.clip(device="cpu", dtype=torch.float32, model_options=model_options)
    rows = {}
    for name in ("clip_l", "clip_g"):
        rows[name] = fx.pad_token_table(clip_sd, f"{name}.transformer.text_model.embeddings.token_embedding.weight")
        tok = getattr(tokenizer, name)
        getattr(clip, name).special_tokens = {"start": tok.start_token, "end": tok.end_token, "pad": tok.pad_token}
    m, u = clip.load_state_dict(clip_sd, strict=False)
    bad = [k for k in list(m) + list(u) if not any(s in k for s in ("position_ids", "embed_tokens", "logit_scale"))]
    if bad:
        raise RuntimeError(f"text encoder keys not loaded: {bad}")
    clip.eval()
    info = dict(clip_l=clip.clip_l is not None, clip_g=clip.clip_g is not None, t5xxl=clip.t5xxl is not None,
                overrides=model_options, vocab_rows=rows, missing=sorted(m), unexpected=sorted(u),
                special_tokens=dict(clip_l=clip.clip_l.special_tokens, clip_g=clip.clip_g.special_tokens),
                t5_min_length=tokenizer.t5xxl.min_length, width_patch=ns.width_patch)
    return tokenizer, clip, info, t5_cfg


# ---------------------------------------------------------------- network --

class Recorder:
    """Records every call of ComfyUI's MMDiT (batch, text length, timestep, skipped blocks) and compares it with
    diffusers' SD3Transformer2DModel on the first call and the first skip-layer call."""

    def __init__(self, net, ref):
        self.net, self.ref, self.orig = net, ref, net.forward
        self.calls, self.checks, self.compared = [], [], set()
        net.forward = self.forward

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kw):
        out = self.orig(x, timesteps, context=context, y=y, control=control, transformer_options=transformer_options, **kw)
        dit = transformer_options.get("patches_replace", {}).get("dit", {})
        skip = sorted(k[1] for k in dit if k[0] == "double_block")
        self.calls.append(dict(batch=int(x.shape[0]), txt_len=int(context.shape[1]), timestep=[float(v) for v in timesteps],
                               skip=skip))
        key = bool(skip)
        if self.ref is not None and key not in self.compared:
            self.compared.add(key)
            try:
                ref = self.ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=y, timestep=timesteps,
                               skip_layers=skip or None, return_dict=False)[0]
                self.checks.append(dict(call=len(self.calls) - 1, skip=skip, max_abs=float((ref - out).abs().max()),
                                        rel_rms=float((ref - out).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())))
            except Exception as e:  # noqa: BLE001 - a cross-check only
                self.checks.append(dict(call=len(self.calls) - 1, error=f"{type(e).__name__}: {e}"))
        return out


def load_diffusers_transformer(sd3_dir):
    from diffusers import SD3Transformer2DModel
    m = SD3Transformer2DModel.from_pretrained(os.path.join(sd3_dir, "sd35", "transformer"), torch_dtype=torch.float32,
                                              local_files_only=True)
    return m.float().eval()


# ------------------------------------------------------------------ cases --

def run_case(ns, c, sds, shims, ref, vae):
    name = c["name"]
    model, model_config, net_info = build_model(ns, dict(sds[c["t5"]]))
    rec = Recorder(model.diffusion_model, ref)
    patcher = SD3Patcher(model)
    model.current_patcher = patcher
    meta = dict(name=name, request={k: v for k, v in c.items() if k != "name"}, model_type=model.model_type.name,
                sampling_settings=dict(model_config.sampling_settings), network=net_info)
    shim = shims[c["t5"]]
    t = {}
    tokens, positive = fx.encode_prompt(shim, c["prompt"])
    ntokens, negative = fx.encode_prompt(shim, c["negative"])
    t.update(fx.tokens_tensors(tokens))
    t["cond"], t["pooled"] = positive[0][0], positive[0][1]["pooled_output"]
    meta["t5_len"], meta["clip_windows"] = len(tokens["t5xxl"][0]), len(tokens["l"])
    meta["g_windows"] = len(tokens["g"])
    meta["negative_t5_len"], meta["negative_clip_windows"] = len(ntokens["t5xxl"][0]), len(ntokens["l"])
    meta["cond_shape"], meta["negative_cond_shape"] = list(t["cond"].shape), list(negative[0][0].shape)
    if c["cfg"] != 1.0:
        for k, v in fx.tokens_tensors(ntokens).items():
            t["negative_" + k] = v
        t["negative_cond"], t["negative_pooled"] = negative[0][0], negative[0][1]["pooled_output"]

    graph = {}
    if c["shift"] is not None:
        (patcher,) = ns.ModelSamplingSD3Node().patch(patcher, c["shift"])
        graph["ModelSamplingSD3"] = dict(shift=c["shift"])
    if c["slg"]:
        s = c["slg"]
        patcher = ns.slg_node(patcher, s["layers"], s["scale"], s["start"], s["end"])
        ms = patcher.get_model_object("model_sampling")
        graph["SkipLayerGuidanceSD3"] = dict(s, sigma_start=float(ms.percent_to_sigma(s["start"])),
                                             sigma_end=float(ms.percent_to_sigma(s["end"])))
    meta["comfy_graph"] = graph
    ms = patcher.get_model_object("model_sampling")
    meta["model_sampling"] = [b.__name__ for b in type(ms).__bases__]
    meta["shift"], meta["multiplier"] = float(ms.shift), float(ms.multiplier)
    want_shift = c["shift"] if c["shift"] is not None else 3.0
    if abs(meta["shift"] - want_shift) > 1e-9:
        raise RuntimeError(f"ComfyUI's shift {meta['shift']}, want {want_shift}")

    final = fx.ksample(ns, model, patcher, c, positive, negative, vae, t, meta)[0]
    for k in DROPPED:  # kept out of the fixture (< 1 MB); the checks on them are in cases.json
        del t[k]
    calls = rec.calls
    t["model_timesteps"] = torch.tensor([cl["timestep"][0] for cl in calls])
    meta["model_calls"] = calls
    meta["n_model_calls"] = len(calls)
    checks = meta.setdefault("checks", {})
    checks["comfy_mmdit_vs_diffusers"] = rec.checks
    checks["clip_windows_l_eq_g"] = meta["clip_windows"] == meta["g_windows"]
    if c["prompt"] == fx.LONG_PROMPT:
        checks["long_prompt_two_windows_t5_over_77"] = meta["clip_windows"] >= 2 and meta["t5_len"] > 77
    if c["cfg"] != 1.0:
        checks["batches_as_expected"] = (
            (meta["cond_shape"][1] != meta["negative_cond_shape"][1]) == any(cl["batch"] < c["batch"] * 2 and not cl["skip"] for cl in calls))
    if c["slg"]:
        checks["slg_calls"] = sum(1 for cl in calls if cl["skip"])
    img = t["image"]
    meta["stats"] = dict(pixel_std=float(img.std()), pixel_mean=float(img.mean()),
                         clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                         final_latent_std=float(final.std()), final_latent_rms=float(final.pow(2).mean().sqrt()))
    meta["tensors"] = {k: list(v.shape) for k, v in t.items()}
    out = {f"{name}/{k}": fx.f32(v) for k, v in t.items()}
    out[f"{name}/image"] = out[f"{name}/image"].half()  # float16: its rounding (≤ 2.4e-4) allows ~80 dB
    return out, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", required=True, help="folder holding ComfyUI's files (comfy/, comfy_extras/, node_helpers.py)")
    ap.add_argument("--sd3", required=True, help="testdata/reference/sd3 (single/, sd35/)")
    ap.add_argument("--t5-tiny", required=True, help="folder with model.safetensors and encoder.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    versions = fx.setup()

    ns = fx.load_comfy(args.comfy)
    sds = {True: checkpoint(args.sd3, args.t5_tiny, True), False: checkpoint(args.sd3, args.t5_tiny, False)}
    head = sds[True][UNET_PREFIX + "joint_blocks.0.x_block.attn.ln_q.weight"].shape[0]
    joint = sds[True][UNET_PREFIX + "context_embedder.weight"].shape[1]
    lw = sds[True]["text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"].shape[0]
    gw = sds[True]["text_encoders.clip_g.transformer.text_model.final_layer_norm.weight"].shape[0]
    load_sd3(ns, int(head), {4096: int(joint), 768: int(lw), 1280: int(gw)})
    SD3Patcher.post_cfg = staticmethod(ns.set_post_cfg)
    commit = fx.comfy_commit(args.comfy)
    shims, text_info = {}, {}
    for with_t5 in (True, False):
        tokenizer, clip, info, t5_cfg = load_clip(ns, sds[with_t5], args.sd3, args.t5_tiny)
        shims[with_t5] = fx.ClipShim(ns, tokenizer, clip)
        text_info["with_t5" if with_t5 else "without_t5"] = info
    log(f"text: {json.dumps(text_info, default=str)[:1500]}")
    tok_checks = fx.check_tokenizer(ns, shims[True].tokenizer, sorted({c["prompt"] for c in CASES} | {c["negative"] for c in CASES}),
                                    os.path.join(args.sd3, "sd35"))
    if "used" in tok_checks.get("t5xxl", {}):
        shims[False].tokenizer.t5xxl.tokenizer = shims[True].tokenizer.t5xxl.tokenizer
    log(f"tokenizer checks: {json.dumps(tok_checks)[:600]}")
    ref = None
    try:
        ref = load_diffusers_transformer(args.sd3)
    except Exception as e:  # noqa: BLE001 - a cross-check only
        log(f"diffusers transformer unavailable for the cross-check: {type(e).__name__}: {e}")
    vae = fx.load_vae(os.path.join(args.sd3, "sd35"))

    cases = [c for c in CASES if not args.only or c["name"] in args.only.split(",")]
    tensors, manifest, failed = fx.run_all(
        cases, lambda c: run_case(ns, c, sds, shims, ref, vae),
        lambda meta: f"shift={meta['shift']} calls={meta['n_model_calls']} t5={meta['t5_len']} "
                     f"windows={meta['clip_windows']} cond={meta['cond_shape']} neg={meta['negative_cond_shape']} "
                     f"sigmas={[round(s, 6) for s in meta['sigmas']]} pixel_std={meta['stats']['pixel_std']:.4f} "
                     f"checks={json.dumps(meta['checks'])[:500]}")

    suspicious = []
    for m in manifest:
        ch = m["checks"]
        suspicious += [f"{m['name']}: {k}" for k, v in ch.items() if v is False]
        for r in ch.get("comfy_mmdit_vs_diffusers", []):
            if "error" in r or not r["rel_rms"] < 1e-4:
                suspicious.append(f"{m['name']}: ComfyUI's MMDiT vs diffusers {r}")
    for k, v in tok_checks.items():
        if isinstance(v, dict) and not v["equal"]:
            suspicious.append(f"tokenizer {k}: transformers vs tokenizers differ")
    log(f"cross-checks not holding: {suspicious if suspicious else 'none'}")

    from safetensors.torch import save_file
    save_file(tensors, os.path.join(args.out, "cases.safetensors"))
    doc = dict(generator="tools/reference/gen_comfy_sd3_fixtures.py", comfyui_commit=commit, versions=versions,
               text=text_info, tokenizer_checks=tok_checks, vae_config=dict(vae.config), cases=manifest, failed=failed,
               cross_checks_not_holding=suspicious)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False,
                  default=lambda o: o.name if isinstance(o, enum.Enum) else str(o))
    log(f"{len(manifest)} ok, failed: {failed} -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
