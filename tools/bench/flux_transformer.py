#!/usr/bin/env python3
"""FLUX.1-dev transformer step, side by side in one call on one NVIDIA GPU:
darkroom (tools/bench/ditstep -model flux-dev, bf16), diffusers eager (SDPA) and diffusers
under torch.compile(mode="reduce-overhead"), random weights of the real
FLUX.1-dev configuration (12 B parameters), 1024x1024 (4096 image tokens)
+ 512 T5 tokens, batch 1, guidance 3.5, bf16. CUDA events around each call,
median after warm-up; the compile time is reported too. darkroom runs
first, in its own process, so the two never share the GPU's memory.

Usage (diffusers' source on PYTHONPATH, the ditstep binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/flux_transformer.py --ditstep ./bin/ditstep
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

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                guidance_embeds=True, axes_dims_rope=(16, 56, 56))

# 2·params·tokens for the linear layers plus attention (4·L²·D per block):
# the 74.4 TFLOP per step at 4096 + 512 tokens.
def step_tflop(img=4096, txt=512):
    L, D, mlp = img + txt, 3072, 12288
    double = 2 * L * (4 * D * D + 2 * D * mlp) + 4 * L * L * D
    single = 2 * L * (3 * D * D + D * mlp + (D + mlp) * D) + 4 * L * L * D
    return (19 * double + 38 * single) / 1e12


def darkroom(binary, runs, extra):
    cmd = [binary, "-model", "flux-dev", "-precision", "bf16", "-runs", str(runs)] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(out.stdout, out.stderr, flush=True)
    for line in out.stdout.splitlines():
        if line.startswith("Flux.1-dev step"):
            return go_duration_ms(line.split()[-2])
    raise SystemExit(f"no result in:\n{out.stdout}")


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ditstep", default="./bin/ditstep")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-darkroom", action="store_true")
    p.add_argument("--profile", action="store_true", help="also run darkroom's per-kernel profile")
    a = p.parse_args()
    res = {}
    if not a.no_darkroom:
        res["darkroom bf16"] = darkroom(a.ditstep, a.runs, [])
        if a.profile:
            darkroom(a.ditstep, 3, ["-profile"])
    dt = torch.bfloat16
    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX_DEV)
    model = model.to_empty(device="cuda").to(dt).eval()
    g = torch.Generator("cuda").manual_seed(0)
    for name, prm in model.named_parameters():
        if prm.ndim >= 2:
            prm.normal_(0, prm.shape[1] ** -0.5, generator=g)
        elif name.endswith("weight"):
            prm.fill_(1)
        else:
            prm.zero_()
    img = torch.randn(1, 4096, 64, device="cuda", dtype=dt)
    txt = torch.randn(1, 512, 4096, device="cuda", dtype=dt)
    pooled = torch.randn(1, 768, device="cuda", dtype=dt)
    t = torch.tensor([0.5], device="cuda", dtype=dt)
    guid = torch.tensor([3.5], device="cuda", dtype=dt)
    ids = torch.zeros(64, 64, 3, device="cuda")
    ids[..., 1] += torch.arange(64, device="cuda")[:, None]
    ids[..., 2] += torch.arange(64, device="cuda")[None, :]
    img_ids, txt_ids = ids.reshape(-1, 3), torch.zeros(512, 3, device="cuda")
    step = lambda m: m(hidden_states=img, encoder_hidden_states=txt, pooled_projections=pooled, timestep=t,  # noqa: E731
                       guidance=guid, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
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
    tf = step_tflop()
    print(f"{'work (' + torch.cuda.get_device_name() + ')':<48} {'ms':>9} {'TFLOP/s':>8}")
    for k in ("darkroom bf16", "diffusers eager", "torch.compile"):
        if k in res:
            print(f"{'Flux.1-dev step 1024² + 512 ' + k:<48} {res[k]:9.2f} {tf / res[k] * 1e3:8.0f}")
    if "torch.compile" in res and "darkroom bf16" in res:
        print(f"compile time {res['compile_s']:.0f} s; darkroom/eager {res['darkroom bf16'] / res['diffusers eager']:.2f}, "
              f"darkroom/compile {res['darkroom bf16'] / res['torch.compile']:.2f}; torch peak {mem:.1f} GiB; step {tf:.1f} TFLOP")


if __name__ == "__main__":
    from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
    main()
