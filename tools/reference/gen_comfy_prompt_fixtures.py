#!/usr/bin/env python3
"""Prompt-encoding fixtures from ComfyUI's own SD1 tokenizer and weighting.

ComfyUI's comfy/sd1_clip.py (SDTokenizer.tokenize_with_weights and
ClipTokenWeightEncoder.encode_token_weights) is loaded from a local copy
(--comfy, e.g. .ref/comfy; never committed) with its heavy imports stubbed,
and driven with the tiny model's tokenizer and CLIP text encoder
(transformers, float32, CPU). For each prompt it stores the token ids and
weights of every 77-token window and the weighted hidden states
(ComfyUI's "last" layer with the final layer norm).

Output: DIR/comfy_prompts.safetensors (keys "p<i>/ids", "p<i>/weights",
"p<i>/embeds") and DIR/comfy_prompts.json (the prompts, in order).

Usage (no network):
    python3 tools/reference/gen_comfy_prompt_fixtures.py \\
        --model testdata/reference/sd1-tiny-a/diffusers --comfy .ref/comfy --out DIR
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "a (red:1.5) cat",
    "((masterpiece)), best quality, a lighthouse at dusk",
    "(a (small:0.5) house:1.3) on a hill",
    "\\(literal parentheses\\) and (weighted:0.8)",
    "(x:abc) unbalanced ( paren",
    " ".join(["a"] * 100),
    " ".join(["a"] * 74) + " it's",
    " ".join(["a"] * 74) + " (it's:1.2)",
    " ".join(["word"] * 70) + " (!a!a!a!a!a!a!a!a!a:1.1) tail",
    "naïve café, emoji 🐱, UPPER case",
    "",
]


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_sd1_clip(comfy_root):
    pkg = stub("comfy")
    pkg.__path__ = [os.path.join(comfy_root, "comfy")]
    stub("comfy.ops")
    stub("comfy.clip_model", CLIPTextModel=object)
    stub("comfy.model_management", intermediate_device=lambda: torch.device("cpu"))
    pkg.ops = sys.modules["comfy.ops"]
    pkg.clip_model = sys.modules["comfy.clip_model"]
    pkg.model_management = sys.modules["comfy.model_management"]
    path = os.path.join(comfy_root, "comfy", "sd1_clip.py")
    spec = importlib.util.spec_from_file_location("comfy.sd1_clip", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["comfy.sd1_clip"] = mod
    spec.loader.exec_module(mod)
    return mod


class Encoder:
    """Stands in for ComfyUI's SDClipModel: encode(list of token lists)."""

    def __init__(self, text_encoder):
        self.te = text_encoder
        self.special_tokens = {"start": 49406, "end": 49407, "pad": 49407}

    def encode(self, token_lists):
        ids = torch.tensor(token_lists, dtype=torch.long)
        with torch.no_grad():
            out = self.te(ids).last_hidden_state  # after the final layer norm
        return out.float(), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sd1 = load_sd1_clip(args.comfy)
    tok = sd1.SDTokenizer(tokenizer_path=os.path.join(args.model, "tokenizer"), embedding_directory=None)
    te = CLIPTextModel.from_pretrained(os.path.join(args.model, "text_encoder")).float().eval()
    enc = Encoder(te)
    tensors = {}
    for i, p in enumerate(PROMPTS):
        pairs = tok.tokenize_with_weights(p)
        ids = torch.tensor([[t for t, _ in chunk] for chunk in pairs], dtype=torch.int64)
        w = torch.tensor([[float(x) for _, x in chunk] for chunk in pairs], dtype=torch.float32)
        emb, _ = sd1.ClipTokenWeightEncoder.encode_token_weights(enc, pairs)
        tensors[f"p{i}/ids"] = ids.contiguous()
        tensors[f"p{i}/weights"] = w.contiguous()
        tensors[f"p{i}/embeds"] = emb.detach().float().contiguous()
        print(f"p{i}: {len(pairs)} window(s), weights {sorted(set(w.flatten().tolist()))[:4]}, embeds {tuple(emb.shape)}")
    save_file(tensors, os.path.join(args.out, "comfy_prompts.safetensors"))
    with open(os.path.join(args.out, "comfy_prompts.json"), "w") as f:
        json.dump(PROMPTS, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
