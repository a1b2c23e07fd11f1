#!/usr/bin/env python3
"""Fixtures for engine/models/wanvae from diffusers' AutoencoderKLQwenImage.

A tiny random Qwen-Image VAE (the Wan 2.1 video VAE: causal 3-D
convolutions, RMS norms over channels, a single-head attention in each
middle block), in float32 on the CPU: base_dim 8, dim_mult [1, 2, 4, 4]
(four levels, factor 8, as the real model), num_res_blocks 1, z_dim 16,
temperal_downsample [False, True, True] and attn_scales [] as the real
config, the real latents_mean/latents_std. Weights are random (RMS gammas
around 1, small biases) and rounded to float16 so that the saved F16 file
is exactly the model that ran; the decoder's conv_out is scaled so that
few decoded values reach diffusers' clamp to [-1, 1] (the report gives the
fraction).

Cases, each an image batch of two (one frame, as the pipelines call the
VAE: a [B, C, 1, H, W] video):

* decode: sampler latents x [2, 16, 6, 5] (unit normals); the pipeline's
  z = x / (1/latents_std) + latents_mean; vae.decode(z)[:, :, 0] → image
  [2, 3, 48, 40] (clamped to [-1, 1] by decode itself).
* encode: images [2, 3, 48, 40] in [-1, 1]; vae.encode(img).latent_dist:
  the moments (quant_conv output: mean then log-variance, unclamped), the
  mean (= mode()), and the pipeline's normalised
  (mean − latents_mean) · (1/latents_std).

Output (DIR): vae.safetensors (F16 weights, diffusers' state-dict names),
cases.safetensors (float32, 4-D, frame axis dropped), qwenimage-vae.json
(config, versions, report).

Usage (no network; a diffusers checkout's src on PYTHONPATH):
    PYTHONPATH=<diffusers>/src python3 tools/reference/gen_wanvae_fixtures.py --out DIR
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKLQwenImage

CONFIG = dict(
    base_dim=8,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    input_channels=3,
)


def calibrate(model, seed):
    """Random weights that keep every part in play, rounded to F16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in ** 0.5))
            p.copy_(p.half().float())


def pipeline_stats(vae, dtype=torch.float32):
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(dtype)
    return mean, inv_std


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--diffusers-commit", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    vae = AutoencoderKLQwenImage(**CONFIG).float().eval()
    calibrate(vae, 1234)
    mean, inv_std = pipeline_stats(vae)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 6, 5, generator=g)
    z = x[:, :, None] / inv_std + mean  # the pipeline's de-normalisation

    # Scale the decoder's conv_out (and re-round) so that the clamp rarely bites.
    pre = {}
    hook = vae.decoder.conv_out.register_forward_hook(lambda m, i, o: pre.__setitem__("out", o.detach().clone()))
    with torch.no_grad():
        vae.decode(z, return_dict=False)
        s = float(pre["out"].std())
        f = 0.4 / max(s, 1e-6)
        vae.decoder.conv_out.weight.mul_(f)
        vae.decoder.conv_out.weight.copy_(vae.decoder.conv_out.weight.half().float())
        vae.decoder.conv_out.bias.mul_(f)
        vae.decoder.conv_out.bias.copy_(vae.decoder.conv_out.bias.half().float())
        image = vae.decode(z, return_dict=False)[0]
    hook.remove()
    raw = pre["out"]
    clamped = float((raw.abs() > 1).float().mean())
    assert image.shape == (2, 3, 1, 48, 40), image.shape

    gi = torch.Generator().manual_seed(11)
    # A smooth field plus fine noise, in [-1, 1].
    coarse = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 5, generator=gi) * 2 - 1, size=(48, 40), mode="bilinear", align_corners=False)
    img = (0.7 * coarse + 0.3 * (torch.rand(2, 3, 48, 40, generator=gi) * 2 - 1)).clamp(-1, 1)
    with torch.no_grad():
        dist = vae.encode(img[:, :, None]).latent_dist
    moments = dist.parameters
    enc_mean = dist.mean
    assert torch.equal(dist.mode(), enc_mean)
    enc_latents = (enc_mean - mean) * inv_std  # the img2img pipeline's normalisation

    weights = {k: v.detach().half().contiguous() for k, v in vae.state_dict().items()}
    save_file(weights, os.path.join(args.out, "vae.safetensors"))
    cases = {
        "dec_latents": x,
        "dec_z": z[:, :, 0],
        "dec_image": image[:, :, 0],
        "dec_preclamp": raw[:, :, 0],
        "enc_image": img,
        "enc_moments": moments[:, :, 0],
        "enc_mean": enc_mean[:, :, 0],
        "enc_latents": enc_latents[:, :, 0],
    }
    save_file({k: v.float().contiguous() for k, v in cases.items()}, os.path.join(args.out, "cases.safetensors"))
    report = {
        "config": CONFIG,
        "latents_mean": list(vae.config.latents_mean),
        "latents_std": list(vae.config.latents_std),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "diffusers_commit": args.diffusers_commit,
        "parameters": sum(p.numel() for p in vae.parameters()),
        "conv_out_scale": f,
        "decoded_fraction_clamped": clamped,
        "decoded_std": float(image.std()),
        "enc_mean_std": float(enc_mean.std()),
        "shapes": {k: list(v.shape) for k, v in cases.items()},
    }
    with open(os.path.join(args.out, "qwenimage-vae.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
