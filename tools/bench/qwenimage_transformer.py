#!/usr/bin/env python3
"""Qwen-Image transformer step with classifier-free guidance, side by side
in one call on one NVIDIA GPU: darkroom (tools/bench/ditstep -model
qwen-image), diffusers eager (SDPA) and diffusers under
torch.compile(mode="reduce-overhead"), random weights of the real
configuration (Qwen/Qwen-Image's transformer/config.json: 60 blocks, width
3072), 1024x1024 (4096 packed image tokens) + 128 Qwen2.5-VL text tokens,
batch 2 (the prompt and the negative prompt in one call), bf16. CUDA events
around each call, median after warm-up; the compile time is reported too.
darkroom runs first, in its own process, so the two never share the GPU's
memory.

Usage (diffusers' source on PYTHONPATH, the ditstep binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/qwenimage_transformer.py --ditstep ./bin/ditstep
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

CONFIG = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
              num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56))
TEXT = 128


def step_tflop(img=4096, txt=TEXT, batch=2):
    """2·params·tokens for the block matrices (q, k, v, out, 4D MLP per stream) plus joint attention (4·L²·D)."""
    D, n = 3072, 60
    L = img + txt
    return batch * n * (2 * L * 12 * D * D + 4 * L * L * D) / 1e12


def darkroom(binary, runs, extra):
    cmd = [binary, "-model", "qwen-image", "-precision", "bf16", "-runs", str(runs), "-text", str(TEXT)] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(out.stdout, out.stderr, flush=True)
    for line in out.stdout.splitlines():
        if line.startswith("Qwen-Image "):
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
    from diffusers import QwenImageTransformer2DModel
    res = {}
    if not a.no_darkroom:
        res["darkroom bf16"] = darkroom(a.ditstep, a.runs, [])
        if a.profile:
            darkroom(a.ditstep, 3, ["-profile"])
    dt = torch.bfloat16
    with torch.device("meta"):
        model = QwenImageTransformer2DModel(**CONFIG)
    model = model.to_empty(device="cuda").to(dt).eval()
    # Tables computed at construction (the RoPE frequencies, plain tensor
    # attributes and buffers) are empty after to_empty: take them from a
    # one-block model built on the CPU.
    small = QwenImageTransformer2DModel(**{**CONFIG, "num_layers": 1})
    for name, buf in small.named_buffers():
        model.get_buffer(name).copy_(buf)
    for k, v in vars(small.pos_embed).items():
        if isinstance(v, torch.Tensor):
            setattr(model.pos_embed, k, v)
    del small
    g = torch.Generator("cuda").manual_seed(0)
    for name, prm in model.named_parameters():
        if prm.ndim >= 2:
            prm.normal_(0, prm[0].numel() ** -0.5, generator=g)
        elif name.endswith("weight"):
            prm.fill_(1)
        else:
            prm.zero_()
    x = torch.randn(2, 4096, 64, device="cuda", dtype=dt)
    ctx = torch.randn(2, TEXT, 3584, device="cuda", dtype=dt)
    t = torch.tensor([0.5, 0.5], device="cuda", dtype=dt)
    shapes = [[(1, 64, 64)]] * 2
    step = lambda m: m(hidden_states=x, encoder_hidden_states=ctx, timestep=t, img_shapes=shapes,  # noqa: E731
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
    tf = step_tflop()
    print(f"{'work (' + torch.cuda.get_device_name() + ')':<52} {'ms':>9} {'TFLOP/s':>8}")
    for k in ("darkroom bf16", "diffusers eager", "torch.compile"):
        if k in res:
            print(f"{'Qwen-Image step 1024² b2 + 128 ' + k:<52} {res[k]:9.2f} {tf / res[k] * 1e3:8.0f}")
    if "torch.compile" in res and "darkroom bf16" in res:
        print(f"compile time {res['compile_s']:.0f} s; darkroom/eager {res['darkroom bf16'] / res['diffusers eager']:.2f}, "
              f"darkroom/compile {res['darkroom bf16'] / res['torch.compile']:.2f}; torch peak {mem:.1f} GiB; step {tf:.1f} TFLOP")


if __name__ == "__main__":
    main()
