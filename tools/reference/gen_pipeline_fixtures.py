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

import torch
from safetensors.torch import save_file

from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       KDPM2DiscreteScheduler, LMSDiscreteScheduler, UNet2DConditionModel,
                       UniPCMultistepScheduler)
from transformers import CLIPTextModel, CLIPTokenizer

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

# name, scheduler factory, darkroom sampler, darkroom scheduler (informative), steps, space
CASES = [
    ("euler_normal", lambda: EulerDiscreteScheduler(**SD1, timestep_spacing="linspace"), "euler", "normal", 10, "ve"),
    ("euler_exponential", lambda: EulerDiscreteScheduler(**SD1, timestep_spacing="linspace", use_exponential_sigmas=True), "euler", "exponential", 8, "ve"),
    ("heun_karras", lambda: HeunDiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "heun", "karras", 6, "ve"),
    ("dpm2_karras", lambda: KDPM2DiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "dpm_2", "karras", 6, "ve"),
    ("lms_karras", lambda: LMSDiscreteScheduler(**SD1, timestep_spacing="linspace", use_karras_sigmas=True), "lms", "karras", 8, "ve"),
    ("ddim_uniform", lambda: DDIMScheduler(**SD1, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False), "ddim", "ddim_uniform", 8, "vp"),
    # (diffusers' UniPC with solver_type="bh1" returned NaN latents on this
    # model in diffusers 0.40.0.dev0; bh1 is checked against ComfyUI's own
    # code in gen_comfy_fixtures.py instead.)
    ("unipc_bh2", lambda: UniPCMultistepScheduler(**SD1, solver_type="bh2", timestep_spacing="linspace"), "uni_pc_bh2", "normal", 8, "vp"),
]

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"


def train_sigmas():
    betas = torch.linspace(SD1["beta_start"] ** 0.5, SD1["beta_end"] ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    return acp, ((1 - acp) / acp) ** 0.5


class Pipe:
    """The text-to-image loop of diffusers' StableDiffusionPipeline, written
    out (only the models and schedulers of diffusers are needed)."""

    def __init__(self, path, device):
        self.device = device
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"))
        self.text_encoder = CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder")).to(device).float().eval()
        self.unet = UNet2DConditionModel.from_pretrained(os.path.join(path, "unet")).to(device).float().eval()
        self.vae = AutoencoderKL.from_pretrained(os.path.join(path, "vae")).to(device).float().eval()
        self.scheduler = None

    @torch.no_grad()
    def encode_prompt(self, text, clip_skip=None):
        ids = self.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = self.text_encoder(ids.to(self.device), output_hidden_states=clip_skip is not None)
        if clip_skip is None:
            return out.last_hidden_state
        h = out.hidden_states[-(clip_skip + 1)]
        # transformers 5 flattened CLIPTextModel (no .text_model submodule).
        tm = getattr(self.text_encoder, "text_model", self.text_encoder)
        return tm.final_layer_norm(h)

    @torch.no_grad()
    def __call__(self, prompt, negative_prompt, num_inference_steps, guidance_scale, latents, callback):
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=self.device)
        ctx = torch.cat([self.encode_prompt(negative_prompt), self.encode_prompt(prompt)])
        latents = latents * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([latents] * 2), t)
            eps = self.unet(inp, t, encoder_hidden_states=ctx).sample
            eu, ec = eps.chunk(2)
            eps = eu + guidance_scale * (ec - eu)
            latents = sched.step(eps, t, latents).prev_sample
            callback(latents)
        img = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        img = (img / 2 + 0.5).clamp(0, 1)
        return latents, img[0].permute(1, 2, 0).contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    pipe = Pipe(args.model, args.device)
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

        def grab(x):
            lat.append(x.detach().cpu().float().clone())

        pipe.scheduler = make()
        final_latent, image = pipe(PROMPT, NEGATIVE, steps, cfg, noise.to(args.device), grab)
        final_latent = final_latent.detach().cpu().float().clone()
        image = image.detach().cpu().float()
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
    # Clip skip: diffusers' clip_skip=1 is the penultimate layer with the final
    # layer norm applied, darkroom's --clip-skip 2 (A1111's "Clip skip: 2").
    with torch.no_grad():
        emb = pipe.encode_prompt(PROMPT, clip_skip=1)
        tensors["clip_skip_2/prompt_embeds"] = emb.detach().cpu().float().contiguous()
        # VAE encoder: the mean of the latent distribution, scaled, for a
        # deterministic input image in [-1, 1].
        g = torch.Generator("cpu").manual_seed(7)
        img = (torch.rand((1, 3, 64, 96), generator=g) * 2 - 1)
        img = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1)  # some spatial structure
        mean = pipe.vae.encode(img.to(args.device)).latent_dist.mean * pipe.vae.config.scaling_factor
        tensors["vae_encode/image"] = img.contiguous()
        tensors["vae_encode/latent"] = mean.detach().cpu().float().contiguous()
    manifest.append(dict(name="clip_skip_2", prompt=PROMPT, clip_skip_diffusers=1))
    manifest.append(dict(name="vae_encode", scaling_factor=pipe.vae.config.scaling_factor))
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()},
              os.path.join(args.out, "extra_cases.safetensors"))
    with open(os.path.join(args.out, "extra_cases.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=str)


if __name__ == "__main__":
    main()
