#!/usr/bin/env python3
"""Z-Image Turbo transformer step, side by side in one call on one NVIDIA
GPU: darkroom (tools/bench/ditstep -model zimage-turbo), diffusers eager
(SDPA) and diffusers under torch.compile(mode="reduce-overhead"), random
weights of the real configuration (Tongyi-MAI/Z-Image-Turbo's
transformer/config.json), 1024x1024 (4096 image tokens) + 128 Qwen3 text
tokens, batch 1 (Turbo runs without CFG), bf16. CUDA events around each
call, median after warm-up; the compile time is reported too. darkroom runs
first, in its own process, so the two never share the GPU's memory.

diffusers' ZImageTransformer2DModel takes a list of per-image latents
[C, F=1, H, W] and of caption states [T, D], as ZImagePipeline passes them.

Usage (diffusers' source on PYTHONPATH, the ditstep binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/zimage_transformer.py --ditstep ./bin/ditstep
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

CONFIG = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
              n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
              t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
TEXT = 128


def step_tflop(img=4096, txt=TEXT, batch=1):
    """2·params·tokens for the block matrices plus attention (4·L²·D), main layers and refiners."""
    D, F, n, r = 3840, 10240, 30, 2
    per_tok = 2 * (4 * D * D + 3 * D * F)
    L = img + txt
    main = n * (L * per_tok + 4 * L * L * D)
    refine = r * (img * per_tok + 4 * img * img * D) + r * (txt * per_tok + 4 * txt * txt * D)
    return batch * (main + refine) / 1e12


def darkroom(binary, runs, extra):
    cmd = [binary, "-model", "zimage-turbo", "-precision", "bf16", "-runs", str(runs), "-text", str(TEXT)] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(out.stdout, out.stderr, flush=True)
    for line in out.stdout.splitlines():
        if line.startswith("Z-Image "):
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
    from diffusers import ZImageTransformer2DModel
    res = {}
    if not a.no_darkroom:
        res["darkroom bf16"] = darkroom(a.ditstep, a.runs, [])
        if a.profile:
            darkroom(a.ditstep, 3, ["-profile"])
    dt = torch.bfloat16
    with torch.device("meta"):
        model = ZImageTransformer2DModel(**CONFIG)
    model = model.to_empty(device="cuda").to(dt).eval()
    g = torch.Generator("cuda").manual_seed(0)
    for name, prm in model.named_parameters():
        if prm.ndim >= 2 and "pad_token" not in name:
            prm.normal_(0, prm[0].numel() ** -0.5, generator=g)
        elif name.endswith("weight"):
            prm.fill_(1)
        elif "pad_token" in name:
            prm.normal_(0, 1, generator=g)
        else:
            prm.zero_()
    x = [torch.randn(16, 1, 128, 128, device="cuda", dtype=dt)]
    cap = [torch.randn(TEXT, 2560, device="cuda", dtype=dt)]
    t = torch.tensor([0.5], device="cuda", dtype=dt)
    step = lambda m: m(x, t, cap, return_dict=False)[0]  # noqa: E731
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
    print(f"{'work (' + torch.cuda.get_device_name() + ')':<52} {'ms':>9} {'TFLOP/s':>8}")
    for k in ("darkroom bf16", "diffusers eager", "torch.compile"):
        if k in res:
            print(f"{'Z-Image Turbo step 1024² b1 + 128 ' + k:<52} {res[k]:9.2f} {tf / res[k] * 1e3:8.0f}")
    if "torch.compile" in res and "darkroom bf16" in res:
        print(f"compile time {res['compile_s']:.0f} s; darkroom/eager {res['darkroom bf16'] / res['diffusers eager']:.2f}, "
              f"darkroom/compile {res['darkroom bf16'] / res['torch.compile']:.2f}; torch peak {mem:.1f} GiB; step {tf:.1f} TFLOP")


if __name__ == "__main__":
    main()
