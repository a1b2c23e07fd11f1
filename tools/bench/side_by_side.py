#!/usr/bin/env python3
"""Side-by-side benchmark on one NVIDIA GPU: darkroom, then diffusers
(PyTorch eager, SDPA), on the same configurations with random weights, and
the ratio darkroom / diffusers (below 1 means darkroom is faster).

Configurations: the SD1.5 UNet step at 512x512, batch 2 (one CFG step), and
the SD1.x VAE decode at 512x512 and 1024x1024, in fp16 (and --precision
picks another darkroom precision against diffusers in the matching dtype).

darkroom's numbers come from `darkroom bench` (wall time per call including
the host, median after a warm-up); diffusers' from CUDA events around each
call (tools/bench/diffusers_baseline.py), median after warm-up.

Usage (diffusers' source on PYTHONPATH, a darkroom binary built anywhere):
    PYTHONPATH=<diffusers>/src python3 tools/bench/side_by_side.py --darkroom ./bin/darkroom
"""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def go_duration_ms(text):
    """Parses a Go duration such as 12.3ms, 850µs or 1.2s into milliseconds."""
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ns|µs|us|ms|s)", text):
        total += float(num) * UNITS[unit]
    return total


def darkroom(binary, precision, args):
    cmd = [binary, "bench", "--device", "cuda", "--precision", precision] + args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(("SD1.5 UNet", "SD1.x VAE")):
            # name, warm-up, median, runs: the median is the second-to-last field.
            return go_duration_ms(line.split()[-2]), out
    raise SystemExit(f"no result in the output of {' '.join(cmd)}:\n{out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--darkroom", default="./bin/darkroom")
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()

    ours = {}
    ms, out = darkroom(args.darkroom, args.precision, ["--unet", "--runs", str(args.runs)])
    print(out.splitlines()[0], flush=True)
    ours["unet_step_512_b2"] = ms
    for s in (512, 1024):
        ms, _ = darkroom(args.darkroom, args.precision, ["--vae", "-W", str(s), "-H", str(s), "--runs", "5"])
        ours[f"vae_decode_{s}"] = ms

    import torch
    import diffusers_baseline as base

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    theirs = base.measure(dtype, runs=args.runs)
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"{'configuration':<22} {'darkroom ms':>12} {'diffusers ms':>13} {'ratio':>7}   ({args.precision})")
    for k in ("unet_step_512_b2", "vae_decode_512", "vae_decode_1024"):
        print(f"{k:<22} {ours[k]:>12.2f} {theirs[k]:>13.2f} {ours[k] / theirs[k]:>7.2f}")


if __name__ == "__main__":
    main()
