#!/usr/bin/env python3
"""Flux img2img fixtures from diffusers' FluxImg2ImgPipeline.

Runs FluxImg2ImgPipeline (float32, CPU) on the tiny FLUX.1-dev pipeline of
testdata/reference/flux-pipe/dev (its T5 weights from t5-tiny, its T5
tokenizer the bundled one) from a fixed 64x48 init image, recording the
latent after every step, the encoded image latents (sampled from the
generator, then (z - shift)*scale), the noise (the generator's next draw),
the final latents and the image.

Output (DIR): init.png, cases.json, cases.safetensors (float32,
"<case>/<what>": image_latents, latents_step<i>, final_latents,
image [B,H,W,3], sigmas).

Usage (no network): PYTHONPATH=<diffusers>/src python3 tools/reference/gen_flux_img2img_fixtures.py \\
    --flux-pipe testdata/reference/flux-pipe --t5-tiny testdata/reference/t5-tiny \\
    --t5-tokenizer engine/tokenizer/t5_tokenizer.json.gz --out DIR
"""
import argparse
import gzip
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

CASES = [
    dict(name="dev_strength055", prompt="A lighthouse on a rocky coast, stormy sky, oil painting", strength=0.55,
         steps=5, guidance=3.5, seed=9, max_sequence_length=512),
    dict(name="dev_strength08", prompt="a watercolor fox, (soft) light", strength=0.8, steps=4, guidance=2.5,
         seed=21, max_sequence_length=128),
]
T5_TOKENIZER_CONFIG = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 100,
                       "legacy": True, "model_max_length": 512, "tokenizer_class": "T5Tokenizer"}


def init_image(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 255.0 * x / (w - 1)
    b = 255.0 * ((x + y) % 16 < 8)
    return Image.fromarray(np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8), "RGB")


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flux-pipe", required=True)
    ap.add_argument("--t5-tiny", required=True)
    ap.add_argument("--t5-tokenizer", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from diffusers import FluxImg2ImgPipeline, FluxPipeline

    work = tempfile.mkdtemp()
    d = os.path.join(work, "FLUX.1-dev")
    shutil.copytree(os.path.join(a.flux_pipe, "dev"), d)
    shutil.copy(os.path.join(a.t5_tiny, "model.safetensors"), os.path.join(d, "text_encoder_2", "model.safetensors"))
    tok = os.path.join(d, "tokenizer_2")
    os.makedirs(tok, exist_ok=True)
    opener = gzip.open if a.t5_tokenizer.endswith(".gz") else open
    with opener(a.t5_tokenizer, "rb") as f, open(os.path.join(tok, "tokenizer.json"), "wb") as g:
        g.write(f.read())
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(T5_TOKENIZER_CONFIG, f)
    idx = json.load(open(os.path.join(d, "model_index.json")))
    if "tokenizer_2" not in idx or idx["tokenizer_2"] is None or idx["tokenizer_2"][0] is None:
        idx["tokenizer_2"] = ["transformers", "T5TokenizerFast"]
        json.dump(idx, open(os.path.join(d, "model_index.json"), "w"))
    base = FluxPipeline.from_pretrained(d, torch_dtype=torch.float32, local_files_only=True)
    pipe = FluxImg2ImgPipeline(**base.components).to("cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    os.makedirs(a.out, exist_ok=True)
    W, H = 64, 48
    img = init_image(W, H)
    img.save(os.path.join(a.out, "init.png"))
    tensors, meta = {}, []
    for c in CASES:
        lat, rec = [], {}
        orig_enc = pipe._encode_vae_image

        def enc(*args, **kw):
            z = orig_enc(*args, **kw)
            rec["image_latents"] = z.detach().clone()
            return z
        pipe._encode_vae_image = enc

        def cb(p, i, t, kw):
            lat.append(kw["latents"].detach().clone())
            return {}
        g = torch.Generator("cpu").manual_seed(c["seed"])
        out = pipe(prompt=c["prompt"], image=img, height=H, width=W, strength=c["strength"],
                   num_inference_steps=c["steps"], guidance_scale=c["guidance"], generator=g, output_type="np",
                   callback_on_step_end=cb, max_sequence_length=c["max_sequence_length"])
        del pipe._encode_vae_image
        unpack = lambda x: pipe._unpack_latents(x, H, W, pipe.vae_scale_factor)  # noqa: E731
        n = c["name"]
        tensors[f"{n}/image_latents"] = rec["image_latents"].float().contiguous()
        for i, l in enumerate(lat):
            tensors[f"{n}/latents_step{i}"] = unpack(l).float().contiguous()
        tensors[f"{n}/final_latents"] = unpack(lat[-1]).float().contiguous()
        tensors[f"{n}/image"] = torch.from_numpy(out.images.copy()).float()
        sig = pipe.scheduler.sigmas.float()
        tensors[f"{n}/sigmas"] = sig
        meta.append(dict(c, width=W, height=H, steps_run=len(lat), sigmas=[float(s) for s in sig],
                         pixel_std=float(out.images.std())))
        print(n, "steps run", len(lat), "sigmas", [round(float(s), 6) for s in sig], "pixel std", float(out.images.std()))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(a.out, "cases.safetensors"))
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(dict(cases=meta, pipeline="FluxImg2ImgPipeline", torch=torch.__version__), f, indent=1)


if __name__ == "__main__":
    main()
