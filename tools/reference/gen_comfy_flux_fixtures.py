#!/usr/bin/env python3
"""ComfyUI reference fixtures for FLUX.1 (dev and schnell) on the tiny models.

ComfyUI cannot load the tiny Flux models (its model detection and its text
encoders only know the real sizes), so this script runs ComfyUI's OWN code,
loaded at run time from a local copy (--comfy, e.g. .ref/comfy; never
committed), at the tiny sizes. What runs, all of it ComfyUI's code unless
said otherwise:

- text: comfy/text_encoders/flux.py FluxTokenizer (sd1_clip.SDTokenizer for
  CLIP-L, T5XXLTokenizer for T5: min_length 256, pad 0, no start token, no
  truncation) and FluxClipModel (sd1_clip.SDClipModel with
  comfy/clip_model.py's CLIPTextModel, return_projected_pooled=False, and
  text_encoders/sd3_clip.py T5XXLModel with text_encoders/t5.py's T5, no
  attention mask), with sd1_clip.ClipTokenWeightEncoder's weighting, driven
  by sd.CLIP's tokenize / encode_from_tokens_scheduled / encode_from_tokens
  (taken from comfy/sd.py with ast) as the CLIPTextEncode node calls them.
  Tiny-size adaptations (and nothing else): the CLIP-L tokenizer reads the
  tiny vocabulary folder (ComfyUI's comfy/sd1_tokenizer is the real one);
  the text-model sizes are passed the way ComfyUI takes config overrides
  (model_options["clip_l_model_config"] / ["t5xxl_model_config"]; the tiny
  T5's "gelu_new" is ComfyUI's "gelu_pytorch_tanh", the same function);
  CLIP-L's special tokens are set to the tiny vocabulary's start/end ids;
  the tiny CLIP token table is zero-padded to ComfyUI's fixed 49408 rows;
  CLIP's unused text_projection (the tiny CLIPTextModel has none) is the
  identity. The T5 tokenizer is ComfyUI's own t5_tokenizer folder.
- FluxGuidance (comfy_extras/nodes_flux.py, via node_helpers'
  conditioning_set_values), ModelSamplingFlux (comfy_extras/
  nodes_model_advanced.py), supported_models.Flux / FluxSchnell
  (sampling_settings, get_model) and model_base.Flux / BaseModel (extra_conds,
  encode_adm, apply_model / _apply_model, process_latent_in/out,
  model_sampling()), all taken from the files with ast since those modules
  import half of ComfyUI; comfy.model_sampling, comfy.conds,
  comfy.latent_formats, comfy.patcher_extension imported as they are.
- sampling: comfy.sample.prepare_noise, fix_empty_latent_channels and
  sample -> comfy.samplers.KSampler -> samplers.sample -> CFGGuider.sample /
  outer_sample / inner_sample -> KSAMPLER -> comfy.k_diffusion.sampling,
  with sampling_function / calc_cond_batch / cfg_function.
- network: comfy/ldm/flux/model.py's Flux.forward / _forward / process_img
  (circular padding of odd latents to whole 2x2 patches, patching, img_ids
  (0, row, col), txt_ids zeros, the crop) as they are, with forward_orig
  replaced by diffusers' FluxTransformer2DModel holding the tiny weights of
  testdata/reference/flux-tiny (timestep = sigma and guidance as given;
  diffusers multiplies both by 1000 where ComfyUI's timestep_embedding has
  time_factor 1000). Where the BFL files of the tiny models are given
  (--bfl), ComfyUI's own comfy.ldm.flux.model.Flux is built at the tiny size,
  loaded with them, and its forward_orig is compared with diffusers' on the
  first model call of every case (checks in cases.json).
- VAE: latent_formats.Flux.process_out (z / 0.3611 + 0.1159, in
  CFGGuider.inner_sample) and then the tiny diffusers AutoencoderKL of
  flux-pipe/dev/vae standing in for ComfyUI's VAE; image = clamp((x+1)/2, 0,
  1) moved to [B, H, W, 3] as comfy/sd.py VAE.decode does.

The stand-ins for ComfyUI's machinery that the paths cross but that do no
arithmetic: a ModelPatcher with object patches (the ModelSamplingFlux node's
model_sampling is set on the model before sampling, as ModelPatcher does
when it loads the model), model loading (prepare_sampling returns the model)
and stubs for model_management, hooks, utils, cli_args, torchsde.

Cross-checks written to cases.json "checks" (they do not change the
fixture): transformers' CLIPTextModel / T5EncoderModel on the same ids
against ComfyUI's encoders; ComfyUI's T5 / CLIP tokenizer ids (transformers
class) against the raw tokenizers library on the same tokenizer.json (if the
T5 ones differ, the raw tokenizer -- what transformers 4's T5TokenizerFast
ran -- is used and cases.json says so); ComfyUI's own Flux network against
diffusers'; img_ids / txt_ids; images not flat.

Outputs (--out): cases.json, cases.safetensors (float32, "<case>/<what>").
Usage (no network, CPU, float32):
    PYTHONPATH=.ref/diffusers_src/src CUDA_VISIBLE_DEVICES= python3 tools/reference/gen_comfy_flux_fixtures.py \\
        --comfy .ref/comfy --flux-tiny DIR --t5-tiny DIR --pipe DIR/flux-pipe/dev [--bfl DIR/flux-pipe/bfl] --out DIR
"""
import argparse
import ast
import enum
import importlib.machinery
import json
import logging
import math
import os
import sys
import traceback
import types
import uuid

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

COMFY_VOCAB = 49408
PLAIN_PROMPT = 'A red fox on a snowy hill at dawn, soft light; "early morning" mist - 35mm photo, f/2.8!'
WEIGHTED_PROMPT = "a (red:1.3) fox in the (snow:0.8), ((sharp))"
NEGATIVE = "blurry, low quality"
LONG_PROMPT = (
    "A vast panoramic landscape painting of a quiet mountain valley in late autumn, seen from a high rocky ledge "
    "where an old pine tree leans over the drop, its twisted roots gripping the stone. Below, a winding river "
    "reflects the pale gold of the morning sky, passing through meadows of tall dry grass, small stands of birch "
    "with yellow leaves, and a few scattered farmhouses with red tiled roofs and thin columns of smoke rising "
    "from their chimneys. A narrow wooden bridge crosses the river near a stone mill whose water wheel turns "
    "slowly. On the far side, terraced fields climb the lower slopes, divided by low dry stone walls and rows of "
    "dark cypress trees. Higher up, dense forests of spruce and fir give way to bare grey cliffs streaked with "
    "the first snow of the season, and beyond them rise jagged peaks half hidden in drifting clouds. Flocks of "
    "birds wheel above the valley, a shepherd leads a small herd of sheep along a dusty path, and a horse cart "
    "waits by a roadside shrine decorated with fresh flowers. The light is soft and warm, with long shadows, "
    "gentle haze in the distance, and crisp detail in the foreground rocks, lichens, fallen needles and pine "
    "cones. The style recalls the great romantic landscape painters, with careful glazing, rich earthy colors, "
    "subtle atmospheric perspective, luminous skies, fine brushwork, a calm and contemplative mood, and an "
    "overall sense of scale, depth, silence and harmony between people and nature in the mountains at the end "
    "of the year, just before winter arrives and the first heavy snowfall closes the high passes until spring."
)

# The request of each case, as darkroom is asked for it: guidance None = no FluxGuidance node (schnell);
# shift_override None = darkroom's default (dev: the dynamic shift of the ModelSamplingFlux node for the image
# size; schnell: ComfyUI's FluxSchnell sampling), a number = an explicit shift. comfy_node: the ComfyUI graph has
# the ModelSamplingFlux node (width/height = the image's) between the checkpoint and the KSampler.
CASES = [
    dict(name="dev_euler_simple", variant="dev", prompt=PLAIN_PROMPT, negative="", width=64, height=48, steps=4,
         sampler="euler", scheduler="simple", cfg=1.0, guidance=3.5, seed=42, batch=1, shift_override=None,
         comfy_node=True),
    dict(name="dev_euler_simple_shift115", variant="dev", prompt=PLAIN_PROMPT, negative="", width=64, height=48,
         steps=4, sampler="euler", scheduler="simple", cfg=1.0, guidance=3.5, seed=42, batch=1, shift_override=1.15,
         comfy_node=False),
    dict(name="dev_weighted", variant="dev", prompt=WEIGHTED_PROMPT, negative="", width=64, height=48, steps=4,
         sampler="euler", scheduler="simple", cfg=1.0, guidance=3.5, seed=42, batch=1, shift_override=None,
         comfy_node=True),
    dict(name="dev_long_cfg_dpmpp2m", variant="dev", prompt=LONG_PROMPT, negative=NEGATIVE, width=64, height=48,
         steps=3, sampler="dpmpp_2m", scheduler="simple", cfg=2.5, guidance=3.5, seed=3, batch=2, shift_override=None,
         comfy_node=True),
    dict(name="schnell_euler_simple", variant="schnell", prompt=PLAIN_PROMPT, negative="", width=64, height=64,
         steps=4, sampler="euler", scheduler="simple", cfg=1.0, guidance=None, seed=11, batch=1, shift_override=None,
         comfy_node=False),
    dict(name="dev_heun_beta_odd", variant="dev", prompt=PLAIN_PROMPT, negative="", width=72, height=56, steps=3,
         sampler="heun", scheduler="beta", cfg=1.0, guidance=3.5, seed=5, batch=1, shift_override=None,
         comfy_node=True),
]
MAX_SHIFT, BASE_SHIFT = 1.15, 0.5  # the ModelSamplingFlux node's defaults


def log(*a):
    print(*a, flush=True)


def f32(t):
    return t.detach().cpu().float().contiguous().clone()


# ----------------------------------------------------------------- ComfyUI --

# The stubs ComfyUI's imports need, shared with the SDXL script.
from gen_comfy_sdxl_fixtures import _Args, _module, _Permissive, _repeat_to_batch_size, _unavailable  # noqa: E402


def extract(path, names, env):
    """Executes the named top-level functions/classes or "Class.method"s of a ComfyUI file (ast), in file order,
    top-level ones in env itself (so later ones see earlier ones), so that ComfyUI's own code runs without
    importing its module and all that module imports."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), env)
            out[node.name] = env[node.name]
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and f"{node.name}.{sub.name}" in names:
                    e = dict(env)
                    exec(compile(ast.Module(body=[sub], type_ignores=[]), path, "exec"), e)
                    out[f"{node.name}.{sub.name}"] = e[sub.name]
    missing = set(names) - set(out)
    if missing:
        raise RuntimeError(f"{path}: not found: {sorted(missing)}")
    return out


def load_comfy(comfy_dir):
    """Imports ComfyUI's modules from comfy_dir with stubs for the heavy ones; returns a namespace."""
    comfy_dir = os.path.abspath(comfy_dir)
    need = ["comfy/samplers.py", "comfy/sd1_clip.py", "comfy/text_encoders/flux.py", "comfy/text_encoders/t5.py",
            "comfy/ldm/flux/model.py", "comfy/model_base.py", "comfy/supported_models.py", "comfy/sd.py",
            "comfy_extras/nodes_model_advanced.py", "comfy_extras/nodes_flux.py", "node_helpers.py",
            "comfy/text_encoders/t5_tokenizer/tokenizer.json"]
    for f in need:
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
    # comfy/text_encoders/flux.py and sd3_clip.py import T5TokenizerFast; transformers 5 folded the fast
    # tokenizers into the plain class names (T5Tokenizer is the tokenizers-backed one there).
    import transformers
    try:
        from transformers import T5TokenizerFast  # noqa: F401
    except ImportError:
        transformers.T5TokenizerFast = transformers.T5Tokenizer
    import comfy
    if os.path.join(comfy_dir, "comfy") not in [os.path.abspath(p) for p in getattr(comfy, "__path__", [])]:
        raise SystemExit(f"imported comfy from {getattr(comfy, '__path__', '?')}, not {comfy_dir}/comfy")
    cd = os.path.join(comfy_dir, "comfy")

    mm = _Permissive("comfy.model_management")
    mm.__spec__ = importlib.machinery.ModuleSpec("comfy.model_management", None)
    big = float(1 << 50)
    mm.__dict__.update(
        get_free_memory=lambda *a, **k: big, intermediate_device=lambda: torch.device("cpu"),
        get_offload_stream=lambda *a, **k: None, device_supports_non_blocking=lambda *a, **k: False,
        sync_stream=lambda *a, **k: None, pytorch_attention_enabled=lambda: True, force_upcast_attention_dtype=lambda: None,
        text_encoder_device=lambda: torch.device("cpu"), text_encoder_offload_device=lambda: torch.device("cpu"),
        pick_weight_dtype=lambda dtype, fallback_dtype, device=None: fallback_dtype if dtype is None else dtype,
        OOM_EXCEPTION=torch.cuda.OutOfMemoryError if hasattr(torch.cuda, "OutOfMemoryError") else MemoryError)
    mm.cast_to = extract(os.path.join(cd, "model_management.py"), ["cast_to"], {"torch": torch})["cast_to"]
    mm.cast_to_device = lambda t, device, dtype, copy=False: mm.cast_to(t, dtype=dtype, device=device, copy=copy)

    class PerformanceFeature(enum.Enum):
        Fp16Accumulation = "fp16_accumulation"
        Fp8MatrixMultiplication = "fp8_matrix_mult"
        CublasOps = "cublas_ops"
        AutoTune = "autotune"

    class EnumHookMode(enum.Enum):
        MinVram = "minvram"
        MaxSpeed = "maxspeed"

    sampler_helpers = _module("comfy.sampler_helpers")
    model_patcher = _module("comfy.model_patcher",
                            set_model_options_post_cfg_function=_unavailable("comfy.model_patcher (cfg_pp samplers)"))
    stubs = {
        "model_management": mm,
        "cli_args": _module("comfy.cli_args", args=_Args(), PerformanceFeature=PerformanceFeature),
        "sampler_helpers": sampler_helpers,
        "model_patcher": model_patcher,
        "hooks": _module("comfy.hooks", EnumHookMode=EnumHookMode),
        "context_windows": _module("comfy.context_windows"),
        "utils": _module("comfy.utils", repeat_to_batch_size=_repeat_to_batch_size, PROGRESS_BAR_ENABLED=False),
    }
    for name, m in stubs.items():
        sys.modules["comfy." + name] = m
        setattr(comfy, name, m)
    import comfy.ldm  # namespace package
    ldm_util = _module("comfy.ldm.util", instantiate_from_config=_unavailable("instantiate_from_config"),
                       exists=lambda x: x is not None)
    sys.modules["comfy.ldm.util"] = ldm_util
    comfy.ldm.util = ldm_util

    import comfy.patcher_extension
    # ComfyUI's own helpers from modules too heavy to import
    model_patcher.create_model_options_clone = extract(os.path.join(cd, "model_patcher.py"), ["create_model_options_clone"],
                                                       {"comfy": comfy})["create_model_options_clone"]
    sampler_helpers.convert_cond = extract(os.path.join(cd, "sampler_helpers.py"), ["convert_cond"],
                                           {"uuid": uuid})["convert_cond"]

    def prepare_model_patcher(model, conds, model_options):
        # ComfyUI's registers hooks found in conds (there are none here) and merges the patcher's wrappers and
        # callbacks (none) into model_options["transformer_options"].
        model_options.setdefault("transformer_options", {})

    def prepare_sampling(model, noise_shape, conds, model_options=None):
        # ComfyUI's loads the model (ModelPatcher.patch_model applies the object patches) and returns model.model.
        model.apply_object_patches()
        return model.model, conds, []

    sampler_helpers.prepare_model_patcher = prepare_model_patcher
    sampler_helpers.prepare_sampling = prepare_sampling
    sampler_helpers.cleanup_models = lambda conds, models: None
    sampler_helpers.prepare_mask = _unavailable("comfy.sampler_helpers.prepare_mask")

    import comfy.model_sampling
    import comfy.conds
    import comfy.latent_formats
    import comfy.samplers
    import comfy.sample
    import comfy.k_diffusion.sampling
    import comfy.ops
    import comfy.clip_model
    import comfy.sd1_clip
    import comfy.text_encoders.t5
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.flux
    import comfy.ldm.common_dit
    import comfy.ldm.flux.model

    ns = types.SimpleNamespace(comfy=comfy, dir=comfy_dir)
    # model_base.py: ModelType, model_sampling(), convert_tensor, BaseModel, Flux
    mb_env = {"torch": torch, "math": math, "logging": logging, "Enum": enum.Enum, "comfy": comfy,
              "utils": comfy.utils, "UNetModel": None, "__name__": "comfy.model_base"}
    extract(os.path.join(cd, "model_base.py"), ["ModelType", "model_sampling", "convert_tensor", "BaseModel", "Flux"], mb_env)
    ns.ModelType, ns.FluxModel, ns.model_sampling_fn = mb_env["ModelType"], mb_env["Flux"], mb_env["model_sampling"]
    model_base = types.SimpleNamespace(ModelType=mb_env["ModelType"], Flux=mb_env["Flux"])
    # supported_models_base.BASE, supported_models.Flux / FluxSchnell
    smb_env = {"torch": torch, "model_base": model_base, "utils": comfy.utils, "latent_formats": comfy.latent_formats,
               "__name__": "comfy.supported_models_base"}
    extract(os.path.join(cd, "supported_models_base.py"), ["BASE", "ClipTarget"], smb_env)
    sm_env = {"torch": torch, "comfy": comfy, "model_base": model_base, "latent_formats": comfy.latent_formats,
              "supported_models_base": types.SimpleNamespace(BASE=smb_env["BASE"], ClipTarget=smb_env["ClipTarget"]),
              "__name__": "comfy.supported_models"}
    extract(os.path.join(cd, "supported_models.py"), ["Flux", "FluxSchnell"], sm_env)
    ns.SupportedFlux, ns.SupportedFluxSchnell = sm_env["Flux"], sm_env["FluxSchnell"]
    # nodes: ModelSamplingFlux, FluxGuidance (+ node_helpers.conditioning_set_values), sd.CLIP's encode methods
    nma_env = {"torch": torch, "comfy": comfy, "nodes": types.SimpleNamespace(MAX_RESOLUTION=16384),
               "__name__": "comfy_extras.nodes_model_advanced"}
    ns.ModelSamplingFluxNode = extract(os.path.join(comfy_dir, "comfy_extras", "nodes_model_advanced.py"),
                                       ["ModelSamplingFlux"], nma_env)["ModelSamplingFlux"]
    csv = extract(os.path.join(comfy_dir, "node_helpers.py"), ["conditioning_set_values"], {})["conditioning_set_values"]
    fg = extract(os.path.join(comfy_dir, "comfy_extras", "nodes_flux.py"), ["FluxGuidance.execute"],
                 {"node_helpers": types.SimpleNamespace(conditioning_set_values=csv),
                  "io": types.SimpleNamespace(NodeOutput=lambda *a, **k: a)})["FluxGuidance.execute"]
    ns.flux_guidance = lambda conditioning, guidance: fg.__func__(None, conditioning, guidance)[0]
    ns.clip_methods = extract(os.path.join(cd, "sd.py"), ["CLIP.tokenize", "CLIP.encode_from_tokens_scheduled",
                                                          "CLIP.encode_from_tokens", "CLIP.add_hooks_to_dict"],
                              {"torch": torch, "model_management": mm, "ProgressBar": None})
    return ns


def comfy_commit(comfy_dir):
    f = os.path.join(comfy_dir, "COMMIT")
    return open(f).read().strip() if os.path.isfile(f) else ""


class Patcher:
    """The parts of comfy.model_patcher.ModelPatcher that the sampling path uses (no weight patching)."""

    def __init__(self, model):
        self.model = model
        self.model_options = {"transformer_options": {}}
        self.object_patches = {}
        self.load_device = self.offload_device = torch.device("cpu")
        self.hook_mode = None
        self.wrappers, self.callbacks = {}, {}

    def clone(self):
        n = Patcher(self.model)
        n.model_options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.model_options.items()}
        n.object_patches = dict(self.object_patches)
        return n

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def apply_object_patches(self):
        for k, v in self.object_patches.items():
            setattr(self.model, k, v)

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        return getattr(self.model, name)

    def model_dtype(self):
        return self.model.get_dtype()

    def pre_run(self):
        self.model.current_patcher = self

    def cleanup(self):
        self.model.current_patcher = None

    def prepare_state(self, timestep):
        pass

    def apply_hooks(self, hooks=None, transformer_options=None, force_apply=False):
        return {}

    def restore_hook_patches(self):
        pass


class ClipShim:
    """comfy/sd.py CLIP with its tokenize / encode_from_tokens_scheduled / encode_from_tokens / add_hooks_to_dict (ComfyUI's
    code, taken with ast) over FluxTokenizer and FluxClipModel; no model loading, no hooks."""

    def __init__(self, ns, tokenizer, cond_stage_model):
        self.tokenizer, self.cond_stage_model = tokenizer, cond_stage_model
        self.tokenizer_options, self.layer_idx = {}, None
        self.patcher = types.SimpleNamespace(forced_hooks=None)
        self.use_clip_schedule, self.apply_hooks_to_conds = False, None
        self._m = ns.clip_methods

    def load_model(self):
        pass

    def tokenize(self, text, return_word_ids=False, **kw):
        return self._m["CLIP.tokenize"](self, text, return_word_ids, **kw)

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict={}, show_pbar=True):
        return self._m["CLIP.encode_from_tokens_scheduled"](self, tokens, unprojected, add_dict, show_pbar)

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        return self._m["CLIP.encode_from_tokens"](self, tokens, return_pooled, return_dict)

    def add_hooks_to_dict(self, d):
        return self._m["CLIP.add_hooks_to_dict"](self, d)


# ------------------------------------------------------------ text models --

def read_st(path):
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(path).items()}


class RawTokenizer:
    """tokenizers.Tokenizer on a tokenizer.json with the transformers call interface SDTokenizer uses."""

    def __init__(self, path):
        import tokenizers
        self.tok = tokenizers.Tokenizer.from_file(path)

    def __call__(self, text):
        return {"input_ids": self.tok.encode(text).ids}

    def get_vocab(self):
        return self.tok.get_vocab()


def use_clip_tokenizer(ns, tok_dir):
    """Makes ComfyUI's SDTokenizer read tok_dir when given no path (it reads comfy/sd1_tokenizer, the real CLIP
    vocabulary, then)."""
    sd1_clip = ns.comfy.sd1_clip
    orig = getattr(sd1_clip.SDTokenizer.__init__, "_comfy_orig", sd1_clip.SDTokenizer.__init__)

    def init(self, tokenizer_path=None, *a, **k):
        orig(self, tokenizer_path if tokenizer_path is not None else tok_dir, *a, **k)

    init._comfy_orig = orig
    sd1_clip.SDTokenizer.__init__ = init


CLIP_OVERRIDE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "max_position_embeddings", "hidden_act", "layer_norm_eps", "projection_dim")


def clip_overrides(cfg_path, eos):
    """The tiny CLIP's sizes as a ComfyUI config override (model_options["<name>_model_config"])."""
    cfg = json.load(open(cfg_path))
    over = {k: cfg[k] for k in CLIP_OVERRIDE_KEYS if k in cfg}
    over["eos_token_id"] = eos
    return cfg, over


def t5_overrides(t5_dir):
    """The tiny T5's sizes as ComfyUI's t5xxl_model_config override ("gelu_new" is ComfyUI's "gelu_pytorch_tanh")."""
    t5_cfg = json.load(open(os.path.join(t5_dir, "encoder.json")))["config"]
    act = {"gelu_new": "gelu_pytorch_tanh", "gelu_pytorch_tanh": "gelu_pytorch_tanh", "relu": "relu"}[t5_cfg["dense_act_fn"]]
    over = dict(d_ff=t5_cfg["d_ff"], d_kv=t5_cfg["d_kv"], d_model=t5_cfg["d_model"], num_heads=t5_cfg["num_heads"],
                num_layers=t5_cfg["num_layers"], vocab_size=t5_cfg["vocab_size"], is_gated_act=t5_cfg["is_gated_act"],
                dense_act_fn=act, model_type="t5")
    return t5_cfg, over


def pad_token_table(sd, key):
    """Zero-pads a tiny CLIP token table to ComfyUI's fixed 49408 rows; returns the tiny row count."""
    w = sd[key]
    sd[key] = torch.cat([w, torch.zeros(COMFY_VOCAB - w.shape[0], w.shape[1])])
    return int(w.shape[0])


def load_text(ns, pipe_dir, t5_dir):
    comfy = ns.comfy
    flux_te = comfy.text_encoders.flux
    tok_dir = os.path.join(pipe_dir, "tokenizer")
    use_clip_tokenizer(ns, tok_dir)
    tokenizer = flux_te.FluxTokenizer()

    clip_cfg, l_over = clip_overrides(os.path.join(pipe_dir, "text_encoder", "config.json"), tokenizer.clip_l.end_token)
    t5_cfg, t5_over = t5_overrides(t5_dir)
    model_options = {"clip_l_model_config": l_over, "t5xxl_model_config": t5_over}
    clip = flux_te.FluxClipModel(device="cpu", dtype=torch.float32, model_options=model_options)
    # the tiny vocabulary's special tokens (ComfyUI hard-codes CLIP-L's 49406 / 49407 / 49407)
    clip.clip_l.special_tokens = {"start": tokenizer.clip_l.start_token, "end": tokenizer.clip_l.end_token,
                                  "pad": tokenizer.clip_l.pad_token}
    lsd = read_st(os.path.join(pipe_dir, "text_encoder", "model.safetensors"))
    if not any(k.startswith("text_model.") for k in lsd):
        lsd = {"text_model." + k: v for k, v in lsd.items()}
    rows = pad_token_table(lsd, "text_model.embeddings.token_embedding.weight")
    dim = l_over["hidden_size"]
    lsd["text_projection.weight"] = torch.eye(dim)  # unused: Flux takes CLIP-L's unprojected pooled output
    lm, lu = clip.load_sd(lsd)
    t5sd = read_st(os.path.join(t5_dir, "model.safetensors"))
    tm, tu = clip.load_sd(t5sd)
    clip.eval()
    info = dict(clip_l_config_overrides=l_over, t5xxl_config_overrides=t5_over,
                clip_l_special_tokens=clip.clip_l.special_tokens, clip_l_vocab_rows=rows,
                clip_l_load=dict(missing=sorted(lm), unexpected=sorted(lu)), t5_load=dict(missing=sorted(tm), unexpected=sorted(tu)),
                t5_tokenizer="comfy/text_encoders/t5_tokenizer (ComfyUI's)", t5_tokenizer_class=type(tokenizer.t5xxl.tokenizer).__name__,
                clip_tokenizer=tok_dir, clip_tokenizer_class=type(tokenizer.clip_l.tokenizer).__name__,
                clip_l_tokens=dict(start=tokenizer.clip_l.start_token, end=tokenizer.clip_l.end_token, pad=tokenizer.clip_l.pad_token),
                t5xxl_tokens=dict(start=tokenizer.t5xxl.start_token, end=tokenizer.t5xxl.end_token, pad=tokenizer.t5xxl.pad_token,
                                  min_length=tokenizer.t5xxl.min_length, max_length=tokenizer.t5xxl.max_length))
    # position_ids: a buffer older transformers saved; embed_tokens: T5's tied copy of shared.weight
    bad = [k for k in list(lm) + list(lu) + list(tm) + list(tu) if "position_ids" not in k and "embed_tokens" not in k]
    if bad:
        raise RuntimeError(f"text encoder keys not loaded: {bad}")
    return tokenizer, clip, info, clip_cfg, t5_cfg


def check_tokenizer(ns, tokenizer, prompts, pipe_dir):
    """ComfyUI's tokenizers (transformers classes) against the raw tokenizers library on the same files, per weighted
    segment as SDTokenizer tokenizes; swaps T5 to the raw tokenizer if any differ."""
    sd1 = ns.comfy.sd1_clip
    out = {}
    t5_json = os.path.join(ns.dir, "comfy", "text_encoders", "t5_tokenizer", "tokenizer.json")
    pairs = [("t5xxl", tokenizer.t5xxl, t5_json), ("clip_l", tokenizer.clip_l, os.path.join(pipe_dir, "tokenizer", "tokenizer.json"))]
    for name, st, path in pairs:
        if not os.path.isfile(path):
            out[name] = "no tokenizer.json to compare"
            continue
        raw = RawTokenizer(path)
        diffs = []
        for p in prompts:
            for seg, _ in sd1.token_weights(sd1.escape_important(p), 1.0):
                seg = sd1.unescape_important(seg)
                a, b = st.tokenizer(seg)["input_ids"], raw(seg)["input_ids"]
                if list(a) != list(b):
                    diffs.append(dict(segment=seg, transformers=list(a)[:40], tokenizers=list(b)[:40]))
        out[name] = dict(equal=not diffs, differences=diffs[:4])
        if name == "t5xxl" and diffs:
            st.tokenizer = raw
            out[name]["used"] = "raw tokenizers.Tokenizer (transformers differs; transformers 4's T5TokenizerFast ran tokenizer.json)"
    return out


def hf_encoders(pipe_dir, t5_dir, t5_cfg):
    from transformers import CLIPTextModel, T5Config, T5EncoderModel
    try:
        clip = CLIPTextModel.from_pretrained(os.path.join(pipe_dir, "text_encoder"), dtype=torch.float32)
    except TypeError:
        clip = CLIPTextModel.from_pretrained(os.path.join(pipe_dir, "text_encoder"), torch_dtype=torch.float32)
    t5 = T5EncoderModel(T5Config.from_dict(dict(t5_cfg)))
    sd = read_st(os.path.join(t5_dir, "model.safetensors"))
    t5.load_state_dict(sd, strict=False)
    with torch.no_grad():
        t5.encoder.embed_tokens.weight.copy_(t5.shared.weight)
    return clip.float().eval(), t5.float().eval()


def tokens_tensors(tokens):
    l, t = tokens["l"], tokens["t5xxl"]
    return {"clip_ids": torch.tensor([[float(i) for i, _ in w] for w in l]),
            "clip_weights": torch.tensor([[float(x) for _, x in w] for w in l]),
            "t5_ids": torch.tensor([float(i) for i, _ in t[0]]),
            "t5_weights": torch.tensor([float(x) for _, x in t[0]])}


def encode_prompt(clip_shim, text):
    """CLIPTextEncode: tokens = clip.tokenize(text); conditioning = clip.encode_from_tokens_scheduled(tokens)."""
    tokens = clip_shim.tokenize(text)
    conditioning = clip_shim.encode_from_tokens_scheduled(tokens)
    return tokens, conditioning


# ---------------------------------------------------------------- network --

def load_transformer(path, guidance):
    from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
    from gen_flux_fixtures import BASE
    m = FluxTransformer2DModel(guidance_embeds=guidance, **BASE)
    m.load_state_dict(read_st(path), strict=True)
    return m.float().eval(), BASE


def comfy_flux_params(base, guidance):
    heads, hd = base["num_attention_heads"], base["attention_head_dim"]
    return dict(image_model="flux", in_channels=base["in_channels"] // 4, out_channels=base["in_channels"] // 4,
                vec_in_dim=base["pooled_projection_dim"], context_in_dim=base["joint_attention_dim"], hidden_size=heads * hd,
                mlp_ratio=4.0, num_heads=heads, depth=base["num_layers"], depth_single_blocks=base["num_single_layers"],
                axes_dim=list(base["axes_dims_rope"]), theta=10000, patch_size=2, qkv_bias=True, guidance_embed=guidance)


def load_comfy_flux_net(ns, bfl_file, base, guidance):
    """ComfyUI's own comfy.ldm.flux.model.Flux at the tiny size with the BFL-layout weights (for the cross-check)."""
    net = ns.comfy.ldm.flux.model.Flux(dtype=torch.float32, device="cpu", operations=ns.comfy.ops.disable_weight_init,
                                       **comfy_flux_params(base, guidance))
    net.load_state_dict(read_st(bfl_file), strict=True)
    return net.float().eval()


def make_network(ns, transformer, comfy_net=None):
    ComfyFlux = ns.comfy.ldm.flux.model.Flux

    class DiffusersBackedFlux(ComfyFlux):
        """comfy.ldm.flux.model.Flux whose forward / _forward / process_img run as they are and whose forward_orig is
        diffusers' FluxTransformer2DModel (plus, on the first call of a case, ComfyUI's own forward_orig for comparison)."""

        def __init__(self):
            torch.nn.Module.__init__(self)
            self.transformer = transformer
            self.patch_size = 2
            self.dtype = torch.float32
            cfg = transformer.config
            self.params = types.SimpleNamespace(guidance_embed=bool(cfg.guidance_embeds), vec_in_dim=cfg.pooled_projection_dim,
                                                patch_size=2)
            self.comfy_net = comfy_net
            self.reset()

        def reset(self):
            self.calls, self.checks, self.compare_next = [], [], True

        def forward_orig(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, control=None, transformer_options={},
                         attn_mask=None):
            if attn_mask is not None or control is not None:
                raise RuntimeError("attention masks / control are not used by these cases")
            if y is None:  # as ComfyUI's forward_orig
                y = torch.zeros((img.shape[0], self.params.vec_in_dim), dtype=img.dtype)
            # ComfyUI embeds guidance only when the model has guidance_in (forward_orig: params.guidance_embed)
            g = guidance if self.params.guidance_embed else None
            if not all(torch.equal(img_ids[0], r) for r in img_ids) or not torch.equal(txt_ids, torch.zeros_like(txt_ids)):
                raise RuntimeError("img_ids differ across the batch or txt_ids are not zero")
            out = self.transformer(hidden_states=img, encoder_hidden_states=txt, pooled_projections=y[:, :self.params.vec_in_dim],
                                   timestep=timesteps, img_ids=img_ids[0], txt_ids=txt_ids[0], guidance=g, return_dict=False)[0]
            self.calls.append(dict(batch=int(img.shape[0]), txt_len=int(txt.shape[1]), img_tokens=int(img.shape[1]),
                                   timestep=[float(v) for v in timesteps.flatten()],
                                   guidance=None if g is None else [float(v) for v in g.flatten()],
                                   img_ids=img_ids[0].detach().clone(), out=out.detach().clone()))
            if self.compare_next and self.comfy_net is not None:
                self.compare_next = False
                ref = self.comfy_net.forward_orig(img, img_ids, txt, txt_ids, timesteps, y, guidance, None, transformer_options)
                self.checks.append(dict(call=len(self.calls) - 1, max_abs=float((ref - out).abs().max()),
                                        rel_rms=float((ref - out).pow(2).mean().sqrt() / out.pow(2).mean().sqrt())))
            return out

    return DiffusersBackedFlux()


def build_model(ns, variant, network):
    """supported_models.Flux / FluxSchnell -> get_model -> model_base.Flux (ComfyUI's classes; the UNet is not built:
    unet_config disable_unet_model_creation), with the diffusers-backed network as diffusion_model."""
    cls = ns.SupportedFlux if variant == "dev" else ns.SupportedFluxSchnell
    unet_config = dict(cls.unet_config, in_channels=16, out_channels=16, patch_size=2, disable_unet_model_creation=True)
    model_config = cls(unet_config)
    model = model_config.get_model({}, device="cpu")
    model.diffusion_model = network
    return model, model_config


def load_vae(pipe_dir):
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(pipe_dir, "vae"), torch_dtype=torch.float32, local_files_only=True)
    return vae.float().eval()


# ------------------------------------------------------------------ cases --

def ksample(ns, model, patcher, c, positive, negative, vae, t, meta):
    """The empty latent, comfy.sample.prepare_noise and comfy.sample.sample (-> KSampler) as common_ksampler runs them,
    with a callback recording every step, and the decode; fills t (noise, sigmas, x_start, denoised, latents,
    final_latent, latent_out, image) and meta; returns (final, samples, sigmas, latent, noise)."""
    comfy = ns.comfy
    # latent: EmptySD3LatentImage (width/height multiples of 16) or EmptyLatentImage (multiples of 8, 4 channels)
    # then comfy.sample.fix_empty_latent_channels, as common_ksampler does
    h8, w8 = c["height"] // 8, c["width"] // 8
    if c["width"] % 16 == 0 and c["height"] % 16 == 0:
        latent = torch.zeros([c["batch"], 16, h8, w8])
        meta["latent_node"] = "EmptySD3LatentImage"
    else:
        latent = torch.zeros([c["batch"], 4, h8, w8])
        meta["latent_node"] = "EmptyLatentImage + fix_empty_latent_channels"
    latent = comfy.sample.fix_empty_latent_channels(patcher, latent)
    noise = comfy.sample.prepare_noise(latent, c["seed"])
    t["noise"] = noise

    seen = []

    def callback(step, x0, x, total_steps):
        seen.append((int(step), x.detach().clone(), x0.detach().clone()))

    final_box = []
    orig_out = model.process_latent_out

    def process_latent_out(z):  # records the sampler's result (sampler space) on its way out of inner_sample
        final_box.append(z.detach().clone())
        return orig_out(z)

    model.process_latent_out = process_latent_out
    ks_sigmas = comfy.samplers.KSampler(patcher, steps=c["steps"], device="cpu", sampler=c["sampler"],
                                        scheduler=c["scheduler"], denoise=1.0).sigmas.clone()
    samples = comfy.sample.sample(patcher, noise, c["steps"], c["cfg"], c["sampler"], c["scheduler"], positive, negative,
                                  latent, denoise=1.0, callback=callback, disable_pbar=True, seed=c["seed"])
    final = final_box[-1]
    n = len(ks_sigmas) - 1
    if [s[0] for s in seen] != list(range(n)):
        raise RuntimeError(f"callback steps {[s[0] for s in seen]}, want 0..{n - 1}")
    cb_x = [s[1] for s in seen]
    t["sigmas"] = ks_sigmas
    # the callback's x (before each step) is x_start, latents[0], ..., latents[-2]; x_start is CONST.noise_scaling
    # of the noise at sigmas[0] (sigma * noise + (1 - sigma) * 0: noise times 0.99999994 where ComfyUI's first sigma
    # is that float32 value rather than 1)
    t["x_start"] = cb_x[0]
    t["denoised"] = torch.stack([s[2] for s in seen])
    t["latents"] = torch.stack(cb_x[1:] + [final])
    t["final_latent"] = final
    t["latent_out"] = samples  # ComfyUI's LATENT: process_latent_out(final) = final / scale + shift
    with torch.no_grad():
        dec = vae.decode(samples).sample.float()
    t["image"] = torch.clamp((dec + 1.0) / 2.0, min=0.0, max=1.0).movedim(1, -1)
    fmt = model.latent_format
    checks = meta.setdefault("checks", {})
    checks["noise_is_randn_of_seed"] = bool(torch.equal(noise, torch.randn(noise.shape, generator=torch.manual_seed(c["seed"]))))
    checks["latent_out_is_final_over_scale_plus_shift"] = bool(torch.allclose(
        samples, final / fmt.scale_factor + fmt.shift_factor, rtol=0, atol=1e-6))
    meta["sigmas"] = [float(s) for s in ks_sigmas]
    meta["latent_shape"] = list(latent.shape)
    return final, samples, ks_sigmas, latent, noise


def run_case(ns, c, clip_shim, nets, vae, hf):
    name, variant = c["name"], c["variant"]
    network = nets[variant]
    network.reset()
    model, model_config = build_model(ns, variant, network)
    patcher = Patcher(model)
    model.current_patcher = patcher
    meta = dict(name=name, variant=variant, request={k: v for k, v in c.items() if k not in ("name", "comfy_node")})
    meta["model_type"] = model.model_type.name
    meta["sampling_settings"] = dict(model_config.sampling_settings)

    # text: CLIPTextEncode (+ FluxGuidance on the positive)
    t = {}
    tokens, positive = encode_prompt(clip_shim, c["prompt"])
    if c["guidance"] is not None:
        positive = ns.flux_guidance(positive, c["guidance"])
    ntokens, negative = encode_prompt(clip_shim, c["negative"])
    for k, v in tokens_tensors(tokens).items():
        t[k] = v
    t["cond"], t["pooled"] = positive[0][0], positive[0][1]["pooled_output"]
    meta["t5_len"], meta["clip_windows"] = int(t["t5_ids"].numel()), len(tokens["l"])
    if c["prompt"] == LONG_PROMPT and (meta["t5_len"] <= 256 or meta["clip_windows"] < 2):
        raise RuntimeError(f"the long prompt gives {meta['t5_len']} T5 tokens and {meta['clip_windows']} CLIP windows")
    meta["positive_keys"] = sorted(positive[0][1])
    meta["negative_t5_len"] = len(ntokens["t5xxl"][0])
    if c["cfg"] != 1.0:
        for k, v in tokens_tensors(ntokens).items():
            t["negative_" + k] = v
        t["negative_cond"], t["negative_pooled"] = negative[0][0], negative[0][1]["pooled_output"]
    if hf is not None:  # transformers' encoders on the same ids (unweighted) vs ComfyUI's raw encoder outputs
        hclip, ht5 = hf
        ids = [i for i, _ in tokens["t5xxl"][0]]
        mine = clip_shim.cond_stage_model.t5xxl.encode([ids])[0]
        ref = ht5(input_ids=torch.tensor([ids])).last_hidden_state
        lids = [i for i, _ in tokens["l"][0]]
        lp = clip_shim.cond_stage_model.clip_l.encode([lids])[1]
        hp = hclip(input_ids=torch.tensor([lids])).pooler_output
        meta.setdefault("checks", {})["hf_encoders"] = dict(t5_max_abs=float((mine - ref).abs().max()),
                                                            t5_rms=float(ref.pow(2).mean().sqrt()),
                                                            clip_pooled_max_abs=float((lp - hp).abs().max()),
                                                            clip_pooled_rms=float(hp.pow(2).mean().sqrt()))

    # model sampling: the ModelSamplingFlux node, or the model's own
    if c["comfy_node"]:
        (patcher,) = ns.ModelSamplingFluxNode().patch(patcher, MAX_SHIFT, BASE_SHIFT, c["width"], c["height"])
        meta["comfy_graph"] = dict(ModelSamplingFlux=dict(max_shift=MAX_SHIFT, base_shift=BASE_SHIFT, width=c["width"],
                                                          height=c["height"]))
    else:
        meta["comfy_graph"] = dict(ModelSamplingFlux=None)
    ms = patcher.get_model_object("model_sampling")
    if c["shift_override"] is not None and abs(float(ms.shift) - c["shift_override"]) > 1e-9:
        raise RuntimeError(f"ComfyUI's shift {ms.shift} is not the override {c['shift_override']}")
    meta["model_sampling"] = [b.__name__ for b in type(ms).__bases__]
    meta["shift"] = float(ms.shift)  # ModelSamplingFlux: the mu of flux_time_shift; ModelSamplingDiscreteFlow: alpha
    meta["multiplier"] = float(ms.multiplier) if hasattr(ms, "multiplier") else None
    meta["comfy_graph"]["FluxGuidance"] = c["guidance"]

    final = ksample(ns, model, patcher, c, positive, negative, vae, t, meta)[0]
    h8, w8 = c["height"] // 8, c["width"] // 8
    calls = network.calls
    t["model_timesteps"] = torch.tensor([cl["timestep"][0] for cl in calls])
    t["velocity_call0"] = calls[0]["out"]  # packed [B, tokens, 64] of the first network call (the cond batch)
    t["img_ids"] = calls[0]["img_ids"]
    hp, wp = (h8 + 1) // 2, (w8 + 1) // 2
    ids = torch.zeros(hp, wp, 3)
    ids[..., 1] = torch.arange(hp, dtype=torch.float32)[:, None]
    ids[..., 2] = torch.arange(wp, dtype=torch.float32)[None, :]
    checks = meta.setdefault("checks", {})
    checks["img_ids_0_row_col"] = bool(torch.equal(calls[0]["img_ids"], ids.reshape(-1, 3)))
    if network.checks:
        checks["comfy_network_vs_diffusers"] = network.checks
    meta["model_calls"] = [dict(batch=cl["batch"], txt_len=cl["txt_len"], img_tokens=cl["img_tokens"],
                                timestep=cl["timestep"][0], guidance=cl["guidance"][0] if cl["guidance"] else None) for cl in calls]
    meta["n_model_calls"] = len(calls)
    img = t["image"]
    meta["stats"] = dict(pixel_std=float(img.std()), pixel_mean=float(img.mean()),
                         clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                         final_latent_std=float(final.std()), final_latent_rms=float(final.pow(2).mean().sqrt()))
    meta["tensors"] = {k: list(v.shape) for k, v in t.items()}
    return {f"{name}/{k}": f32(v) for k, v in t.items()}, meta


def setup():
    """No gradients, float32 matmuls without TF32; returns (and logs) the versions of the libraries used."""
    torch.set_grad_enabled(False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    versions = dict(torch=torch.__version__, python=sys.version.split()[0])
    for mod in ("transformers", "tokenizers", "safetensors", "diffusers", "numpy", "scipy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    log(f"versions: {versions}")
    return versions


def run_all(cases, run, describe):
    """run(c) -> (tensors, meta) for every case, keeping the others when one fails (a flat image fails too);
    logs describe(meta) for each; returns (tensors, manifest, failed)."""
    tensors, manifest, failed = {}, [], []
    for c in cases:
        try:
            out, meta = run(c)
        except Exception as e:  # keep the other cases
            failed.append(c["name"])
            log(f"{c['name']}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=14)
            continue
        if meta["stats"]["pixel_std"] <= 0.05:
            failed.append(c["name"] + " (flat image)")
        tensors.update(out)
        manifest.append(meta)
        log(f"{c['name']}: ok {describe(meta)}")
    return tensors, manifest, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", required=True, help="folder holding ComfyUI's files (comfy/, comfy_extras/, node_helpers.py)")
    ap.add_argument("--flux-tiny", required=True, help="folder with dev.safetensors and schnell.safetensors (diffusers keys)")
    ap.add_argument("--t5-tiny", required=True, help="folder with model.safetensors and encoder.json")
    ap.add_argument("--pipe", required=True, help="flux-pipe/dev: text_encoder/, tokenizer/, vae/")
    ap.add_argument("--bfl", default="", help="flux-pipe/bfl with flux1-dev/flux1-schnell.safetensors (optional cross-check)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    versions = setup()

    ns = load_comfy(args.comfy)
    commit = comfy_commit(args.comfy)
    tokenizer, clip_model, text_info, clip_cfg, t5_cfg = load_text(ns, args.pipe, args.t5_tiny)
    log(f"text: {json.dumps(text_info)}")
    clip_shim = ClipShim(ns, tokenizer, clip_model)
    cases = [c for c in CASES if not args.only or c["name"] in args.only.split(",")]
    tok_checks = check_tokenizer(ns, tokenizer, sorted({c["prompt"] for c in CASES} | {c["negative"] for c in CASES}), args.pipe)
    log(f"tokenizer checks: {json.dumps(tok_checks)[:600]}")
    hf = None
    try:
        hf = hf_encoders(args.pipe, args.t5_tiny, t5_cfg)
    except Exception as e:  # noqa: BLE001 - a cross-check only
        log(f"transformers encoders unavailable for the cross-check: {type(e).__name__}: {e}")

    nets, base = {}, None
    for variant, guidance in (("dev", True), ("schnell", False)):
        tr, base = load_transformer(os.path.join(args.flux_tiny, f"{variant}.safetensors"), guidance)
        cn = None
        bfl = os.path.join(args.bfl, f"flux1-{variant}.safetensors") if args.bfl else ""
        if bfl and os.path.isfile(bfl):
            try:
                cn = load_comfy_flux_net(ns, bfl, base, guidance)
            except Exception as e:  # noqa: BLE001 - a cross-check only
                log(f"ComfyUI Flux network for {variant} unavailable: {type(e).__name__}: {e}")
                traceback.print_exc(limit=4)
        nets[variant] = make_network(ns, tr, cn)
    vae = load_vae(args.pipe)

    tensors, manifest, failed = run_all(
        cases, lambda c: run_case(ns, c, clip_shim, nets, vae, hf),
        lambda meta: f"{meta['model_type']} shift={meta['shift']:.6f} calls={meta['n_model_calls']} "
                     f"t5={meta['t5_len']} clip_windows={meta['clip_windows']} sigmas={[round(s, 6) for s in meta['sigmas']]} "
                     f"pixel_std={meta['stats']['pixel_std']:.4f} checks={json.dumps(meta['checks'])[:400]}")

    log("\ncase                            model   shift     steps calls pixel_std  sigmas")
    for m in manifest:
        log(f"{m['name']:<32}{m['variant']:<8}{m['shift']:<10.6f}{m['request']['steps']:<6}{m['n_model_calls']:<6}"
            f"{m['stats']['pixel_std']:<11.4f}{[round(s, 5) for s in m['sigmas']]}")

    # cross-checks that did not hold (they do not change the fixture; reported, and in cases.json)
    suspicious = []
    for m in manifest:
        ch = m["checks"]
        suspicious += [f"{m['name']}: {k}" for k, v in ch.items() if v is False]
        for r in ch.get("comfy_network_vs_diffusers", []):
            if not r["rel_rms"] < 1e-4:
                suspicious.append(f"{m['name']}: ComfyUI's Flux network vs diffusers rel_rms {r['rel_rms']:.3g}")
        e = ch.get("hf_encoders")
        if e and not (e["t5_max_abs"] < 1e-4 * max(1.0, e["t5_rms"]) and e["clip_pooled_max_abs"] < 1e-4 * max(1.0, e["clip_pooled_rms"])):
            suspicious.append(f"{m['name']}: transformers encoders vs ComfyUI's {e}")
    for k, v in tok_checks.items():
        if isinstance(v, dict) and not v["equal"]:
            suspicious.append(f"tokenizer {k}: transformers vs tokenizers differ")
    log(f"cross-checks not holding: {suspicious if suspicious else 'none'}")

    from safetensors.torch import save_file
    save_file(tensors, os.path.join(args.out, "cases.safetensors"))
    doc = dict(comfyui_commit=commit, versions=versions, text=text_info, tokenizer_checks=tok_checks,
               flux_tiny_base=base, comfy_flux_params=comfy_flux_params(base, True) if base else None,
               vae_config=dict(vae.config), cases=manifest, failed=failed, cross_checks_not_holding=suspicious)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, default=lambda o: o.name if isinstance(o, enum.Enum) else str(o))
    log(f"{len(manifest)} ok, failed: {failed} -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
