#!/usr/bin/env python3
"""SDXL UNet step, side by side in one call on one NVIDIA GPU: darkroom
(`darkroom bench --arch sdxl`), diffusers eager (SDPA) and diffusers under
torch.compile(mode="reduce-overhead"), with random weights of the real
SDXL 1.0 base configuration, 1024x1024 (latent 128x128), batch 2 (one CFG
step), fp16. CUDA events around each call, median after warm-up; the
compile time is reported too.

Usage (diffusers' source on PYTHONPATH, a darkroom binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/sdxl_unet.py --darkroom ./bin/darkroom
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

SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)


def darkroom(binary, runs):
    cmd = [binary, "bench", "--device", "cuda", "--precision", "fp16", "--arch", "sdxl", "--unet",
           "-W", "1024", "-H", "1024", "--runs", str(runs)]
    if os.path.basename(binary).startswith("unetstep"):  # tools/bench/unetstep: the benchmark alone
        cmd = [binary, "-arch", "sdxl", "-W", "1024", "-H", "1024", "-runs", str(runs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out, flush=True)
    for line in out.splitlines():
        if line.startswith("SDXL UNet"):
            return go_duration_ms(line.split()[-2])
    raise SystemExit(f"no result in:\n{out}")


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--darkroom", default="./bin/darkroom")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res = {"darkroom": darkroom(a.darkroom, a.runs)}
    dt = torch.float16
    unet = UNet2DConditionModel(**SDXL).to("cuda", dt).eval()
    x = torch.randn(2, 4, 128, 128, device="cuda", dtype=dt)
    c = torch.randn(2, 77, 2048, device="cuda", dtype=dt)
    t = torch.tensor([500, 500], device="cuda")
    added = {"text_embeds": torch.randn(2, 1280, device="cuda", dtype=dt),
             "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, device="cuda", dtype=dt)}
    step = lambda m: m(x, t, encoder_hidden_states=c, added_cond_kwargs=added)  # noqa: E731
    res["diffusers eager"] = time_ms(lambda: step(unet), 5, a.runs)
    print(f"diffusers eager {res['diffusers eager']:.2f} ms", flush=True)
    if not a.no_compile:
        compiled = torch.compile(unet, mode="reduce-overhead")
        t0 = time.time()
        for _ in range(3):
            step(compiled)
        torch.cuda.synchronize()
        res["compile_s"] = time.time() - t0
        res["torch.compile"] = time_ms(lambda: step(compiled), 5, a.runs)
    mem = torch.cuda.max_memory_allocated() / 2**20
    print(f"{'work':<44} {'ms':>9}")
    for k in ("darkroom", "diffusers eager", "torch.compile"):
        if k in res:
            print(f"{'SDXL UNet step 1024x1024 b2 fp16 ' + k:<44} {res[k]:9.2f}")
    if "torch.compile" in res:
        print(f"compile time {res['compile_s']:.0f} s; darkroom/eager {res['darkroom'] / res['diffusers eager']:.2f}, "
              f"darkroom/compile {res['darkroom'] / res['torch.compile']:.2f}; torch peak {mem:.0f} MiB")


if __name__ == "__main__":
    from diffusers import UNet2DConditionModel
    main()
