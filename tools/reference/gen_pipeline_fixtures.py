#!/usr/bin/env python3
"""End-to-end reference fixtures for darkroom, made with diffusers.

Runs diffusers' StableDiffusionPipeline on the tiny SD1 model in
testdata/reference/sd1-tiny-a (float32, CPU or CUDA with TF32 off) with
several schedulers, and stores for each case: the unit noise, the initial
scale diffusers applied to it, the sigmas and timesteps it visited, the
latent after every scheduler call, the final latent and the image (HWC in
0..1, before 8-bit rounding). Everything goes into one safetensors file
(keys "<case>/<tensor>") plus a JSON manifest, so it can be copied back as
two files.

Usage (no network; diffusers' src/ on PYTHONPATH):
    PYTHONPATH=.ref/diffusers_src python3 tools/reference/gen_pipeline_fixtures.py \
        --model testdata/reference/sd1-tiny-a/diffusers --out OUTDIR

Conventions the Go test relies on (engine/extra_fixtures_test.go):
- "space": "ve" when diffusers' latents are k-diffusion's x (Euler-family
  schedulers), "vp" when they are x_t = x / sqrt(1 + sigma^2) (DDIM, UniPC).
- "sigmas" are the noise levels as k-diffusion sigmas (sqrt((1-a)/a)), the
  last one being where the final latent sits (0, or sigma_min for DDIM with
  set_alpha_to_one=False).
"""
import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import (DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       KDPM2DiscreteScheduler, LMSDiscreteScheduler, StableDiffusionPipeline,
                       UniPCMultistepScheduler)

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

# name, scheduler factory, darkroom sampler, darkroom scheduler (informative), steps, space
CASES = [
    ("euler_normal", lambda: EulerDiscreteScheduler(**SD1, timestep_spacing="linspace"), "euler", "normal", 10, "ve"),
    ("euler_exponential", lambda: EulerDiscreteScheduler(**SD1, timestep_spacing="linspace", use_exponential_sigmas=True), "euler", "exponential", 8, "ve"),
    ("heun_karras", lambda: HeunDiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "heun", "karras", 6, "ve"),
    ("dpm2_karras", lambda: KDPM2DiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "dpm_2", "karras", 6, "ve"),
    ("lms_karras", lambda: LMSDiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "lms", "karras", 8, "ve"),
    ("ddim_uniform", lambda: DDIMScheduler(**SD1, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False), "ddim", "ddim_uniform", 8, "vp"),
    ("unipc_bh1", lambda: UniPCMultistepScheduler(**SD1, solver_type="bh1", timestep_spacing="linspace"), "uni_pc", "normal", 8, "vp"),
    ("unipc_bh2", lambda: UniPCMultistepScheduler(**SD1, solver_type="bh2", timestep_spacing="linspace"), "uni_pc_bh2", "normal", 8, "vp"),
]

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"


def train_sigmas():
    betas = torch.linspace(SD1["beta_start"] ** 0.5, SD1["beta_end"] ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    return acp, ((1 - acp) / acp) ** 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    acp, train_sig = train_sigmas()
    tensors, manifest = {}, []
    for name, make, sampler, scheduler, steps, space in CASES:
        pipe.scheduler = make()
        seed, cfg, w, h = 1234, 6.0, 64, 64
        noise = torch.randn((1, 4, h // 8, w // 8), generator=torch.Generator("cpu").manual_seed(seed))
        pipe.scheduler.set_timesteps(steps)
        init_scale = float(pipe.scheduler.init_noise_sigma)
        if hasattr(pipe.scheduler, "sigmas") and space == "ve":
            sig = pipe.scheduler.sigmas.detach().cpu().float()
        else:
            ts = pipe.scheduler.timesteps.detach().cpu().long()
            sig = train_sig[ts]
            if isinstance(pipe.scheduler, DDIMScheduler):
                final = train_sig[0] if not pipe.scheduler.config.set_alpha_to_one else torch.tensor(0.0)
            else:
                final = torch.tensor(0.0)
            sig = torch.cat([sig, final.reshape(1)])
        lat = []

        def grab(p, i, t, kw):
            lat.append(kw["latents"].detach().cpu().float().clone())
            return kw

        out = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=cfg, width=w, height=h,
                   latents=noise.to(args.device), output_type="np", callback_on_step_end=grab,
                   callback_on_step_end_tensor_inputs=["latents"])
        final_latent = lat[-1]
        image = torch.from_numpy(np.asarray(out.images[0], dtype=np.float32))
        tensors[f"{name}/noise"] = noise.contiguous()
        tensors[f"{name}/sigmas"] = sig.contiguous()
        tensors[f"{name}/timesteps"] = pipe.scheduler.timesteps.detach().cpu().float().contiguous()
        tensors[f"{name}/latents"] = torch.stack([l[0] for l in lat]).contiguous()
        tensors[f"{name}/final_latent"] = final_latent.contiguous()
        tensors[f"{name}/image"] = image.contiguous()
        manifest.append(dict(name=name, sampler=sampler, scheduler=scheduler, steps=steps, space=space, seed=seed,
                             cfg=cfg, width=w, height=h, prompt=PROMPT, negative=NEGATIVE, init_scale=init_scale,
                             scheduler_class=type(pipe.scheduler).__name__, calls=len(lat),
                             scheduler_config=dict(pipe.scheduler.config)))
        print(f"{name}: {type(pipe.scheduler).__name__} steps={steps} calls={len(lat)} init_scale={init_scale:.4f} "
              f"sigmas={[round(float(s), 4) for s in sig[:4]]}... final_rms={float(final_latent.pow(2).mean().sqrt()):.4f}")
    save_file(tensors, os.path.join(args.out, "extra_cases.safetensors"))
    with open(os.path.join(args.out, "extra_cases.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=str)


if __name__ == "__main__":
    main()
