#!/usr/bin/env python3
"""SD3.5 Large (or Medium) transformer step, side by side in one call on one
NVIDIA GPU: darkroom (tools/bench/ditstep), diffusers eager (SDPA) and
diffusers under torch.compile(mode="reduce-overhead"), random weights of the
real configuration, 1024x1024 (4096 image tokens) + 333 text tokens (77
CLIP + 256 T5), batch 2 (classifier-free guidance), bf16. CUDA events around
each call, median after warm-up; the compile time is reported too. darkroom
runs first, in its own process, so the two never share the GPU's memory.

Usage (diffusers' source on PYTHONPATH, the ditstep binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/sd3_transformer.py --ditstep ./bin/ditstep [--variant medium]
"""
import argparse
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_baseline import time_ms  # noqa: E402
from side_by_side import go_duration_ms  # noqa: E402

# transformer/config.json of stabilityai/stable-diffusion-3.5-large and -medium.
CONFIGS = {
    "large": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                  num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, dual_attention_layers=(),
                  qk_norm="rms_norm"),
    "medium": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
}
TEXT = 77 + 256


def step_tflop(cfg, img=4096, txt=TEXT, batch=2):
    """2·params·tokens for the block matrices plus attention (4·L²·D per joint attention)."""
    D, n, dual = cfg["num_attention_heads"] * 64, cfg["num_layers"], len(cfg["dual_attention_layers"])
    L = img + txt
    joint = 2 * L * (4 * D * D + 8 * D * D) + 4 * L * L * D  # q,k,v,out + 4D MLP, both streams
    extra = 2 * img * 4 * D * D + 4 * img * img * D  # MMDiT-X self-attention
    return batch * (n * joint + dual * extra) / 1e12


def darkroom(binary, variant, runs, extra):
    cmd = [binary, "-model", "sd35-" + variant, "-precision", "bf16", "-runs", str(runs)] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(out.stdout, out.stderr, flush=True)
    for line in out.stdout.splitlines():
        if line.startswith("SD3.5 "):
            return go_duration_ms(line.split()[-2])
    raise SystemExit(f"no result in:\n{out.stdout}")


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ditstep", default="./bin/ditstep")
    p.add_argument("--variant", default="large", choices=sorted(CONFIGS))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-darkroom", action="store_true")
    p.add_argument("--profile", action="store_true", help="also run darkroom's per-kernel profile")
    a = p.parse_args()
    from diffusers import SD3Transformer2DModel
    cfg = CONFIGS[a.variant]
    res = {}
    if not a.no_darkroom:
        res["darkroom bf16"] = darkroom(a.ditstep, a.variant, a.runs, [])
        if a.profile:
            darkroom(a.ditstep, a.variant, 3, ["-profile"])
    dt = torch.bfloat16
    with torch.device("meta"):
        model = SD3Transformer2DModel(**cfg)
    model = model.to_empty(device="cuda").to(dt).eval()
    g = torch.Generator("cuda").manual_seed(0)
    for name, prm in model.named_parameters():
        if prm.ndim >= 2:
            prm.normal_(0, prm[0].numel() ** -0.5, generator=g)
        elif name.endswith("weight"):
            prm.fill_(1)
        else:
            prm.zero_()
    model.pos_embed.pos_embed.normal_(0, 1, generator=g)
    x = torch.randn(2, 16, 128, 128, device="cuda", dtype=dt)
    ctx = torch.randn(2, TEXT, 4096, device="cuda", dtype=dt)
    pooled = torch.randn(2, 2048, device="cuda", dtype=dt)
    t = torch.tensor([500.0, 500.0], device="cuda", dtype=dt)
    step = lambda m: m(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t,  # noqa: E731
                       return_dict=False)[0]
    res["diffusers eager"] = time_ms(lambda: step(model), 3, a.runs)
    print(f"diffusers eager {res['diffusers eager']:.2f} ms", flush=True)
    if not a.no_compile:
        compiled = torch.compile(model, mode="reduce-overhead")
        t0 = time.time()
        for _ in range(3):
            step(compiled)
        torch.cuda.synchronize()
        res["compile_s"] = time.time() - t0
        res["torch.compile"] = time_ms(lambda: step(compiled), 3, a.runs)
    mem = torch.cuda.max_memory_allocated() / 2**30
    tf = step_tflop(cfg)
    print(f"{'work (' + torch.cuda.get_device_name() + ')':<52} {'ms':>9} {'TFLOP/s':>8}")
    for k in ("darkroom bf16", "diffusers eager", "torch.compile"):
        if k in res:
            print(f"{'SD3.5 ' + a.variant + ' step 1024² b2 + 333 ' + k:<52} {res[k]:9.2f} {tf / res[k] * 1e3:8.0f}")
    if "torch.compile" in res and "darkroom bf16" in res:
        print(f"compile time {res['compile_s']:.0f} s; darkroom/eager {res['darkroom bf16'] / res['diffusers eager']:.2f}, "
              f"darkroom/compile {res['darkroom bf16'] / res['torch.compile']:.2f}; torch peak {mem:.1f} GiB; step {tf:.1f} TFLOP")


if __name__ == "__main__":
    main()
