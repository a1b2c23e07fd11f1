#!/usr/bin/env python3
"""ComfyUI reference fixtures for darkroom's default (ComfyUI) conventions.

ComfyUI cannot load the tiny SD1 model in testdata/reference/sd1-tiny-a (its
model detection only accepts real SD1 sizes), so this script runs ComfyUI's
OWN sampling code -- schedulers, KSampler's sigma rules, KSAMPLER's noise
scaling, the k-diffusion / UniPC samplers, the cond/uncond batching and CFG
of sampling_function, ModelSamplingDiscrete's timestep and EPS maths, and
prepare_noise -- with the diffusers modules of the tiny model as the
networks. Nothing of ComfyUI is part of this file: its source files are
loaded at run time from --comfy (see tools/reference/README.md for the list
and the copy commands); the few heavy modules they import (torchsde, the
model patcher, model management, ...) are replaced by small stubs that are
never reached on the paths used here.

The networks take ComfyUI's place as follows (model_base.BaseModel and
sd1_clip do the same for a real SD1 checkpoint):
- text: CLIP last hidden state after the final layer norm of the 77 ids
  <start> prompt <end> padded with <end> (49407);
- UNet: eps = unet(x * c_in, t, context) with c_in and t from ComfyUI's
  model_sampling (t = nearest integer timestep in log-sigma), and
  denoised = model_sampling.calculate_denoised(sigma, eps, x);
- VAE: image = clamp((decode(latent / scaling_factor) + 1) / 2, 0, 1), HWC.

Per case it stores (one safetensors file, keys "<case>/<tensor>", plus a
JSON manifest):
- noise: comfy.sample.prepare_noise for the seed (unit noise [1,4,h,w]);
- sigmas: ComfyUI KSampler's sigmas (penultimate-sigma rule included);
- callback_x, denoised [steps,...]: what ComfyUI's sampler callback saw at
  each step (k-diffusion calls it BEFORE the step's update; UniPC after it
  and in its variance-preserving space);
- latents [steps,...]: the latent after each step as darkroom reports it
  (engine.Event.Latent): for the k-diffusion samplers callback_x of the next
  step (for ipndm and deis, whose callback always passes the initial x, the
  model input of the next step), and the final latent for the last; for
  uni_pc/uni_pc_bh2 the
  callback's x brought back to sigma space, x * sqrt(1 + t^2), t being the
  sigma UniPC reached (0.001 stands for a final 0);
- final_latent: what the sampler returned (sampler space, not divided by
  the VAE scaling factor);
- image: the decoded final latent, HWC float32 in 0..1;
- prompt_embeds, negative_embeds: the text conditioning;
- model_sigmas, model_timesteps: sigma and UNet timestep of every model call.

Usage (no network; runs on CPU in float32, deterministic):
    PYTHONPATH=.ref/diffusers_src/src python3 tools/reference/gen_comfy_fixtures.py \
        --model testdata/reference/sd1-tiny-a/diffusers --comfy .ref/comfy --out DIR
It prints one line per case ("ok" with the final latent's RMS, or the
error); a failed case is left out of the outputs.
"""
import argparse
import json
import math
import os
import sys
import traceback
import importlib.machinery
import types
import uuid

import torch

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
SEED, CFG, WIDTH, HEIGHT, STEPS = 1234, 6.0, 64, 64, 6

# (sampler, scheduler, cfg); SDE samplers are left out (they need torchsde's
# Brownian tree, which darkroom replaces with its own documented noise).
CASES = [
    ("euler", "normal", CFG),
    ("euler", "karras", CFG),
    ("euler_ancestral", "normal", CFG),
    ("heun", "karras", CFG),
    ("dpm_2", "karras", CFG),
    ("dpm_2_ancestral", "normal", CFG),
    ("lms", "karras", CFG),
    ("dpmpp_2s_ancestral", "karras", CFG),
    ("dpmpp_2m", "karras", CFG),
    ("dpmpp_2m", "exponential", CFG),
    ("ddim", "ddim_uniform", CFG),
    ("uni_pc", "normal", CFG),
    ("uni_pc_bh2", "karras", CFG),
    ("ipndm", "simple", CFG),
    ("deis", "sgm_uniform", CFG),
    ("lcm", "normal", 1.5),
    ("euler", "beta", CFG),
    ("euler", "kl_optimal", CFG),
    ("euler", "linear_quadratic", CFG),
    ("ddpm", "normal", CFG),
]

UNIPC = ("uni_pc", "uni_pc_bh2")
# Samplers whose callback passes the initial x at every step (they step
# x_cur/x_next and hand the callback the unchanged x); they call the model
# once per step, so the latent after step i is the model input of step i+1.
STALE_CALLBACK_X = ("ipndm", "ipndm_v", "deis")
START, END = 49406, 49407


# ---------------------------------------------------------------- ComfyUI --

def _module(name, **attrs):
    m = types.ModuleType(name)
    # A spec, so importlib.util.find_spec (diffusers probes torchsde) works.
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    return m


def _unavailable(what):
    def f(*args, **kwargs):
        raise RuntimeError(f"{what} is stubbed out in gen_comfy_fixtures.py")
    return f


def _repeat_to_batch_size(t, batch_size, dim=0):
    """Trims or tiles t along dim to batch_size rows (stand-in for comfy.utils')."""
    n = t.shape[dim]
    if n > batch_size:
        return t.narrow(dim, 0, batch_size)
    if n < batch_size:
        reps = [1] * t.ndim
        reps[dim] = -(-batch_size // n)
        return t.repeat(reps).narrow(dim, 0, batch_size)
    return t


def load_comfy(comfy_dir):
    """Imports ComfyUI's sampling modules from comfy_dir with stubs for the rest."""
    comfy_dir = os.path.abspath(comfy_dir)
    if not os.path.isfile(os.path.join(comfy_dir, "comfy", "samplers.py")):
        raise SystemExit(f"{comfy_dir}/comfy/samplers.py not found: copy the ComfyUI files first (tools/reference/README.md)")
    sys.path.insert(0, comfy_dir)
    # Third-party modules ComfyUI's files import at the top but that the paths
    # used here never call.
    sys.modules.setdefault("torchsde", _module("torchsde", BrownianTree=_unavailable("torchsde.BrownianTree")))
    for name in ("PIL", "einops"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = _module(name, Image=_module(name + ".Image"), repeat=_unavailable("einops.repeat"),
                                        rearrange=_unavailable("einops.rearrange"))
    import comfy  # namespace package under comfy_dir
    if os.path.join(comfy_dir, "comfy") not in [os.path.abspath(p) for p in getattr(comfy, "__path__", [])]:
        raise SystemExit(f"imported comfy from {getattr(comfy, '__path__', '?')}, not {comfy_dir}/comfy")

    big = float(1 << 50)
    stubs = {
        "model_management": dict(get_free_memory=lambda *a, **k: big, intermediate_device=lambda: torch.device("cpu"),
                                 cast_to_device=lambda t, device, dtype, *a, **k: t.to(device=device, dtype=dtype)),
        "sampler_helpers": dict(convert_cond=_unavailable("comfy.sampler_helpers.convert_cond")),
        "model_patcher": dict(set_model_options_post_cfg_function=_unavailable("comfy.model_patcher (cfg_pp samplers)"),
                              create_model_options_clone=_unavailable("comfy.model_patcher.create_model_options_clone")),
        "hooks": dict(),
        "context_windows": dict(),
        "utils": dict(repeat_to_batch_size=_repeat_to_batch_size),
    }
    for name, attrs in stubs.items():
        m = _module("comfy." + name, **attrs)
        sys.modules["comfy." + name] = m
        setattr(comfy, name, m)
    # diffusionmodules.util (home of make_beta_schedule) imports comfy.ldm.util,
    # which pulls in PIL fonts and config machinery: stub it.
    import comfy.ldm  # namespace package
    ldm_util = _module("comfy.ldm.util", instantiate_from_config=_unavailable("instantiate_from_config"))
    sys.modules["comfy.ldm.util"] = ldm_util
    comfy.ldm.util = ldm_util

    import comfy.model_sampling
    import comfy.conds
    import comfy.samplers
    import comfy.sample
    import comfy.k_diffusion.sampling
    return comfy


def sd1_model_sampling(comfy):
    """ComfyUI's model_sampling for an SD1 (eps) model: model_base.model_sampling
    builds this class from ModelSamplingDiscrete and EPS with SD1's default
    settings (scaled-linear betas 0.00085..0.012, 1000 steps)."""
    ms_mod = comfy.model_sampling

    class ModelSampling(ms_mod.ModelSamplingDiscrete, ms_mod.EPS):
        pass

    return ModelSampling(None)


class _Patcher:
    """The bits of ModelPatcher that KSampler and calc_cond_batch touch."""

    def __init__(self, model_sampling):
        self.model_sampling = model_sampling
        self.model_options = {}

    def get_model_object(self, name):
        if name != "model_sampling":
            raise KeyError(name)
        return self.model_sampling

    def prepare_state(self, timestep):
        pass

    def apply_hooks(self, hooks=None):
        return {}


class Net:
    """Stands in for ComfyUI's BaseModel around the diffusers UNet (the steps of
    BaseModel._apply_model for an SD1 model without extra conditioning)."""

    def __init__(self, unet, model_sampling):
        self.unet = unet
        self.model_sampling = model_sampling
        self.current_patcher = _Patcher(model_sampling)
        self.calls = []  # (sigma, timestep) of every model call

    def memory_required(self, input_shape, cond_shapes=None):
        return 0

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        ts = self.model_sampling.timestep(t).float()
        self.calls.append((float(sigma.flatten()[0]), float(ts.flatten()[0])))
        eps = self.unet(xc.float(), ts, encoder_hidden_states=c_crossattn.float()).sample.float()
        return self.model_sampling.calculate_denoised(sigma, eps, x)


class Guider:
    """CFGGuider's predict_noise: ComfyUI's sampling_function over the
    positive and negative conds (batched together by calc_cond_batch)."""

    def __init__(self, comfy, net, cond, uncond, cfg, simple_cfg=False):
        self.comfy = comfy
        self.inner_model = net
        self.cfg = cfg
        self.simple_cfg = simple_cfg
        self.emb = (cond, uncond)
        self.inputs = []  # x of every call
        self.positive = [{"model_conds": {"c_crossattn": comfy.conds.CONDCrossAttn(cond)}, "uuid": uuid.uuid4()}]
        self.negative = [{"model_conds": {"c_crossattn": comfy.conds.CONDCrossAttn(uncond)}, "uuid": uuid.uuid4()}]

    def __call__(self, x, timestep, model_options={}, seed=None):
        self.inputs.append(x.detach().clone().float())
        if self.simple_cfg:  # fallback: the same maths without calc_cond_batch
            cond, uncond = self.emb
            rows = torch.cat([x, x])
            out = self.inner_model.apply_model(rows, torch.cat([timestep, timestep]), c_crossattn=torch.cat([uncond, cond]))
            u, c = out.chunk(2)
            return self.comfy.samplers.cfg_function(self.inner_model, c, u, self.cfg, x, timestep, model_options=model_options)
        return self.comfy.samplers.sampling_function(self.inner_model, x, timestep, self.negative, self.positive, self.cfg,
                                                     model_options=model_options, seed=seed)


# ---------------------------------------------------------------- networks --

def _from_pretrained(cls, path, **kw):
    try:
        return cls.from_pretrained(path, dtype=torch.float32, **kw)
    except TypeError:
        return cls.from_pretrained(path, torch_dtype=torch.float32, **kw)


def load_networks(model_dir):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    unet = _from_pretrained(UNet2DConditionModel, os.path.join(model_dir, "unet")).float().eval()
    vae = _from_pretrained(AutoencoderKL, os.path.join(model_dir, "vae")).float().eval()
    text = _from_pretrained(CLIPTextModel, os.path.join(model_dir, "text_encoder")).float().eval()
    tok = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    return unet, vae, text, tok


def encode(text_model, tok, prompt):
    """SD1 conditioning as ComfyUI's SD1 CLIP computes it: layer "last" with the
    final layer norm, 77 ids padded with the end token, no attention mask."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"][:75]
    ids = [START] + ids + [END]
    ids += [END] * (77 - len(ids))
    out = text_model(input_ids=torch.tensor([ids]))
    return out.last_hidden_state.float()


def decode(vae, latent):
    img = vae.decode(latent / vae.config.scaling_factor).sample.float()
    return ((img + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).contiguous()


# -------------------------------------------------------------------- cases --

def run_case(comfy, nets, sampler, scheduler, cfg, steps=STEPS, seed=SEED, width=WIDTH, height=HEIGHT,
             prompt=PROMPT, negative=NEGATIVE, simple_cfg=False):
    unet, vae, text, tok = nets
    samplers = comfy.samplers
    if sampler not in samplers.KSampler.SAMPLERS:
        raise ValueError(f"ComfyUI has no sampler {sampler!r}")
    if scheduler not in samplers.KSampler.SCHEDULERS:
        raise ValueError(f"ComfyUI has no scheduler {scheduler!r}")
    ms = sd1_model_sampling(comfy)
    net = Net(unet, ms)
    cond, uncond = encode(text, tok, prompt), encode(text, tok, negative)

    # comfy.sample.sample: KSampler computes the sigmas (full denoise).
    ks = samplers.KSampler(_Patcher(ms), steps=steps, device="cpu", sampler=sampler, scheduler=scheduler, denoise=1.0)
    sigmas = ks.sigmas
    # sample_unipc overwrites a final 0 with 0.001 in place (it slices, which
    # in torch is a view): keep ComfyUI's schedule as KSampler made it.
    schedule = sigmas.clone().float()
    latent_image = torch.zeros((1, 4, height // 8, width // 8))
    noise = comfy.sample.prepare_noise(latent_image, seed)

    guider = Guider(comfy, net, cond, uncond, cfg, simple_cfg=simple_cfg)
    # CFGGuider.inner_sample's extra_args.
    extra_args = {"model_options": {"transformer_options": {"sample_sigmas": sigmas}}, "seed": seed}
    seen = []

    def callback(i, denoised, x, total):
        seen.append((int(i), x.detach().clone().float(), denoised.detach().clone().float()))

    sampler_obj = samplers.sampler_object(sampler)
    final = sampler_obj.sample(guider, sigmas, extra_args, callback, noise.clone(), latent_image=latent_image,
                               denoise_mask=None, disable_pbar=True).float()

    n = len(sigmas) - 1
    if [s[0] for s in seen] != list(range(n)):
        raise RuntimeError(f"callback steps {[s[0] for s in seen]}, want 0..{n - 1}")
    cb_x = [s[1] for s in seen]
    if sampler in UNIPC:
        ts = schedule.clone()
        if ts[-1] == 0:
            ts[-1] = 0.001
        reached = [ts[i] for i in range(n - 1)] + [ts[n]]
        latents = [x * torch.sqrt(t * t + 1) for x, t in zip(cb_x, reached)]
    elif sampler in STALE_CALLBACK_X:
        if len(guider.inputs) != n:
            raise RuntimeError(f"{len(guider.inputs)} model calls for {n} steps, want one per step")
        latents = guider.inputs[1:] + [final]
    else:
        latents = cb_x[1:] + [final]
    image = decode(vae, final)
    out = {
        "noise": noise,
        "sigmas": schedule,
        "callback_x": torch.stack([x[0] for x in cb_x]),
        "denoised": torch.stack([s[2][0] for s in seen]),
        "latents": torch.stack([x[0] for x in latents]),
        "final_latent": final,
        "image": image,
        "prompt_embeds": cond,
        "negative_embeds": uncond,
        "model_sigmas": torch.tensor([c[0] for c in net.calls], dtype=torch.float32),
        "model_timesteps": torch.tensor([c[1] for c in net.calls], dtype=torch.float32),
    }
    meta = dict(name=f"{sampler}_{scheduler}", sampler=sampler, scheduler=scheduler, steps=steps, cfg=cfg, seed=seed,
                prompt=prompt, negative=negative, width=width, height=height, model="sd1-tiny-a",
                model_calls=len(net.calls), cfg_path="simple" if simple_cfg else "sampling_function")
    return out, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the tiny model's diffusers folder")
    ap.add_argument("--comfy", required=True, help="folder holding ComfyUI's comfy/ files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated case names to run")
    ap.add_argument("--simple-cfg", action="store_true",
                    help="compute CFG with cfg_function on a hand-batched call instead of sampling_function")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    os.makedirs(args.out, exist_ok=True)

    comfy = load_comfy(args.comfy)
    commit = ""
    cf = os.path.join(args.comfy, "COMMIT")
    if os.path.isfile(cf):
        commit = open(cf).read().strip()
    nets = load_networks(args.model)
    only = {s for s in args.only.split(",") if s}

    tensors, manifest, failed = {}, [], 0
    for sampler, scheduler, cfg in CASES:
        name = f"{sampler}_{scheduler}"
        if only and name not in only:
            continue
        try:
            out, meta = run_case(comfy, nets, sampler, scheduler, cfg, simple_cfg=args.simple_cfg)
        except Exception as e:  # keep the other cases
            failed += 1
            print(f"{name}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=4)
            continue
        meta["comfyui_commit"] = commit
        for k, v in out.items():
            tensors[f"{name}/{k}"] = v.detach().cpu().float().contiguous()
        manifest.append(meta)
        fin = out["final_latent"]
        print(f"{name}: ok steps={len(out['sigmas']) - 1} calls={meta['model_calls']} "
              f"sigmas={[round(float(s), 4) for s in out['sigmas']]} final_rms={float(fin.pow(2).mean().sqrt()):.5f}")

    from safetensors.torch import save_file
    save_file(tensors, os.path.join(args.out, "comfy_cases.safetensors"))
    with open(os.path.join(args.out, "comfy_cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest)} ok, {failed} failed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
