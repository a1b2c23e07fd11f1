#!/usr/bin/env python3
"""Writes the real-size key lists of GGUF files (testdata/keyshapes/gguf/)
from the safetensors key lists of the same models (testdata/keyshapes/),
applying the rules of the tools that make the published files:

- image models (city96's ComfyUI-GGUF): tools/convert.py writes every
  tensor as F16 (BF16 from a bf16 source), 1-D tensors and tensors of at
  most 1024 elements of an f32/bf16 source as F32, and for SD1/SDXL
  ("shape_fix") stores a tensor whose last dimension is not a multiple of
  256 (but whose size is) as rows of 256, its shape in the
  "comfy.gguf.orig_shape.<name>" metadata; then llama-quantize patched
  with tools/lcpp.patch quantises every tensor named "*weight" of two or
  more dimensions to the file's type, except that a K type on a row
  (ne[0]) that is not a multiple of 256 falls back to F16, and the
  Q4_K_S / Q4_K_M / ... per-name rules (none of which matches Flux's or
  SDXL's names) raise some types;
- T5 encoders (city96/t5-v1_1-xxl-encoder-gguf, llama.cpp's
  convert_hf_to_gguf.py T5EncoderModel and llama-quantize): llama.cpp's
  names (token_embd, enc.blk.N.attn_q, ..., enc.output_norm), one token
  embedding (transformers' encoder.embed_tokens copy dropped), 1-D tensors
  F32, 2-D F16, then every 2-D weight quantised except attn_rel_b (which
  llama-quantize never quantises).

Shapes are written as darkroom presents them (PyTorch order; orig_shape
applied), dtypes as ggml type names. Not read from the published files:
derived from their tools' rules, as the source field of each list says.

    python3 tools/reference/gen_gguf_keyshapes.py   # from the repository root
"""
import gzip
import json
import math
import os

KS = "testdata/keyshapes"
OUT = os.path.join(KS, "gguf")
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
BLOCK = {"Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, **{t: 256 for t in K_TYPES}}


def read(name):
    with gzip.open(os.path.join(KS, name + ".json.gz"), "rt") as f:
        kl = json.load(f)
    (rel, f), = kl["files"].items()
    return rel, f["tensors"]


def write(name, source, rel, tensors, metadata):
    kl = {"name": name, "family": "component", "layout": "component", "source": source,
          "files": {rel: {"metadata": metadata, "tensors": tensors}}}
    with gzip.GzipFile(os.path.join(OUT, name + ".json.gz"), "wb", mtime=0) as f:
        f.write(json.dumps(kl, separators=(",", ":")).encode())


def quantised(name, ne0, ndims, base, qtype):
    if not name.endswith("weight") or ndims < 2:
        return base
    if ne0 % BLOCK[qtype] != 0:
        return "F16"
    return qtype


def image_model(src, name, arch, label, qtype, shape_fix, note, prefix=None, rel_out=None):
    rel, tensors = read(src)
    if prefix is not None:  # a checkpoint's diffusion model, the prefix stripped (convert.py's strip_prefix)
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        rel = rel_out
    out = {}
    for key, (dt, shape) in tensors.items():
        n = math.prod(shape)
        base = "BF16" if dt == "BF16" else "F16"
        if dt in ("F32", "BF16") and (len(shape) == 1 or n <= 1024):
            base = "F32"
        ne = list(reversed(shape))
        if shape_fix and len(shape) > 1 and n >= 512 and n % 256 == 0 and shape[-1] % 256 != 0:
            ne = [256, n // 256]
        out[key] = [quantised(key, ne[0], len(ne), base, qtype), shape]
    meta = {"general.architecture": arch, "general.quantization_version": "2"}
    write(name, f"{note} {label}: derived from {src} by the rules of city96/ComfyUI-GGUF tools/convert.py and "
          "tools/lcpp.patch (see tools/reference/gen_gguf_keyshapes.py); not read from the published file",
          os.path.splitext(rel)[0] + "-" + label + ".gguf", out, meta)


T5_LAYERS = {
    "layer.0.SelfAttention.q": "attn_q", "layer.0.SelfAttention.k": "attn_k",
    "layer.0.SelfAttention.v": "attn_v", "layer.0.SelfAttention.o": "attn_o",
    "layer.0.layer_norm": "attn_norm", "layer.0.SelfAttention.relative_attention_bias": "attn_rel_b",
    "layer.1.DenseReluDense.wi_0": "ffn_gate", "layer.1.DenseReluDense.wi_1": "ffn_up",
    "layer.1.DenseReluDense.wo": "ffn_down", "layer.1.layer_norm": "ffn_norm",
}


def t5(qtype):
    _, tensors = read("t5xxl.component")
    out = {}
    for key, (dt, shape) in tensors.items():
        if key == "encoder.embed_tokens.weight":
            continue
        if key == "shared.weight":
            name = "token_embd.weight"
        elif key == "encoder.final_layer_norm.weight":
            name = "enc.output_norm.weight"
        else:
            parts = key.split(".")  # encoder.block.N.<layer...>.weight
            name = f"enc.blk.{parts[2]}.{T5_LAYERS['.'.join(parts[3:-1])]}.{parts[-1]}"
        base = "F32" if len(shape) == 1 else "F16"
        t = base if "attn_rel_b" in name else quantised(name, shape[-1], len(shape), base, qtype)
        out[name] = [t, shape]
    meta = {"general.architecture": "t5encoder", "general.name": "T5 v1.1 XXL encoder"}
    write(f"t5xxl-encoder-{qtype}.component",
          f"city96/t5-v1_1-xxl-encoder-gguf {qtype}: derived from t5xxl.component by the rules of llama.cpp's "
          "convert_hf_to_gguf.py (T5EncoderModel) and llama-quantize (see tools/reference/gen_gguf_keyshapes.py); "
          "not read from the published file",
          f"t5-v1_1-xxl-encoder-{qtype}.gguf", out, meta)


os.makedirs(OUT, exist_ok=True)
for label, q in (("Q8_0", "Q8_0"), ("Q4_K_S", "Q4_K")):
    image_model("flux1-dev.single", f"flux1-dev-{label}.component", "flux", label, q, False, "city96/FLUX.1-dev-gguf")
    image_model("sdxl-unet.component", f"sdxl-unet-{label}.component", "sdxl", label, q, True, "SDXL base UNet GGUF")
for size in ("large", "medium"):
    # city96/stable-diffusion-3.5-large-gguf (and -medium): the transformer of
    # Stability's checkpoint, bare names; Large's 2432-wide rows are no whole K
    # block, so the published files are of the 32-element types.
    image_model(f"sd35-{size}.single", f"sd35-{size}-Q8_0.component", "sd3", "Q8_0", "Q8_0", False,
                f"city96/stable-diffusion-3.5-{size}-gguf", prefix="model.diffusion_model.",
                rel_out=f"sd3.5_{size}.safetensors")
t5("Q8_0")
