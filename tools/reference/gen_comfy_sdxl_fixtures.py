#!/usr/bin/env python3
"""ComfyUI reference fixtures for the tiny SDXL base / refiner / SD 2.x models.

Companion of gen_sdxl_fixtures.py (which makes the models) and of
gen_comfy_fixtures.py (the SD1 version of the sampling part). ComfyUI cannot
load the tiny models (its model detection only knows real sizes), so this
script runs ComfyUI's OWN code at the tiny sizes, loaded from a local copy
(--comfy, e.g. .ref/comfy; never committed), with the heavy modules its files
import replaced by small stubs that the paths used never reach:

- conditioning: comfy/sdxl_clip.py SDXLTokenizer, SDXLClipModel and
  SDXLRefinerClipModel, comfy/text_encoders/sd2_clip.py SD2Tokenizer and
  SD2ClipModel, i.e. comfy/sd1_clip.py's SDTokenizer/SDClipModel and
  comfy/clip_model.py's CLIPTextModel built through comfy/ops.py and
  comfy/ldm/modules/attention.py. The text-model configs are ComfyUI's own
  json files with the tiny sizes passed the way ComfyUI passes config
  overrides (model_options["clip_l_model_config"] etc.). The weights are
  the single files' tensors converted as ComfyUI converts them: the
  process_clip_state_dict methods of comfy/supported_models.py's SDXL,
  SDXLRefiner and SD20 classes and the comfy/utils.py functions they call
  (taken from the files with ast, since those modules import half of
  ComfyUI). What had to change for the tiny sizes, and nothing else:
  * the tokenizers read the tiny tokenizer folder instead of
    comfy/sd1_tokenizer (ComfyUI ships one folder for every CLIP);
  * the special-token ids ComfyUI hard-codes for the real vocabulary
    (start 49406, end 49407) are set to the tiny vocabulary's (998, 999)
    on the model objects (pad stays: end for CLIP-L, 0 for bigG and H);
  * the token-embedding table is zero-padded to ComfyUI's fixed 49408 rows
    (ids >= 1000 never occur);
  * bigG's text_projection is made Linear(64 -> 32) (ComfyUI builds it
    square, as the released bigG is 1280 -> 1280).
- ADM vectors: model_base.SDXL.encode_adm / SDXLRefiner.encode_adm with
  openaimodel.Timestep (both taken from the files with ast) at the tiny
  embedder width (8; ComfyUI's is 256), fed by comfy.samplers'
  encode_model_conds (which supplies width/height = latent size x 8).
- sampling: comfy.samplers.KSampler (its sigmas and its start/last-step
  slicing, as KSamplerAdvanced uses it), KSAMPLER, the k-diffusion
  samplers, sampling_function's CFG over CONDCrossAttn + CONDRegular("y"),
  ModelSamplingDiscrete with EPS / V_PREDICTION (zsnr as the
  ModelSamplingDiscrete node sets it) and comfy.sample.prepare_noise. The
  diffusers UNets of the tiny models stand in for ComfyUI's UNetModel, fed
  ComfyUI's y through add_embedding (label_emb) directly. ComfyUI's LATENT
  is in VAE space (CFGGuider multiplies it by the latent format's scale on
  the way in and divides on the way out); here every latent is in sampler
  space, so the base -> refiner hand-over skips the x/0.13025*0.13025
  round trip (a ~1e-7 relative difference at most).

Outputs: DIR/comfy_sdxl_cases.safetensors ("<case>/<tensor>") and
DIR/comfy_sdxl_cases.json. Usage (no network, CPU float32):
    PYTHONPATH=.ref/diffusers_src/src python3 tools/reference/gen_comfy_sdxl_fixtures.py \\
        --models DIR --comfy .ref/comfy --out DIR
where DIR holds gen_sdxl_fixtures.py's outputs.
"""
import argparse
import ast
import importlib.machinery
import json
import math
import os
import sys
import traceback
import types
import uuid

import torch

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
WEIGHTED = "a (red:1.3) cat, (blue sky:0.8)"
LONG_PROMPT = ("an oil painting of a quiet harbor at dawn, small fishing boats resting on calm water, soft mist over the "
               "hills, warm light on the old stone houses, a few gulls in the pale sky, reflections on the water, fine "
               "brush strokes, muted colors, highly detailed, masterpiece")
SD2_PROMPT = "a watercolor painting of a lighthouse at dusk"
BOS_ID, EOS_ID = 998, 999
COMFY_VOCAB = 49408
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=1, max_position_embeddings=77, eos_token_id=EOS_ID,
            bos_token_id=BOS_ID)
L_CFG = dict(TINY, num_hidden_layers=3)
G_CFG = dict(TINY, num_hidden_layers=3)
H_CFG = dict(TINY, num_hidden_layers=4)  # the single file's 4 (= "24") OpenCLIP layers
ADM_EMBED = 8


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------- ComfyUI --

def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    return m


class _Permissive(types.ModuleType):
    """A stub module: named attributes as given, any other name a function returning False."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: False


class _Args:
    """comfy.cli_args.args: every flag off."""
    fast = set()

    def __getattr__(self, name):
        return None


def _unavailable(what):
    def f(*args, **kwargs):
        raise RuntimeError(f"{what} is stubbed out in gen_comfy_sdxl_fixtures.py")
    return f


def _repeat_to_batch_size(t, batch_size, dim=0):
    n = t.shape[dim]
    if n > batch_size:
        return t.narrow(dim, 0, batch_size)
    if n < batch_size:
        reps = [1] * t.ndim
        reps[dim] = -(-batch_size // n)
        return t.repeat(reps).narrow(dim, 0, batch_size)
    return t


def extract(path, names, env):
    """Executes the named top-level functions/classes or "Class.method"s of a ComfyUI file in env (ast), so that
    ComfyUI's own code runs without importing the module (and all it imports)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            e = env
            exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), e)
            out[node.name] = e[node.name]
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and f"{node.name}.{sub.name}" in names:
                    key = f"{node.name}.{sub.name}"
                    e = dict(env)
                    exec(compile(ast.Module(body=[sub], type_ignores=[]), path, "exec"), e)
                    out[key] = e[sub.name]
    missing = set(names) - set(out)
    if missing:
        raise RuntimeError(f"{path}: not found: {sorted(missing)}")
    return out


def load_comfy(comfy_dir):
    comfy_dir = os.path.abspath(comfy_dir)
    for f in ("comfy/samplers.py", "comfy/sd1_clip.py", "comfy/sdxl_clip.py", "comfy/model_base.py"):
        if not os.path.isfile(os.path.join(comfy_dir, f)):
            raise SystemExit(f"{comfy_dir}/{f} not found: copy the ComfyUI files first (tools/reference/README.md)")
    sys.path.insert(0, comfy_dir)
    sys.modules.setdefault("torchsde", _module("torchsde", BrownianTree=_unavailable("torchsde.BrownianTree")))
    for name in ("PIL", "einops"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = _module(name, Image=_module(name + ".Image"), repeat=_unavailable("einops.repeat"),
                                        rearrange=_unavailable("einops.rearrange"))
    import comfy
    if os.path.join(comfy_dir, "comfy") not in [os.path.abspath(p) for p in getattr(comfy, "__path__", [])]:
        raise SystemExit(f"imported comfy from {getattr(comfy, '__path__', '?')}, not {comfy_dir}/comfy")

    mm_path = os.path.join(comfy_dir, "comfy", "model_management.py")
    mm = _Permissive("comfy.model_management")
    mm.__spec__ = importlib.machinery.ModuleSpec("comfy.model_management", None)
    big = float(1 << 50)
    mm.__dict__.update(
        get_free_memory=lambda *a, **k: big, intermediate_device=lambda: torch.device("cpu"),
        get_offload_stream=lambda *a, **k: None, device_supports_non_blocking=lambda *a, **k: False,
        sync_stream=lambda *a, **k: None, pytorch_attention_enabled=lambda: True, force_upcast_attention_dtype=lambda: None,
        text_encoder_device=lambda: torch.device("cpu"), text_encoder_offload_device=lambda: torch.device("cpu"))
    if os.path.isfile(mm_path):  # ComfyUI's own cast_to (what ops.cast_bias_weight calls)
        mm.cast_to = extract(mm_path, ["cast_to"], {"torch": torch})["cast_to"]
    else:
        mm.cast_to = lambda w, dtype=None, device=None, non_blocking=False, copy=False, stream=None: w.to(device=device, dtype=dtype, copy=copy)
    mm.cast_to_device = lambda t, device, dtype, copy=False: mm.cast_to(t, dtype=dtype, device=device, copy=copy)
    import enum

    class PerformanceFeature(enum.Enum):
        Fp16Accumulation = "fp16_accumulation"
        Fp8MatrixMultiplication = "fp8_matrix_mult"
        CublasOps = "cublas_ops"
        AutoTune = "autotune"

    stubs = {
        "model_management": mm,
        "cli_args": _module("comfy.cli_args", args=_Args(), PerformanceFeature=PerformanceFeature),
        "sampler_helpers": _module("comfy.sampler_helpers", convert_cond=_unavailable("comfy.sampler_helpers.convert_cond")),
        "model_patcher": _module("comfy.model_patcher",
                                 set_model_options_post_cfg_function=_unavailable("comfy.model_patcher (cfg_pp samplers)"),
                                 create_model_options_clone=_unavailable("comfy.model_patcher.create_model_options_clone")),
        "hooks": _module("comfy.hooks"),
        "context_windows": _module("comfy.context_windows"),
        "utils": _module("comfy.utils", repeat_to_batch_size=_repeat_to_batch_size),
    }
    for name, m in stubs.items():
        sys.modules["comfy." + name] = m
        setattr(comfy, name, m)
    import comfy.ldm  # namespace package
    ldm_util = _module("comfy.ldm.util", instantiate_from_config=_unavailable("instantiate_from_config"),
                       exists=lambda x: x is not None)
    sys.modules["comfy.ldm.util"] = ldm_util
    comfy.ldm.util = ldm_util

    import comfy.model_sampling
    import comfy.conds
    import comfy.samplers
    import comfy.sample
    import comfy.k_diffusion.sampling
    import comfy.ops
    import comfy.clip_model
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.text_encoders.sd2_clip
    import comfy.ldm.modules.diffusionmodules.util as dm_util

    ns = types.SimpleNamespace(comfy=comfy)
    cd = os.path.join(comfy_dir, "comfy")
    u = extract(os.path.join(cd, "utils.py"), ["state_dict_prefix_replace", "state_dict_key_replace", "transformers_convert",
                                                "clip_text_transformers_convert", "reshape_mask", "repeat_to_batch_size"],
                {"torch": torch, "math": math})
    ns.utils = types.SimpleNamespace(**u)
    ns.process_clip = extract(os.path.join(cd, "supported_models.py"),
                              ["SDXL.process_clip_state_dict", "SDXLRefiner.process_clip_state_dict", "SD20.process_clip_state_dict"],
                              {"torch": torch, "utils": ns.utils})
    ns.Timestep = extract(os.path.join(cd, "ldm", "modules", "diffusionmodules", "openaimodel.py"), ["Timestep"],
                          {"nn": torch.nn, "torch": torch, "th": torch, "timestep_embedding": dm_util.timestep_embedding})["Timestep"]
    ns.model_base = extract(os.path.join(cd, "model_base.py"), ["sdxl_pooled", "SDXL.encode_adm", "SDXLRefiner.encode_adm",
                                                                  "BaseModel.scale_latent_inpaint"],
                            {"torch": torch, "unclip_adm": _unavailable("unclip_adm")})
    return ns


def comfy_commit(comfy_dir):
    f = os.path.join(comfy_dir, "COMMIT")
    return open(f).read().strip() if os.path.isfile(f) else ""


# ------------------------------------------------------------ conditioning --

def read_st(path):
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(path).items()}


def pad_vocab(sd):
    for k in list(sd):
        if k.endswith("embeddings.token_embedding.weight") and sd[k].shape[0] < COMFY_VOCAB:
            w = sd[k]
            sd[k] = torch.cat([w, torch.zeros(COMFY_VOCAB - w.shape[0], w.shape[1], dtype=w.dtype)])
    return sd


def patch_tokenizer_path(ns, tok_dir):
    """ComfyUI's SD tokenizers read comfy/sd1_tokenizer when given no path: give them the tiny folder."""
    SDTokenizer = ns.comfy.sd1_clip.SDTokenizer
    orig = SDTokenizer.__init__

    def init(self, tokenizer_path=None, *a, **k):
        orig(self, tokenizer_path if tokenizer_path is not None else tok_dir, *a, **k)

    SDTokenizer.__init__ = init


def set_specials(clip_model, pad):
    clip_model.special_tokens = {"start": BOS_ID, "end": EOS_ID, "pad": pad}


def load_clip(ns, kind, single):
    sdxl_clip, sd2_clip, ops = ns.comfy.sdxl_clip, ns.comfy.text_encoders.sd2_clip, ns.comfy.ops.manual_cast
    sd = read_st(single)
    if kind == "sdxl":
        clip = sdxl_clip.SDXLClipModel(device="cpu", dtype=torch.float32,
                                       model_options={"clip_l_model_config": L_CFG, "clip_g_model_config": G_CFG})
        sd = ns.process_clip["SDXL.process_clip_state_dict"](None, sd)
        gs = [clip.clip_g]
        set_specials(clip.clip_l, EOS_ID)
        tok = sdxl_clip.SDXLTokenizer()
    elif kind == "refiner":
        clip = sdxl_clip.SDXLRefinerClipModel(device="cpu", dtype=torch.float32, model_options={"clip_g_model_config": G_CFG})
        sd = ns.process_clip["SDXLRefiner.process_clip_state_dict"](None, sd)
        gs = [clip.clip_g]
        tok = sdxl_clip.SDXLTokenizer()
    else:
        clip = sd2_clip.SD2ClipModel(device="cpu", dtype=torch.float32, model_options={"clip_h_model_config": H_CFG})
        sd = ns.process_clip["SD20.process_clip_state_dict"](None, sd)
        gs = []
        set_specials(clip.clip_h, 0)
        tok = sd2_clip.SD2Tokenizer()
    for g in gs:
        set_specials(g, 0)
        proj = sd.get("clip_g.transformer.text_projection.weight")
        g.transformer.text_projection = ops.Linear(proj.shape[1], proj.shape[0], bias=False, dtype=torch.float32)
    sd = pad_vocab(sd)
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    clip.eval()
    return clip, tok, dict(missing=sorted(missing), unexpected=sorted(unexpected), keys=len(sd))


def encode(clip, tok, text):
    tokens = tok.tokenize_with_weights(text)
    cond, pooled = clip.encode_token_weights(tokens)[:2]
    return cond.float(), (pooled.float() if pooled is not None else None), tokens


def tokens_json(tokens):
    return {k: [[[int(t), float(w)] for t, w in window] for window in v] for k, v in tokens.items()}


# --------------------------------------------------------------------- ADM --

class AdmModel:
    """What model_base.SDXL / SDXLRefiner hold for encode_adm (embedder Timestep at the tiny width)."""

    def __init__(self, ns, refiner):
        self.embedder = ns.Timestep(ADM_EMBED)
        self.noise_augmentor = None
        self._fn = ns.model_base["SDXLRefiner.encode_adm" if refiner else "SDXL.encode_adm"]
        self._pooled = ns.model_base["sdxl_pooled"]

    def encode_adm(self, **kw):
        fn = self._fn
        fn.__globals__["sdxl_pooled"] = self._pooled
        return fn(self, **kw)


def adm_for(ns, adm_model, cond, pooled, noise, prompt_type, **extra):
    """comfy.samplers.encode_model_conds around encode_adm (the defaults ComfyUI's samplers supply)."""
    conds = [dict({"pooled_output": pooled, "cross_attn": cond, "model_conds": {}}, **extra)]
    out = ns.comfy.samplers.encode_model_conds(lambda **kw: {"y": adm_model.encode_adm(**kw)}, conds, noise, "cpu", prompt_type)
    return out[0]["model_conds"]["y"].float()


# ---------------------------------------------------------------- sampling --

class _Patcher:
    def __init__(self, model_sampling):
        self.model_sampling = model_sampling
        self.model_options = {}
        self.load_device = "cpu"

    def get_model_object(self, name):
        if name != "model_sampling":
            raise KeyError(name)
        return self.model_sampling

    def prepare_state(self, timestep):
        pass

    def apply_hooks(self, hooks=None):
        return {}


NS = None  # the loaded ComfyUI namespace (main sets it)


class Net:
    """BaseModel._apply_model around a diffusers UNet: y (ADM) goes through add_embedding as label_emb."""

    def __init__(self, unet, model_sampling):
        self.unet = unet
        self.model_sampling = model_sampling
        self.current_patcher = _Patcher(model_sampling)
        self.calls = []
        if unet.config.addition_embed_type == "text_time":
            unet.get_aug_embed = lambda emb, encoder_hidden_states, added_cond_kwargs: unet.add_embedding(added_cond_kwargs["y"].to(emb.dtype))

    def memory_required(self, input_shape, cond_shapes=None):
        return 0

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
        """model_base.BaseModel.scale_latent_inpaint (ComfyUI's, taken with ast): the latent noised to sigma."""
        return NS.model_base["BaseModel.scale_latent_inpaint"](self, sigma, noise, latent_image, **kwargs)

    def apply_model(self, x, t, c_crossattn=None, y=None, transformer_options=None, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        ts = self.model_sampling.timestep(t).float()
        self.calls.append((float(sigma.flatten()[0]), float(ts.flatten()[0])))
        kw = {}
        if y is not None:
            kw["added_cond_kwargs"] = {"y": y.float()}
        out = self.unet(xc.float(), ts, encoder_hidden_states=c_crossattn.float(), **kw).sample.float()
        return self.model_sampling.calculate_denoised(sigma, out, x)


class Guider:
    def __init__(self, ns, net, cond, uncond, y, y_neg, cfg):
        c = ns.comfy.conds
        self.comfy = ns.comfy
        self.inner_model = net
        self.cfg = cfg

        def mc(ctx, adm):
            d = {"c_crossattn": c.CONDCrossAttn(ctx)}
            if adm is not None:
                d["y"] = c.CONDRegular(adm)
            return [{"model_conds": d, "uuid": uuid.uuid4()}]

        self.positive, self.negative = mc(cond, y), mc(uncond, y_neg)

    def __call__(self, x, timestep, model_options={}, seed=None):
        return self.comfy.samplers.sampling_function(self.inner_model, x, timestep, self.negative, self.positive, self.cfg,
                                                     model_options=model_options, seed=seed)


def model_sampling(ns, v=False, zsnr=False):
    ms = ns.comfy.model_sampling

    class ModelSampling(ms.ModelSamplingDiscrete, ms.V_PREDICTION if v else ms.EPS):
        pass

    return ModelSampling(None, zsnr=zsnr) if zsnr else ModelSampling(None)


def ksampler(ns, net, guider, sampler, scheduler, steps, noise, latent, cfg, seed, start_step=None, last_step=None,
             force_full_denoise=False, denoise=1.0, noise_mask=None):
    """KSampler(...).sample as comfy.sample.sample calls it; comfy.samplers.sample (CFGGuider) replaced by the
    KSAMPLER call it ends in, with our guider."""
    samplers = ns.comfy.samplers
    seen, used = [], {}

    def inner(model, noise_, positive, negative, cfg_, device, sampler_obj, sigmas, model_options={}, latent_image=None,
              denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        used["sigmas"] = sigmas.clone().float()
        if denoise_mask is not None:  # CFGGuider.outer_sample's comfy.sampler_helpers.prepare_mask
            denoise_mask = ns.utils.reshape_mask(denoise_mask, noise_.shape)
            used["latent_mask"] = denoise_mask.clone().float()
        extra_args = {"model_options": {"transformer_options": {"sample_sigmas": sigmas}}, "seed": seed}
        return sampler_obj.sample(guider, sigmas, extra_args, callback, noise_, latent_image=latent_image,
                                  denoise_mask=denoise_mask, disable_pbar=True)

    def callback(i, denoised, x, total):
        seen.append((int(i), x.detach().clone().float(), denoised.detach().clone().float()))

    ks = samplers.KSampler(net.current_patcher, steps=steps, device="cpu", sampler=sampler, scheduler=scheduler, denoise=denoise)
    full = ks.sigmas.clone().float()
    orig = samplers.sample
    samplers.sample = inner
    try:
        final = ks.sample(noise, None, None, cfg, latent_image=latent, start_step=start_step, last_step=last_step,
                          force_full_denoise=force_full_denoise, callback=callback, seed=seed, denoise_mask=noise_mask).float()
    finally:
        samplers.sample = orig
    n = len(used["sigmas"]) - 1
    if [s[0] for s in seen] != list(range(n)):
        raise RuntimeError(f"callback steps {[s[0] for s in seen]}, want 0..{n - 1}")
    cb_x = [s[1] for s in seen]
    latents = cb_x[1:] + [final]
    extra = {"latent_mask": used["latent_mask"]} if "latent_mask" in used else {}
    return dict(**extra, full_sigmas=full, sigmas=used["sigmas"], callback_x=torch.stack([x[0] for x in cb_x]),
                denoised=torch.stack([s[2][0] for s in seen]), latents=torch.stack([x[0] for x in latents]),
                final_latent=final)


def decode(vae, latent):
    img = vae.decode(latent / vae.config.scaling_factor).sample.float()
    return ((img + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).contiguous()


def load_nets(models_dir, name):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    d = os.path.join(models_dir, name, "diffusers")
    kw = dict(torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), **kw).float().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(d, "vae"), **kw).float().eval()
    return unet, vae


# -------------------------------------------------------------------- main --

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True, help="gen_sdxl_fixtures.py's output folder")
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    os.makedirs(args.out, exist_ok=True)
    global NS
    ns = NS = load_comfy(args.comfy)
    commit = comfy_commit(args.comfy)
    tok_dir = os.path.join(args.models, "sdxl-tiny", "diffusers", "tokenizer")
    patch_tokenizer_path(ns, tok_dir)
    tensors, manifest, failed = {}, [], 0

    def put(case, d, meta):
        for k, v in d.items():
            if v is not None:
                tensors[f"{case}/{k}"] = v.detach().cpu().float().contiguous()
        meta.setdefault("name", case)
        meta["comfyui_commit"] = commit
        manifest.append(meta)

    diff = {}
    for f in ("sdxl_cases", "sd2_cases"):
        p = os.path.join(args.models, f + ".safetensors")
        if os.path.isfile(p):
            diff[f] = read_st(p)

    def vs_diffusers(label, got, key):
        for f, t in diff.items():
            if key in t:
                ref = t[key]
                r = float((got - ref).norm() / ref.norm().clamp_min(1e-12)) if got.shape == ref.shape else float("nan")
                log(f"    {label} vs diffusers {key}: rel {r:.3g}")
                return r
        return None

    # ---------------- conditioning
    clips = {}
    for kind, model in (("sdxl", "sdxl-tiny"), ("refiner", "sdxl-refiner-tiny"), ("sd2", "sd2-tiny")):
        try:
            clip, tok, info = load_clip(ns, kind, os.path.join(args.models, model, "single.safetensors"))
            clips[kind] = (clip, tok)
            log(f"{kind} clip: {info['keys']} tensors; missing {info['missing']}; unexpected {info['unexpected']}")
        except Exception as e:
            failed += 1
            log(f"{kind} clip: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=8)

    prompts = [("plain", PROMPT), ("weighted", WEIGHTED), ("long", LONG_PROMPT), ("empty", "")]
    for kind, prompt_list in (("sdxl", prompts), ("refiner", prompts), ("sd2", [("plain", SD2_PROMPT), ("weighted", WEIGHTED),
                                                                               ("long", LONG_PROMPT), ("empty", "")])):
        if kind not in clips:
            continue
        clip, tok = clips[kind]
        for label, text in prompt_list:
            case = f"cond_{kind}_{label}"
            try:
                cond, pooled, tokens = encode(clip, tok, text)
                put(case, {"cond": cond, "pooled": pooled if kind != "sd2" else None},
                    dict(kind="conditioning", model=kind, prompt=text, tokens=tokens_json(tokens), cond_shape=list(cond.shape),
                         pooled_shape=list(pooled.shape) if (pooled is not None and kind != "sd2") else None))
                log(f"{case}: ok cond {list(cond.shape)} windows {[len(v) for v in tokens.values()]}")
                if label == "plain" and kind == "sdxl":
                    vs_diffusers("cond", cond, "euler_64/prompt_embeds")
                    vs_diffusers("pooled", pooled, "euler_64/pooled_prompt_embeds")
                if label == "plain" and kind == "sd2":
                    vs_diffusers("cond", cond, "v_euler_64/prompt_embeds")
            except Exception as e:
                failed += 1
                log(f"{case}: FAILED {type(e).__name__}: {e}")
                traceback.print_exc(limit=8)

    # ---------------- ADM vectors
    try:
        base_adm, ref_adm = AdmModel(ns, False), AdmModel(ns, True)
        clip, tok = clips["sdxl"]
        cond, pooled, _ = encode(clip, tok, PROMPT)
        lat = torch.zeros((1, 4, 8, 12))  # 96 x 64 (W x H)
        y = adm_for(ns, base_adm, cond, pooled, lat, "positive")
        put("adm_sdxl_96x64_default", {"y": y, "pooled": pooled},
            dict(kind="adm", model="sdxl", latent_shape=list(lat.shape), conditioning={},
                 note="width/height = latent x 8 (96, 64), crop 0, target = width/height"))
        ex = dict(width=1024, height=768, crop_w=16, crop_h=8, target_width=512, target_height=384)
        y2 = adm_for(ns, base_adm, cond, pooled, lat, "positive", **ex)
        put("adm_sdxl_explicit", {"y": y2, "pooled": pooled}, dict(kind="adm", model="sdxl", latent_shape=list(lat.shape), conditioning=ex))
        rclip, rtok = clips["refiner"]
        rc, rp, _ = encode(rclip, rtok, PROMPT)
        rn, rnp, _ = encode(rclip, rtok, NEGATIVE)
        lat64 = torch.zeros((1, 4, 8, 8))
        yr = adm_for(ns, ref_adm, rc, rp, lat64, "positive", aesthetic_score=6.0)
        yrn = adm_for(ns, ref_adm, rn, rnp, lat64, "negative", aesthetic_score=2.5)
        yrn_default = adm_for(ns, ref_adm, rn, rnp, lat64, "negative")
        put("adm_refiner_64", {"y": yr, "negative_y": yrn, "negative_y_default_score": yrn_default, "pooled": rp, "negative_pooled": rnp},
            dict(kind="adm", model="refiner", latent_shape=list(lat64.shape), positive=dict(aesthetic_score=6.0),
                 negative=dict(aesthetic_score=2.5, prompt_type="negative"),
                 note="negative_y_default_score: prompt_type negative with no aesthetic_score (ComfyUI's default 2.5)"))
        log(f"adm: ok sdxl {list(y.shape)} refiner {list(yr.shape)}")
    except Exception as e:
        failed += 1
        log(f"adm: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)

    # ---------------- sampling
    sample_cases = [
        # name, model, sampler, scheduler, steps, cfg, v, zsnr
        ("sdxl_euler_normal", "sdxl", "euler", "normal", 8, 5.0, False, False),
        ("sdxl_dpmpp_2m_karras", "sdxl", "dpmpp_2m", "karras", 8, 5.0, False, False),
        # cfg 4 as in gen_sdxl_fixtures.py's SD 2.x cases (SD2_CFG: at 7 these nets' trajectories are chaotic)
        ("sd2_v_euler_normal", "sd2", "euler", "normal", 8, 4.0, True, False),
        ("sd2_v_zsnr_euler_normal", "sd2", "euler", "normal", 8, 4.0, True, True),
    ]
    nets = {}
    seed, w, h = 1234, 64, 64
    for name, kind, sampler, scheduler, steps, cfg, v, zsnr in sample_cases:
        try:
            model = {"sdxl": "sdxl-tiny", "sd2": "sd2-tiny"}[kind]
            if model not in nets:
                nets[model] = load_nets(args.models, model)
            unet, vae = nets[model]
            ms = model_sampling(ns, v=v, zsnr=zsnr)
            net = Net(unet, ms)
            clip, tok = clips[kind]
            p = PROMPT if kind == "sdxl" else SD2_PROMPT
            cond, pooled, _ = encode(clip, tok, p)
            uncond, upooled, _ = encode(clip, tok, NEGATIVE)
            latent = torch.zeros((1, 4, h // 8, w // 8))
            y = y_neg = None
            if kind == "sdxl":
                adm_model = AdmModel(ns, False)
                y = adm_for(ns, adm_model, cond, pooled, latent, "positive")
                y_neg = adm_for(ns, adm_model, uncond, upooled, latent, "negative")
            guider = Guider(ns, net, cond, uncond, y, y_neg, cfg)
            noise = ns.comfy.sample.prepare_noise(latent, seed)
            r = ksampler(ns, net, guider, sampler, scheduler, steps, noise, latent, cfg, seed)
            img = decode(vae, r["final_latent"])
            out = dict(noise=noise, image=img, prompt_embeds=cond, negative_embeds=uncond, **r,
                       model_sigmas=torch.tensor([c[0] for c in net.calls]), model_timesteps=torch.tensor([c[1] for c in net.calls]))
            if kind == "sdxl":
                out.update(pooled=pooled, negative_pooled=upooled, y=y, negative_y=y_neg)
            meta = dict(kind="sampling", model=model, sampler=sampler, scheduler=scheduler, steps=steps, cfg=cfg, seed=seed,
                        width=w, height=h, prompt=p, negative=NEGATIVE, model_sampling=("V_PREDICTION" if v else "EPS") +
                        (" zsnr" if zsnr else ""), model_calls=len(net.calls),
                        stats=dict(image_rms=float(img.pow(2).mean().sqrt()), clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                                   final_latent_rms=float(r["final_latent"].pow(2).mean().sqrt())))
            put(name, out, meta)
            log(f"{name}: ok sigmas={[round(float(s), 4) for s in r['sigmas']]} stats={json.dumps(meta['stats'])}")
        except Exception as e:
            failed += 1
            log(f"{name}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=8)

    # two KSamplerAdvanced: base 0..8 of 10 with leftover noise, refiner 8..10 without adding noise
    name = "swap_base_refiner_euler_normal"
    try:
        steps, cfg, seed = 10, 5.0, 2024
        if "sdxl-tiny" not in nets:
            nets["sdxl-tiny"] = load_nets(args.models, "sdxl-tiny")
        unet, vae = nets["sdxl-tiny"]
        runet, _ = load_nets(args.models, "sdxl-refiner-tiny")
        latent = torch.zeros((1, 4, 8, 8))
        clip, tok = clips["sdxl"]
        cond, pooled, _ = encode(clip, tok, PROMPT)
        uncond, upooled, _ = encode(clip, tok, NEGATIVE)
        am = AdmModel(ns, False)
        y, yn = adm_for(ns, am, cond, pooled, latent, "positive"), adm_for(ns, am, uncond, upooled, latent, "negative")
        net = Net(unet, model_sampling(ns))
        noise = ns.comfy.sample.prepare_noise(latent, seed)
        rb = ksampler(ns, net, Guider(ns, net, cond, uncond, y, yn, cfg), "euler", "normal", steps, noise, latent, cfg, seed,
                      start_step=0, last_step=8, force_full_denoise=False)
        rclip, rtok = clips["refiner"]
        rc, rp, _ = encode(rclip, rtok, PROMPT)
        rn, rnp, _ = encode(rclip, rtok, NEGATIVE)
        ram = AdmModel(ns, True)
        ry, ryn = adm_for(ns, ram, rc, rp, latent, "positive"), adm_for(ns, ram, rn, rnp, latent, "negative")
        rnet = Net(runet, model_sampling(ns))
        switch = rb["final_latent"]
        rr = ksampler(ns, rnet, Guider(ns, rnet, rc, rn, ry, ryn, cfg), "euler", "normal", steps, torch.zeros_like(switch), switch,
                      cfg, seed, start_step=8, last_step=10, force_full_denoise=True)
        img = decode(vae, rr["final_latent"])
        out = {"noise": noise, "switch_latent": switch, "final_latent": rr["final_latent"], "image": img}
        out.update({f"base/{k}": v for k, v in rb.items()})
        out.update({f"refiner/{k}": v for k, v in rr.items()})
        out.update({"base/prompt_embeds": cond, "base/negative_embeds": uncond, "base/y": y, "base/negative_y": yn,
                    "refiner/prompt_embeds": rc, "refiner/negative_embeds": rn, "refiner/y": ry, "refiner/negative_y": ryn,
                    "base/model_timesteps": torch.tensor([c[1] for c in net.calls]),
                    "refiner/model_timesteps": torch.tensor([c[1] for c in rnet.calls])})
        meta = dict(kind="sampling", model="sdxl-tiny + sdxl-refiner-tiny", sampler="euler", scheduler="normal", steps=steps, cfg=cfg,
                    seed=seed, width=64, height=64, prompt=PROMPT, negative=NEGATIVE,
                    base=dict(node="KSamplerAdvanced", add_noise="enable", start_at_step=0, end_at_step=8,
                              return_with_leftover_noise="enable"),
                    refiner=dict(node="KSamplerAdvanced", add_noise="disable", start_at_step=8, end_at_step=10,
                                 return_with_leftover_noise="disable", aesthetic_score="ComfyUI defaults: 6 positive, 2.5 negative"),
                    switch_rule="ComfyUI: the user picks the step; base sigmas[:9] (last_step 8), refiner sigmas[8:] of the same "
                                "10-step schedule; refiner noise is zeros (add_noise disable) so x = latent",
                    stats=dict(image_rms=float(img.pow(2).mean().sqrt()), clipped=float(((img <= 0) | (img >= 1)).float().mean())))
        put(name, out, meta)
        log(f"{name}: ok base sigmas {[round(float(s), 4) for s in rb['sigmas']]} refiner {[round(float(s), 4) for s in rr['sigmas']]}")
    except Exception as e:
        failed += 1
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)

    # img2img: VAEEncode (the posterior's mean, ComfyUI's DiagonalGaussianRegularizer(sample=False)) of a test image,
    # KSampler with denoise 0.6: the last 10 sigmas of a 16-step schedule, x = latent + sigma0*noise
    name = "sdxl_img2img_euler_normal_d06"
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from gen_sdxl_fixtures import init_pixels
        steps, cfg, seed, denoise = 10, 5.0, 77, 0.6
        if "sdxl-tiny" not in nets:
            nets["sdxl-tiny"] = load_nets(args.models, "sdxl-tiny")
        unet, vae = nets["sdxl-tiny"]
        pix = init_pixels(64, 64)
        lat = vae.encode(pix / 255.0 * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        clip, tok = clips["sdxl"]
        cond, pooled, _ = encode(clip, tok, PROMPT)
        uncond, upooled, _ = encode(clip, tok, NEGATIVE)
        am = AdmModel(ns, False)
        y, yn = adm_for(ns, am, cond, pooled, lat, "positive"), adm_for(ns, am, uncond, upooled, lat, "negative")
        net = Net(unet, model_sampling(ns))
        noise = ns.comfy.sample.prepare_noise(lat, seed)
        r = ksampler(ns, net, Guider(ns, net, cond, uncond, y, yn, cfg), "euler", "normal", steps, noise, lat, cfg, seed,
                     denoise=denoise)
        img = decode(vae, r["final_latent"])
        out = dict(init_pixels=pix, init_latent=lat, noise=noise, image=img, prompt_embeds=cond, negative_embeds=uncond,
                   y=y, negative_y=yn, **r, model_timesteps=torch.tensor([c[1] for c in net.calls]))
        meta = dict(kind="sampling", model="sdxl-tiny", sampler="euler", scheduler="normal", steps=steps, cfg=cfg, seed=seed,
                    denoise=denoise, width=64, height=64, prompt=PROMPT, negative=NEGATIVE, model_sampling="EPS",
                    model_calls=len(net.calls), init="VAEEncode (mean) of init_pixels/255",
                    stats=dict(image_rms=float(img.pow(2).mean().sqrt()),
                               final_latent_rms=float(r["final_latent"].pow(2).mean().sqrt())))
        put(name, out, meta)
        log(f"{name}: ok sigmas={[round(float(s), 4) for s in r['sigmas']]} stats={json.dumps(meta['stats'])}")
    except Exception as e:
        failed += 1
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)

    # inpaint with the base model: VAEEncode (mean) + SetLatentNoiseMask (a soft-edged rectangle) + KSampler denoise 0.8:
    # KSamplerX0Inpaint keeps the unmasked latent at the init latent noised to each sigma
    name = "sdxl_inpaint_euler_normal_d08"
    try:
        from gen_sdxl_fixtures import init_pixels
        steps, cfg, seed, denoise = 8, 5.0, 99, 0.8
        unet, vae = nets["sdxl-tiny"]
        pix = init_pixels(64, 64)
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        # 1 inside x 16..47, y 8..39, a linear 4-pixel ramp outside: stored as 8-bit grey like a mask PNG
        d = torch.maximum(torch.maximum(16 - xx, xx - 47), torch.maximum(8 - yy, yy - 39)).clamp(min=0)
        mask = ((1 - d / 4).clamp(0, 1) * 255).round() / 255
        lat = vae.encode(pix / 255.0 * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        clip, tok = clips["sdxl"]
        cond, pooled, _ = encode(clip, tok, PROMPT)
        uncond, upooled, _ = encode(clip, tok, NEGATIVE)
        am = AdmModel(ns, False)
        y, yn = adm_for(ns, am, cond, pooled, lat, "positive"), adm_for(ns, am, uncond, upooled, lat, "negative")
        net = Net(unet, model_sampling(ns))
        noise = ns.comfy.sample.prepare_noise(lat, seed)
        r = ksampler(ns, net, Guider(ns, net, cond, uncond, y, yn, cfg), "euler", "normal", steps, noise, lat, cfg, seed,
                     denoise=denoise, noise_mask=mask.reshape(1, 1, 64, 64))
        img = decode(vae, r["final_latent"])
        out = dict(init_pixels=pix, mask=mask, init_latent=lat, noise=noise, image=img, **r)
        meta = dict(kind="sampling", model="sdxl-tiny", sampler="euler", scheduler="normal", steps=steps, cfg=cfg, seed=seed,
                    denoise=denoise, width=64, height=64, prompt=PROMPT, negative=NEGATIVE, model_sampling="EPS",
                    model_calls=len(net.calls), init="VAEEncode (mean) of init_pixels/255", inpaint="SetLatentNoiseMask(mask)",
                    note="image is ComfyUI's raw decode (no composite); darkroom composites the unmasked pixels back",
                    stats=dict(image_rms=float(img.pow(2).mean().sqrt()),
                               final_latent_rms=float(r["final_latent"].pow(2).mean().sqrt())))
        put(name, out, meta)
        log(f"{name}: ok sigmas={[round(float(s), 4) for s in r['sigmas']]} stats={json.dumps(meta['stats'])}")
    except Exception as e:
        failed += 1
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)

    from safetensors.torch import save_file
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(args.out, "comfy_sdxl_cases.safetensors"))
    with open(os.path.join(args.out, "comfy_sdxl_cases.json"), "w") as f:
        json.dump(dict(comfyui_commit=commit, cases=manifest), f, indent=1)
    log(f"comfy_sdxl_cases: {len(manifest)} ok, {failed} failed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
