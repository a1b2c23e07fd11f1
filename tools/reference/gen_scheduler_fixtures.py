#!/usr/bin/env python3
"""Generate sampler fixtures for engine/sampling from diffusers schedulers.

Usage:
    PYTHONPATH=/path/to/diffusers/src python3 tools/reference/gen_scheduler_fixtures.py --out DIR

For each case it runs a diffusers scheduler's step loop on CPU in float32
with a SYNTHETIC model instead of a UNet:

    eps(x_in, t) = 0.3 * x_in + 0.1 * sin(x_in) + 0.01 * t / 1000

where x_in is the scheduler's scaled model input and t the timestep the
scheduler passes to the model. engine/sampling/sched_fixture_test.go
implements the same function, wraps it as ComfyUI wraps an epsilon model
(x_in = x / sqrt(sigma^2 + 1), denoised = x - eps * sigma) and runs the
matching darkroom sampler on the same sigmas, comparing per-step latents at
1e-4 relative.

Writes DIR/sched_<case>.safetensors and DIR/sched_manifest.json. Tensors:
    x_start      the starting latent in darkroom's sigma ("VE") frame
    sigmas       the distinct sigmas the darkroom sampler must visit
    call_t       (F64) the timestep passed to the model at each call, in order
    x_step_<k>   expected latent (VE frame) after darkroom step k (callback k)
    final        expected final latent (when the algorithms agree at the end)
    noise_<k>    the k-th standard-normal tensor the scheduler drew

Where diffusers and ComfyUI differ (see docs/sampling.md) a case checks only
the steps on which they agree; the manifest says which.

Needs torch, safetensors, numpy, scipy (LMS) and diffusers; no network.
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler
from diffusers.schedulers.scheduling_k_dpm_2_discrete import KDPM2DiscreteScheduler
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

MAGIC = "darkroom-sched-fixtures-v1"
SHAPE = (1, 4, 8, 8)
SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def eps_model(x, t):
    """The synthetic epsilon model; t is a Python float."""
    return 0.3 * x + 0.1 * torch.sin(x) + 0.01 * t / 1000.0


# Each case: name, darkroom sampler, scheduler class, config, steps, seed,
# frame ("ve": latents carry sigma as k-diffusion's; "vp": latents are
# x / sqrt(1 + sigma^2)), how step outputs map to darkroom steps, what to
# compare, and a note.
CASES = [
    dict(name="euler_karras", sampler="euler", cls=EulerDiscreteScheduler,
         cfg=dict(SD, use_karras_sigmas=True), steps=10, seed=11, frame="ve", kind="plain",
         final=True, note="EulerDiscrete == k-diffusion sample_euler"),
    dict(name="euler_linspace", sampler="euler", cls=EulerDiscreteScheduler,
         cfg=dict(SD), steps=12, seed=12, frame="ve", kind="plain",
         final=True, note="diffusers linspace sigmas (interpolated in sigma), Euler steps"),
    dict(name="euler_ancestral", sampler="euler_ancestral", cls=EulerAncestralDiscreteScheduler,
         cfg=dict(SD), steps=10, seed=13, frame="ve", kind="plain", noise=True,
         final=True, note="same noise per step; diffusers also draws (and zeroes) noise at the last step"),
    dict(name="heun_karras", sampler="heun", cls=HeunDiscreteScheduler,
         cfg=dict(SD, use_karras_sigmas=True), steps=8, seed=14, frame="ve", kind="second_order",
         final=True, note="2N-1 model calls; last step Euler"),
    dict(name="dpm_2_karras", sampler="dpm_2", cls=KDPM2DiscreteScheduler,
         cfg=dict(SD, use_karras_sigmas=True), steps=8, seed=15, frame="ve", kind="second_order",
         final=True, note="midpoint sigma = exp(lerp(log)); last step Euler"),
    dict(name="lms_karras", sampler="lms", cls=LMSDiscreteScheduler,
         cfg=dict(SD, use_karras_sigmas=True), steps=10, seed=16, frame="ve", kind="plain",
         final=False, skip_last=True,
         note="diffusers integrates the LMS polynomial down to sigma 0 on the last step; k-diffusion returns denoised"),
    dict(name="dpmpp_2m_karras", sampler="dpmpp_2m", cls=DPMSolverMultistepScheduler,
         cfg=dict(SD, use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2),
         steps=10, seed=17, frame="vp", kind="plain", final=True,
         note="DPM-Solver++(2M), karras timesteps rounded by diffusers"),
    dict(name="dpmpp_2m_sde_karras", sampler="dpmpp_2m_sde", cls=DPMSolverMultistepScheduler,
         cfg=dict(SD, use_karras_sigmas=True, algorithm_type="sde-dpmsolver++", solver_order=2,
                  solver_type="midpoint"),
         steps=10, seed=18, frame="vp", kind="plain", noise=True, final=True,
         note="Gaussian noise per step fed to darkroom instead of its Brownian noise"),
    dict(name="dpmpp_2m_sde_heun_karras", sampler="dpmpp_2m_sde_heun", cls=DPMSolverMultistepScheduler,
         cfg=dict(SD, use_karras_sigmas=True, algorithm_type="sde-dpmsolver++", solver_order=2,
                  solver_type="heun"),
         steps=10, seed=19, frame="vp", kind="plain", noise=True, final=True,
         note="as dpmpp_2m_sde with the heun correction"),
    dict(name="ddim_leading", sampler="ddim", cls=DDIMScheduler,
         cfg=dict(SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"),
         steps=10, seed=20, frame="vp", kind="ddim", final=True,
         note="DDIM eta=0 equals Euler in sigma; sigmas from alphas_cumprod, ending at sigma(abar_0)"),
    dict(name="unipc_bh1_karras", sampler="uni_pc", cls=UniPCMultistepScheduler,
         cfg=dict(SD, use_karras_sigmas=True, solver_order=3, solver_type="bh1", predict_x0=True,
                  lower_order_final=True),
         steps=10, seed=21, frame="vp", kind="unipc", final=False,
         note="corrected samples 1..N-2; ComfyUI ends at sigma 0.001, diffusers at 0"),
    dict(name="unipc_bh2_karras", sampler="uni_pc_bh2", cls=UniPCMultistepScheduler,
         cfg=dict(SD, use_karras_sigmas=True, solver_order=3, solver_type="bh2", predict_x0=True,
                  lower_order_final=True),
         steps=10, seed=22, frame="vp", kind="unipc", final=False,
         note="corrected samples 1..N-2; ComfyUI ends at sigma 0.001, diffusers at 0"),
]


def to_ve(x, sigma):
    """VP-frame latent to darkroom's frame: x * sqrt(1 + sigma^2), float32."""
    s = torch.as_tensor(sigma, dtype=torch.float32)
    return x * (s * s + 1.0) ** 0.5


def run_case(case, out_dir):
    sched = case["cls"](**case["cfg"])
    n = case["steps"]
    sched.set_timesteps(n)
    gen_x = torch.Generator("cpu").manual_seed(case["seed"])
    x_t = torch.randn(SHAPE, generator=gen_x, dtype=torch.float32)

    stochastic = case.get("noise", False)
    gen = torch.Generator("cpu").manual_seed(case["seed"] + 1000) if stochastic else None
    twin = torch.Generator("cpu").manual_seed(case["seed"] + 1000) if stochastic else None

    # The sigmas darkroom visits.
    if case["kind"] == "ddim":
        acp = sched.alphas_cumprod
        ts = [int(t) for t in sched.timesteps]
        sig = [float(((1 - acp[t]) / acp[t]) ** 0.5) for t in ts]
        final_acp = sched.final_alpha_cumprod
        sig.append(float(((1 - final_acp) / final_acp) ** 0.5))
        sigmas = torch.tensor(sig, dtype=torch.float32)
    else:
        sigmas = torch.unique_consecutive(sched.sigmas.to(torch.float32))
    if len(sigmas) != n + 1:
        raise RuntimeError(f"{case['name']}: {len(sigmas)} distinct sigmas, want {n + 1}")

    latents = x_t * sched.init_noise_sigma
    x_start = latents.clone() if case["frame"] == "ve" else to_ve(latents, sigmas[0])

    tensors = {"x_start": x_start.contiguous(), "sigmas": sigmas.contiguous()}
    call_t = []
    step_outputs = []  # prev_sample after each scheduler.step call
    corrected = {}  # UniPC: corrected sample at target k
    timesteps = sched.timesteps
    for k, t in enumerate(timesteps):
        inp = sched.scale_model_input(latents, t)
        tf = float(t)
        call_t.append(tf)
        eps = eps_model(inp, tf)
        kwargs = {"generator": gen} if stochastic else {}
        latents = sched.step(eps, t, latents, **kwargs).prev_sample
        step_outputs.append(latents.clone())
        if case["kind"] == "unipc" and k >= 1 and sched.last_sample is not None:
            corrected[k] = sched.last_sample.clone()

    checks = []
    if case["kind"] in ("plain", "ddim"):
        last = n - 1 if case.get("skip_last") else n
        for k in range(last):
            x = step_outputs[k]
            if case["frame"] == "vp":
                x = to_ve(x, sigmas[k + 1])
            tensors[f"x_step_{k}"] = x.contiguous()
            checks.append(k)
    elif case["kind"] == "second_order":
        # Calls 0, 1 make step 0, calls 2, 3 step 1, ...; the last step is
        # a single (Euler) call.
        done = [c for c in range(len(timesteps)) if c % 2 == 1 or c == len(timesteps) - 1]
        if len(done) != n:
            raise RuntimeError(f"{case['name']}: {len(done)} completed steps, want {n}")
        for k, c in enumerate(done):
            tensors[f"x_step_{k}"] = step_outputs[c].contiguous()
            checks.append(k)
    elif case["kind"] == "unipc":
        for k in range(1, n - 1):
            tensors[f"x_step_{k}"] = to_ve(corrected[k], sigmas[k]).contiguous()
            checks.append(k)

    final = step_outputs[-1]
    if case["frame"] == "vp":
        final = to_ve(final, sigmas[-1])
    if case["final"]:
        tensors["final"] = final.contiguous()

    n_noise = 0
    if stochastic:
        while True:
            if torch.equal(twin.get_state(), gen.get_state()):
                break
            tensors[f"noise_{n_noise}"] = torch.randn(SHAPE, generator=twin, dtype=torch.float32)
            n_noise += 1
            if n_noise > 4 * n:
                raise RuntimeError(f"{case['name']}: could not replay the scheduler's noise")

    tensors["call_t"] = torch.tensor(call_t, dtype=torch.float64)
    path = os.path.join(out_dir, f"sched_{case['name']}.safetensors")
    tensors = {k: v.clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"magic": MAGIC, "case": case["name"]})
    entry = dict(
        name=case["name"], sampler=case["sampler"], scheduler=case["cls"].__name__,
        config={k: v for k, v in case["cfg"].items()}, steps=n, seed=case["seed"],
        frame=case["frame"], check_steps=checks, check_final=case["final"], noise=n_noise,
        calls=len(call_t), file=os.path.basename(path), note=case["note"],
    )
    rms = float(final.pow(2).mean().sqrt())
    print(f"{case['name']}: {case['cls'].__name__} steps={n} calls={len(call_t)} "
          f"checks={len(checks)} noise={n_noise} final_rms={rms:.6f} -> {path}")
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory (e.g. testdata/reference)")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    import diffusers

    only = set(filter(None, args.only.split(",")))
    entries = [run_case(c, args.out) for c in CASES if not only or c["name"] in only]
    manifest = dict(magic=MAGIC, diffusers=diffusers.__version__, torch=torch.__version__,
                    shape=list(SHAPE), model="eps = 0.3*x + 0.1*sin(x) + 0.01*t/1000", cases=entries)
    with open(os.path.join(args.out, "sched_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(entries)} fixtures and sched_manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
