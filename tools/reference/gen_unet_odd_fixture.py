#!/usr/bin/env python3
"""UNet outputs at latent sizes that are not multiples of 2^(levels-1).

diffusers' UNet2DConditionModel resizes in the up path to the skip
connections' sizes (nearest interpolation), as ComfyUI does. This runs the
tiny model's UNet (float32, CPU) on fixed inputs at odd latent sizes and
stores inputs and outputs: DIR/unet_odd.safetensors with keys
"<h>x<w>/x", "<h>x<w>/ctx", "<h>x<w>/t", "<h>x<w>/out".

Usage: PYTHONPATH=<diffusers>/src python3 tools/reference/gen_unet_odd_fixture.py \\
           --model testdata/reference/sd1-tiny-a/diffusers --out DIR
"""
import argparse
import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.model, "unet")).float().eval()
    g = torch.Generator("cpu").manual_seed(3)
    out = {}
    for h, w in [(9, 7), (5, 5), (3, 11), (1, 1)]:
        x = torch.randn((2, 4, h, w), generator=g)
        ctx = torch.randn((2, 77, 64), generator=g)
        t = torch.tensor([500.0, 37.5])
        with torch.no_grad():
            y = unet(x, t, encoder_hidden_states=ctx).sample
        k = f"{h}x{w}"
        out[k + "/x"], out[k + "/ctx"], out[k + "/t"], out[k + "/out"] = x, ctx, t, y.contiguous()
        print(k, tuple(y.shape), float(y.pow(2).mean().sqrt()))
    save_file(out, os.path.join(args.out, "unet_odd.safetensors"))


if __name__ == "__main__":
    main()
