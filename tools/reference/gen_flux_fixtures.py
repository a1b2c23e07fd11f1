#!/usr/bin/env python3
"""Flux.1 transformer fixtures from diffusers' FluxTransformer2DModel.

Two tiny random models in the exact Flux.1 architecture (patch_size 1,
in_channels 64, 2 double-stream and 2 single-stream blocks, 2 heads of 16,
joint_attention_dim 32, pooled_projection_dim 24, axes_dims_rope (4, 6, 6)):
"dev" with guidance_embeds=True and "schnell" with guidance_embeds=False.
Init is calibrated so that nothing is degenerate: Linear weights
N(0, 1/fan_in), biases N(0, 0.1), RMSNorm weights U(0.6, 1.4); every
parameter is rounded to float16 and stored as F16 in diffusers' names.
The models run in float32 on the CPU.

Inputs follow FluxPipeline: a latent [B, 16, H, W] is packed by
_pack_latents into [B, H/2·W/2, 64] tokens, img_ids are
_prepare_latent_image_ids (0, row, col) and txt_ids zeros, the timestep is
sigma (diffusers multiplies by 1000 inside), guidance 3.5.

Output (DIR): dev.safetensors, schnell.safetensors (F16 weights),
cases.json (configs, per case: model, sizes, timesteps, guidance, ids),
cases.safetensors (float32: "<case>/latent", "<case>/hidden_states"
(packed latent), "<case>/encoder_hidden_states", "<case>/pooled",
"<case>/img_ids", "<case>/txt_ids", "<case>/out" [B, N, 64],
"<case>/out_unpacked" [B, 16, H, W]; for case "dev_a" also the
intermediates "dev_a/temb", "dev_a/context", "dev_a/x", "dev_a/rope_cos",
"dev_a/rope_sin", "dev_a/double<i>/{txt,img}", "dev_a/single<i>/{txt,img}").

Usage (no network): PYTHONPATH=.ref/diffusers_src/src python3 tools/reference/gen_flux_fixtures.py --out DIR
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

import diffusers
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

BASE = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
            axes_dims_rope=(4, 6, 6))


def pack_latents(latents, b, c, h, w):
    # FluxPipeline._pack_latents
    latents = latents.view(b, c, h // 2, 2, w // 2, 2)
    latents = latents.permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(latents, h, w):
    # FluxPipeline._unpack_latents with the latent (not pixel) size
    b, n, c = latents.shape
    latents = latents.view(b, h // 2, w // 2, c // 4, 2, 2)
    latents = latents.permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, c // 4, h, w)


def image_ids(h, w):
    # FluxPipeline._prepare_latent_image_ids(batch, h, w) with h, w = latent size // 2
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def tiny_model(guidance, seed):
    torch.manual_seed(seed)
    m = FluxTransformer2DModel(guidance_embeds=guidance, **BASE).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
            elif name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or \
                    name.endswith("norm_added_q.weight") or name.endswith("norm_added_k.weight"):
                p.uniform_(0.6, 1.4)
            elif name.endswith(".bias"):
                p.normal_(0, 0.1)
            else:
                raise SystemExit(f"unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(p.half().float())
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_grad_enabled(False)

    models = {"dev": tiny_model(True, 1234), "schnell": tiny_model(False, 4321)}
    for name, m in models.items():
        sd = {k: v.detach().half().contiguous().clone() for k, v in m.state_dict().items()}
        save_file(sd, os.path.join(args.out, f"{name}.safetensors"), metadata={"format": "pt"})

    # (name, model, batch, latent h, w, text tokens, timesteps, guidance, ids variant)
    specs = [
        ("dev_a", "dev", 2, 8, 8, 7, [1.0, 0.35], [3.5, 3.5], "pipeline"),
        ("dev_b", "dev", 1, 6, 10, 5, [0.6], [2.0], "offset"),
        ("schnell_a", "schnell", 2, 8, 8, 7, [1.0, 0.35], None, "pipeline"),
    ]
    gen = torch.Generator("cpu").manual_seed(7)
    cases, tensors = [], {}
    for cname, mname, b, h, w, nt, ts, gs, ids_kind in specs:
        m = models[mname]
        latent = torch.randn(b, 16, h, w, generator=gen)
        hs = pack_latents(latent, b, 16, h, w)
        enc = torch.randn(b, nt, 32, generator=gen)
        pooled = torch.randn(b, 24, generator=gen)
        img_ids = image_ids(h // 2, w // 2)
        txt_ids = torch.zeros(nt, 3)
        if ids_kind == "offset":  # Kontext-style first axis and non-zero text positions
            img_ids[:, 0] = 1.0
            txt_ids[:, 0] = torch.arange(nt).float() * 0.5
            txt_ids[:, 2] = 3.0
        timestep = torch.tensor(ts, dtype=torch.float32)
        guidance = torch.tensor(gs, dtype=torch.float32) if gs is not None else None

        inter = {}
        hooks = []
        if cname == "dev_a":
            hooks.append(m.time_text_embed.register_forward_hook(lambda mod, i, o: inter.__setitem__("temb", o)))
            hooks.append(m.context_embedder.register_forward_hook(lambda mod, i, o: inter.__setitem__("context", o)))
            hooks.append(m.x_embedder.register_forward_hook(lambda mod, i, o: inter.__setitem__("x", o)))

            def rope_hook(mod, i, o):
                inter["rope_cos"], inter["rope_sin"] = o
            hooks.append(m.pos_embed.register_forward_hook(rope_hook))
            for kind, blocks in (("double", m.transformer_blocks), ("single", m.single_transformer_blocks)):
                for j, blk in enumerate(blocks):
                    def bh(mod, i, o, key=f"{kind}{j}"):
                        inter[key + "/txt"], inter[key + "/img"] = o
                    hooks.append(blk.register_forward_hook(bh))
        out = m(hidden_states=hs, encoder_hidden_states=enc, pooled_projections=pooled, timestep=timestep,
                img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]
        for hk in hooks:
            hk.remove()
        for k, v in {"latent": latent, "hidden_states": hs, "encoder_hidden_states": enc, "pooled": pooled,
                     "img_ids": img_ids, "txt_ids": txt_ids, "out": out,
                     "out_unpacked": unpack_latents(out, h, w)}.items():
            tensors[f"{cname}/{k}"] = v.float().contiguous().clone()
        for k, v in inter.items():
            tensors[f"{cname}/{k}"] = v.float().contiguous().clone()
        print(f"{cname}: out {tuple(out.shape)} std {out.std():.4f} absmax {out.abs().max():.4f}; "
              f"input std {hs.std():.4f}; out-vs-input rel {((out - hs).norm() / hs.norm()):.4f}")
        cases.append({"name": cname, "model": mname, "batch": b, "latent_h": h, "latent_w": w,
                      "text_tokens": nt, "timesteps": ts, "guidance": gs, "ids": ids_kind})
    save_file(tensors, os.path.join(args.out, "cases.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__,
                   "configs": {n: {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(m.config).items()
                                   if not k.startswith("_")} for n, m in models.items()},
                   "cases": cases}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
