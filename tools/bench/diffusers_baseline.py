#!/usr/bin/env python3
"""Time diffusers (PyTorch eager, SDPA) on the configurations of
`darkroom bench`: the SD1.5 UNet step at 512x512, batch 2 (CFG), and the
SD1.x VAE decoder at 512 and 1024, with random weights, fp16 and fp32.

CUDA events, 5 warm-up runs, median of 20. Prints one line per result:
    diffusers <what> <dtype> <median ms>

Usage: PYTHONPATH=<diffusers>/src python3 tools/bench/diffusers_baseline.py
"""

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from cuda_timing import time_ms  # noqa: F401 (the other scripts import it from here)

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


@torch.no_grad()
def measure(dtype, runs=20):
    """Median milliseconds of each configuration in one dtype."""
    res = {}
    unet = UNet2DConditionModel(**UNET).to("cuda", dtype).eval()
    x = torch.randn(2, 4, 64, 64, device="cuda", dtype=dtype)
    c = torch.randn(2, 77, 768, device="cuda", dtype=dtype)
    t = torch.tensor([500, 500], device="cuda")
    res["unet_step_512_b2"] = time_ms(lambda: unet(x, t, encoder_hidden_states=c), runs=runs)
    del unet
    vae = AutoencoderKL(**VAE).to("cuda", dtype).eval()
    for s in (512, 1024):
        z = torch.randn(1, 4, s // 8, s // 8, device="cuda", dtype=dtype)
        res[f"vae_decode_{s}"] = time_ms(lambda: vae.decode(z), warm=2, runs=5)
    del vae
    torch.cuda.empty_cache()
    return res


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for dtype in (torch.float16, torch.float32):
        name = "fp16" if dtype == torch.float16 else "fp32"
        for k, v in measure(dtype).items():
            print(f"diffusers {k} {name} {v:.2f}", flush=True)


if __name__ == "__main__":
    main()
