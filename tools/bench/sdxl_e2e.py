#!/usr/bin/env python3
"""SDXL 1024x1024, 30 steps end to end in a warm process, side by side in one
call: darkroom (tools/bench/e2e on a diffusers folder) and diffusers'
StableDiffusionXLPipeline (eager, SDPA), the same random weights of the real
SDXL 1.0 base configuration (UNet, VAE, CLIP-L, OpenCLIP bigG), fp16,
Euler, cfg 5, one image. Both run the request once untimed, then report the
median of --runs; diffusers' peak is torch.cuda.max_memory_allocated, which
(like darkroom's) counts tensors, not the allocator's cache.

Usage (diffusers' source on PYTHONPATH, e2e built here):
    PYTHONPATH=<diffusers>/src python3 tools/bench/sdxl_e2e.py --e2e bin/e2e \\
        --merges engine/tokenizer/bpe_simple_vocab_16e6.txt.gz --dir /tmp/sdxl-random
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

import torch

# the CLIP byte map and transformers 5's text_model prefix fix, as the fixture generator has them
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from gen_sdxl_fixtures import bytes_to_unicode, prefix_text_model  # noqa: E402

sys_unet = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048, use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           sample_size=1024, scaling_factor=0.13025, force_upcast=True)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
              pad_token_id=1)
CLIP_G = dict(CLIP_L, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280)
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
             prediction_type="epsilon", interpolation_type="linear", steps_offset=1, timestep_spacing="leading",
             use_karras_sigmas=False)
PROMPT, NEGATIVE = "a lighthouse on a cliff at dusk, oil painting", "blurry, low quality"


def tokenizer_files(path, merges_gz, pad):
    """OpenAI's CLIP vocabulary (49408 ids) as vocab.json + merges.txt, the way CLIPTokenizer builds it."""
    merges = gzip.open(merges_gz, "rt", encoding="utf-8").read().split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(path, exist_ok=True)
    json.dump({v: i for i, v in enumerate(vocab)}, open(os.path.join(path, "vocab.json"), "w"))
    with open(os.path.join(path, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    from transformers import CLIPTokenizer
    return CLIPTokenizer(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"), pad_token=pad, model_max_length=77)


@torch.no_grad()
def build(dirname, merges):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda"):
        unet = UNet2DConditionModel(**sys_unet).half()
        vae = AutoencoderKL(**VAE).half()
        te = CLIPTextModel(CLIPTextConfig(**CLIP_L)).half()
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).half()
    tok = tokenizer_files(os.path.join(dirname, "_tok"), merges, "<|endoftext|>")
    tok2 = tokenizer_files(os.path.join(dirname, "_tok2"), merges, "!")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SCHED))
    pipe.save_pretrained(dirname, safe_serialization=True)
    # transformers 5 drops CLIPTextModel's "text_model." prefix; released folders have it
    for sub in ("text_encoder", "text_encoder_2"):
        for f in os.listdir(os.path.join(dirname, sub)):
            if f.endswith(".safetensors"):
                prefix_text_model(os.path.join(dirname, sub, f))
    print(f"built and saved the random SDXL pipeline in {time.time() - t0:.0f} s", flush=True)
    return pipe


def darkroom(binary, dirname, steps, runs):
    cmd = [binary, "-m", dirname, "-W", "1024", "-H", "1024", "-steps", str(steps), "-cfg", "5", "-sampler", "euler",
           "-scheduler", "normal", "-warm", "1", "-runs", str(runs)]
    env = dict(os.environ, DARKROOM_CUDA_KERNELS=os.path.abspath("kernels"))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(p.stdout + p.stderr, flush=True)
    return p.stdout


@torch.no_grad()
def diffusers_e2e(pipe, steps, runs):
    def once():
        g = torch.Generator("cpu").manual_seed(1)
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=5.0, width=1024,
                    height=1024, generator=g, output_type="pil")
    once()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        once()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), torch.cuda.max_memory_allocated() / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--e2e", default="bin/e2e")
    ap.add_argument("--merges", default="engine/tokenizer/bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--dir", default="/tmp/sdxl-random")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pipe = build(a.dir, a.merges)
    ms, peak = diffusers_e2e(pipe, a.steps, a.runs)
    print(f"diffusers eager e2e 1024x1024 {a.steps} steps: median {ms:.0f} ms over {a.runs}; peak allocated {peak:.0f} MiB", flush=True)
    del pipe
    torch.cuda.empty_cache()
    darkroom(a.e2e, a.dir, a.steps, a.runs)


if __name__ == "__main__":
    main()
