#!/usr/bin/env python3
"""Tiny Z-Image (Turbo) pipeline and diffusers ZImagePipeline reference cases.

Builds a tiny Z-Image with diffusers' own ZImageTransformer2DModel and transformers' Qwen3ForCausalLM and runs
diffusers' ZImagePipeline (FlowMatchEulerDiscreteScheduler, shift 3.0, no dynamic shifting, as Z-Image-Turbo's
scheduler_config.json) in float32 on the CPU:

- text_encoder: a NEW tiny Qwen3ForCausalLM (hidden 32, MLP 64, 3 layers, 4 query / 2 key-value heads of 8, RoPE
  theta 1e6, eps 1e-6, tied embeddings) with the real Qwen3 vocabulary size 151936, because the real tokenizer
  is used; gen_qwenllm_fixtures' calibration. Every embedding row that no case feeds the encoder (the ids of all
  templated prompts and negatives, padding included) is zeroed BEFORE the cases run, so that the model that ran is
  exactly the one rebuilt from embed.safetensors (the rows that are used) with zeros elsewhere;
- tokenizer: transformers' Qwen2Tokenizer from the bundled engine/tokenizer/qwen25_*.gz with Qwen3's added tokens
  (gen_qwen_tokenizer_fixtures.make_folder "qwen3"), chat template: Qwen3's (--qwen3-template, not committed);
- transformer: a NEW tiny ZImageTransformer2DModel (dim 64, 2 heads of 32 = RoPE axes 8+12+12, 2 main layers,
  2 noise and 2 context refiners, caption width 32, patch 2); unit-scale random weights (1/sqrt(fan_in)
  matrices, norms around 1, small biases, unit-scale x_pad_token / cap_pad_token), the final linear scaled so the
  first step's velocity has std 1;
- vae: the tiny 16-channel FLUX.1 VAE of testdata/reference/flux-pipe/dev/vae (--vae), loaded, not copied.

Weights are rounded to float16 so the F16 files hold them exactly.

Layouts written (--out):
- turbo/: model_index.json, scheduler/scheduler_config.json, transformer/ (save_pretrained, F16),
  text_encoder/config.json + model.safetensors (F16, released names model.layers.N.*, model.norm.weight; no
  model.embed_tokens.weight, no lm_head); no tokenizer/ (darkroom bundles Qwen3's), no vae/ (the test links
  flux-pipe/dev/vae);
- embed.safetensors: "ids" (int64, sorted) and "rows" ([n, 32] F16), the embedding rows that are not zero;
- comfy/z_image_tiny.safetensors: the transformer in ComfyUI's NextDiT names (no prefix, attention.qkv fused
  q||k||v, attention.out, attention.q_norm / k_norm, x_embedder, final_layer), F16. Converted back with diffusers'
  own convert_z_image_transformer_checkpoint_to_diffusers it must give the diffusers state dict bit for bit.

Checks (failures make the script exit 1): the saved files equal the models that ran; the transformer reloads with
from_pretrained to the same state; the ComfyUI layout converts back; an encoder rebuilt from the saved files and
embed.safetensors (zeros elsewhere) reproduces a case's prompt embeddings bit for bit; the recomputed token ids
match the embedding lengths; the recomputed noise matches the transformer's first input; no image is flat.

Cases: cases.json (arguments, templated texts, token ids, sigmas, timesteps, the transformer's t per call, the
sequence lengths, tensor shapes), cases.safetensors (float32 unless said, "<case>/<what>": prompt_embeds_<i>,
negative_prompt_embeds_<i>, noise, model_out_0, latents_<k>, image [B, H, W, 3]; "debug/<what>": one transformer
forward on fixed random inputs with its intermediates).

Usage (no network; diffusers from a source tree on PYTHONPATH):
    PYTHONPATH=DIFFUSERS/src python3 tools/reference/gen_zimage_fixtures.py --tokenizer-gz engine/tokenizer \\
        --qwen3-template qwen3_chat_template.jinja --vae testdata/reference/flux-pipe/dev/vae --out DIR
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ZIMAGE_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.36.0.dev0",
                    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True,
            max_position_embeddings=2048, attention_bias=False, bos_token_id=151643, eos_token_id=151645)
ROPE_THETA = 1e6
TR = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=2,
          n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=32, rope_theta=256.0, t_scale=1000.0,
          axes_dims=[8, 12, 12], axes_lens=[1536, 64, 64])

LONG_PROMPT = ("A vast panoramic matte painting of a floating citadel above a sea of clouds at sunrise, waterfalls "
               "pouring off its terraced gardens into the golden mist below, airships with patched canvas sails "
               "docking at slender crystal spires, flocks of white birds circling the highest towers, tiny figures "
               "in flowing robes crossing rope bridges between the islands, lanterns still glowing in the arched "
               "windows, ancient stone walls covered in ivy and moss, colours of coral, amber, gold and lavender "
               "blending across the sky, a distant range of snow-capped mountains on the horizon, soft volumetric "
               "light rays cutting through the clouds, ultra detailed, sharp focus, in the style of the "
               "nineteenth-century romantic landscape painters, dramatic composition, wide angle, epic scale, "
               "award-winning concept art")
CASES = [
    dict(name="turbo", prompt='A red fox in the snow, 写着"冬天"的招牌, 35mm photo', negative_prompt=None,
         width=64, height=64, steps=8, cfg=0.0, seed=42, n=1, msl=512),
    dict(name="cfg_neg", prompt="a lighthouse on a cliff at dusk, oil painting",
         negative_prompt="blurry, low quality, watermark", width=80, height=48, steps=5, cfg=3.0, seed=7, n=2,
         msl=512),
    dict(name="long_trunc", prompt=LONG_PROMPT, negative_prompt=None, width=128, height=128, steps=4, cfg=2.0,
         seed=3, n=1, msl=64),
    dict(name="empty", prompt="", negative_prompt=None, width=64, height=64, steps=3, cfg=0.0, seed=11, n=1,
         msl=512),
]
SEQ_MULTI_OF = 32


def log(*a):
    print(*a, flush=True)


def f32(t):
    return t.detach().cpu().float().contiguous().clone()


def round_all(m):
    """Parameters rounded to float16 values; buffers (the encoder's RoPE inv_freq) stay as the library builds them."""
    with torch.no_grad():
        for t in m.parameters():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return m


def state(m):
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


def init_transformer(m, g):
    """Unit-scale random weights: 1/sqrt(fan_in) matrices, 1-D weights (all RMS norms, the caption embedder's
    included) around 1, small random biases, unit-scale pad tokens (they enter attention: they must matter)."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("x_pad_token", "cap_pad_token"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.15 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------- tokenizer --

def make_tokenizer(gz_dir, template_path, work):
    """Qwen3's tokenizer as gen_qwen_tokenizer_fixtures builds its "qwen3" folder, with Qwen3's chat template."""
    from gen_qwen_tokenizer_fixtures import Qwen2TokenizerFast, make_folder
    src = os.path.join(work, "qwen25")
    os.makedirs(src, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        with gzip.open(os.path.join(gz_dir, "qwen25_" + name + ".gz"), "rb") as fi, \
                open(os.path.join(src, name), "wb") as fo:
            shutil.copyfileobj(fi, fo)
    dst = os.path.join(work, "qwen3")
    make_folder(src, dst, "qwen3")
    tok = Qwen2TokenizerFast.from_pretrained(dst)
    with open(template_path, encoding="utf-8") as fh:
        tok.chat_template = fh.read()
    return tok


def templated(tok, prompt):
    """The text ZImagePipeline._encode_prompt tokenizes for one prompt."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)


def tokenize(tok, prompt, msl):
    enc = tok([templated(tok, prompt)], padding="max_length", max_length=msl, truncation=True)
    ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
    return ids, mask


def texts_of(c):
    """Every prompt the pipeline encodes for a case (negatives only when CFG runs; None is "")."""
    out = [c["prompt"]]
    if c["cfg"] > 0:
        out.append(c["negative_prompt"] if c["negative_prompt"] is not None else "")
    return out


# ------------------------------------------------------ native layout --

def to_comfy(sd):
    """diffusers ZImageTransformer2DModel names -> ComfyUI's NextDiT names (the inverse of
    single_file_utils.convert_z_image_transformer_checkpoint_to_diffusers)."""
    out, used = {}, set()
    for k in sorted(sd):
        if k in used:
            continue
        if k.endswith(".attention.to_q.weight"):
            base = k[: -len("to_q.weight")]
            parts = [base + s + ".weight" for s in ("to_q", "to_k", "to_v")]
            out[base + "qkv.weight"] = torch.cat([sd[p] for p in parts], dim=0).contiguous()
            used.update(parts)
            continue
        if ".attention.to_k." in k or ".attention.to_v." in k:
            continue  # fused with to_q above
        n = k
        for a, b in ((".attention.to_out.0.", ".attention.out."), (".attention.norm_q.", ".attention.q_norm."),
                     (".attention.norm_k.", ".attention.k_norm.")):
            n = n.replace(a, b)
        if n.startswith("all_x_embedder.2-1."):
            n = "x_embedder." + n[len("all_x_embedder.2-1."):]
        elif n.startswith("all_final_layer.2-1."):
            n = "final_layer." + n[len("all_final_layer.2-1."):]
        if n in out:
            raise KeyError(f"{n} written twice")
        out[n] = sd[k].contiguous()
        used.add(k)
    left = sorted(set(sd) - used)
    if left:
        raise KeyError(f"diffusers transformer keys not mapped: {left}")
    return out


# ------------------------------------------------------------------ cases --

def run_case(pipe, c, tensors):
    name = c["name"]
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], height=c["height"], width=c["width"],
              num_inference_steps=c["steps"], guidance_scale=c["cfg"], num_images_per_prompt=c["n"],
              max_sequence_length=c["msl"])
    lat, calls = [], []
    tr = pipe.transformer
    orig = tr.forward

    def fwd(x, t, cap_feats, *a, **k):
        out = orig(x, t, cap_feats, *a, **k)
        rec = dict(t=[float(v) for v in t], cap_lens=[len(ci) for ci in cap_feats])
        if not calls:
            rec.update(x=[xi.detach().clone() for xi in x], cap=[ci.detach().clone() for ci in cap_feats],
                       out=[o.detach().clone() for o in (out[0] if isinstance(out, tuple) else out.sample)])
        calls.append(rec)
        return out

    def cb(p, i, t, k):
        lat.append(k["latents"].detach().clone())
        return {}

    tr.forward = fwd
    try:
        g = torch.Generator("cpu").manual_seed(c["seed"])
        noise = pipe.prepare_latents(c["n"], 16, c["height"], c["width"], torch.float32, "cpu",
                                     torch.Generator("cpu").manual_seed(c["seed"]))
        out = pipe(**kw, generator=g, output_type="np", callback_on_step_end=cb)
    finally:
        del tr.forward
    first = calls[0]
    b = c["n"]
    rows = len(first["cap"])
    cfg_ran = rows == 2 * b
    problems = []
    if cfg_ran != (c["cfg"] > 0):
        problems.append(f"CFG ran {cfg_ran} for guidance {c['cfg']}")
    t = {}
    for i in range(b):
        t[f"{name}/prompt_embeds_{i}"] = f32(first["cap"][i])
        if cfg_ran:
            t[f"{name}/negative_prompt_embeds_{i}"] = f32(first["cap"][b + i])
    t[f"{name}/noise"] = f32(noise)
    x0 = torch.stack([xi.squeeze(1) for xi in first["x"][:b]])
    if not torch.equal(x0, noise):
        problems.append("recomputed noise != the transformer's first input")
    t[f"{name}/model_out_0"] = f32(torch.stack([o.squeeze(1) for o in first["out"]]))
    for i, l in enumerate(lat):
        t[f"{name}/latents_{i}"] = f32(l)
    img = torch.from_numpy(out.images).float()
    t[f"{name}/image"] = img.contiguous()
    tensors.update(t)

    token_ids, texts = {}, {}
    for role, text in zip(("prompt", "negative_prompt"), texts_of(c)):
        ids, mask = tokenize(pipe.tokenizer, text, c["msl"])
        kept = [i for i, m in zip(ids, mask) if m]
        token_ids[role] = kept
        texts[role] = templated(pipe.tokenizer, text)
        want = first["cap"][0 if role == "prompt" else b].shape[0]
        if len(kept) != want:
            problems.append(f"{role}: {len(kept)} masked ids but {want} embedding rows")
    pad = lambda n: n + (-n) % SEQ_MULTI_OF  # noqa: E731
    hx, wx = noise.shape[2] // 2, noise.shape[3] // 2
    seq = dict(cap_lens=first["cap_lens"], cap_padded=[pad(n) for n in first["cap_lens"]], x_tokens=hx * wx,
               x_padded=pad(hx * wx), x_grid=[1, hx, wx])
    meta = dict(c, negative_used=texts_of(c)[1] if cfg_ran else None, cfg_ran=cfg_ran, texts=texts,
                token_ids=token_ids, sigmas=[float(s) for s in pipe.scheduler.sigmas],
                timesteps=[float(x) for x in pipe.scheduler.timesteps], model_t=[k["t"] for k in calls],
                calls=len(calls), sequence=seq, problems=problems,
                stats=dict(image_std=float(img.std()), image_mean=float(img.mean()),
                           clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                           latent_std=float(lat[-1].std()), latent_mean=float(lat[-1].mean()),
                           model_out_0_std=float(t[f"{name}/model_out_0"].std())),
                tensors={k.split("/", 1)[1]: list(v.shape) for k, v in t.items()})
    log(f"{name}: sigmas {[round(s, 5) for s in meta['sigmas']]} calls {len(calls)} rows {rows} seq {seq} "
        f"stats {json.dumps(meta['stats'])} problems {problems}")
    return meta


def debug_forward(tr, tensors):
    """One forward on fixed random inputs with the intermediates a Go implementation needs to bisect."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn((16, 1, 8, 8), generator=g)
    cap = torch.randn((20, 32), generator=g)
    tt = torch.tensor([0.3])
    rec, hooks = {}, []

    def save(key):
        def h(m, a, o):
            rec[key] = (o[0] if isinstance(o, tuple) else o).detach().clone()
        return h

    def save_in(key, freqs_key=None):
        def h(m, a):
            rec[key] = a[0].detach().clone()
            if freqs_key:
                rec[freqs_key] = torch.view_as_real(a[2].detach().clone()).contiguous()
        return h

    ex, fl = tr.all_x_embedder["2-1"], tr.all_final_layer["2-1"]
    hooks.append(tr.t_embedder.register_forward_hook(save("t_emb")))
    hooks.append(ex.register_forward_pre_hook(lambda m, a: rec.__setitem__("x_patches", a[0].detach().clone())))
    hooks.append(ex.register_forward_hook(save("x_embedded")))
    hooks.append(tr.noise_refiner[0].register_forward_pre_hook(save_in("x_in", "x_freqs")))
    for i, blk in enumerate(tr.noise_refiner):
        hooks.append(blk.register_forward_hook(save(f"noise_refiner_{i}")))
    hooks.append(tr.cap_embedder.register_forward_hook(save("cap_embedded")))
    hooks.append(tr.context_refiner[0].register_forward_pre_hook(save_in("cap_in", "cap_freqs")))
    for i, blk in enumerate(tr.context_refiner):
        hooks.append(blk.register_forward_hook(save(f"context_refiner_{i}")))
    hooks.append(tr.layers[0].register_forward_pre_hook(save_in("unified_in", "unified_freqs")))
    for i, blk in enumerate(tr.layers):
        hooks.append(blk.register_forward_hook(save(f"layer_{i}")))
    hooks.append(fl.register_forward_hook(save("final_layer")))
    try:
        out = tr([x.clone()], tt.clone(), [cap.clone()], return_dict=False)[0][0]
    finally:
        for h in hooks:
            h.remove()
    p = tr.patchify_and_embed([x.clone()], [cap.clone()], 2, 1)
    _, _, _, x_pos, cap_pos, x_padm, cap_padm = p
    t = {"debug/x": x, "debug/cap_feats": cap, "debug/t": tt, "debug/out": f32(out)}
    for k, v in rec.items():
        t[f"debug/{k}"] = f32(v)
    t["debug/x_pos_ids"] = x_pos[0].to(torch.int32).contiguous()
    t["debug/cap_pos_ids"] = cap_pos[0].to(torch.int32).contiguous()
    t["debug/x_pad_mask"] = x_padm[0].to(torch.int32).contiguous()
    t["debug/cap_pad_mask"] = cap_padm[0].to(torch.int32).contiguous()
    tensors.update(t)
    notes = {
        "x": "the one list element [C=16, F=1, H=8, W=8]; t = 0.3 (the transformer's t: 1 - sigma), cap_feats [20, 32]",
        "t_emb": "t_embedder(t * t_scale) [1, 64], the adaLN input of the noise refiner, main layers, final layer",
        "x_patches": "patchified x, padded to a multiple of 32 by repeating the last patch [32, 64] "
                     "(patch vector order: pF, pH, pW, C)",
        "x_embedded": "all_x_embedder['2-1'] output before the pad token substitution [32, 64]",
        "x_in": "the noise refiner's input: x_embedded with x_pad_token at the padded rows [1, 32, 64]",
        "x_freqs": "RoPE of the image tokens as (cos, sin) pairs [1, 32, 16, 2] (complex freqs_cis viewed real)",
        "cap_embedded": "cap_embedder output (RMSNorm then Linear) of the caption padded to 32 by repeating the "
                        "last row, before the pad token substitution [32, 64]",
        "cap_in": "the context refiner's input: cap_embedded with cap_pad_token at the padded rows [1, 32, 64]",
        "cap_freqs": "RoPE of the caption tokens [1, 32, 16, 2]",
        "unified_in": "[x (32 rows, pads included), cap (32 rows, pads included)] after the refiners [1, 64, 64]",
        "unified_freqs": "[x_freqs, cap_freqs] [1, 64, 16, 2]",
        "layer_<i>": "the unified sequence after main layer i [1, 64, 64]",
        "final_layer": "final layer output [1, 64, 64] (first 16 rows are the image patches)",
        "out": "the transformer's output [16, 1, 8, 8]",
        "x_pos_ids": "patchify_and_embed's image position ids (int32 [32, 3]: (cap_padded + 1, h, w); pads "
                     "(0, 0, 0))",
        "cap_pos_ids": "patchify_and_embed's caption position ids (int32 [cap_padded + pad, 3]: (1 + i, 0, 0) "
                       "for i < cap_padded, then pad rows (0, 0, 0) that _prepare_sequence cuts off: caption pad "
                       "tokens keep the continuing positions)",
        "x_pad_mask": "1 at padded image rows (int32)",
        "cap_pad_mask": "1 at padded caption rows (int32)",
    }
    shapes = {k.split("/", 1)[1]: list(v.shape) for k, v in t.items()}
    log(f"debug: {shapes}")
    try:
        pr = probes(tr, x, cap, tt, out)
    except Exception as e:  # noqa: BLE001 - diagnostics only
        traceback.print_exc(limit=8)
        pr = f"failed: {type(e).__name__}: {e}"
    return dict(shapes=shapes, notes=notes, probes=pr)


def probes(tr, x, cap, tt, out):
    """How much the pad tokens matter, and whether a row's output depends on what it is batched with."""
    import copy
    res = {}
    for name in ("x_pad_token", "cap_pad_token"):
        m = copy.deepcopy(tr)
        with torch.no_grad():
            getattr(m, name).zero_()
        o = m([x.clone()], tt.clone(), [cap.clone()], return_dict=False)[0][0]
        res[f"max_abs_change_with_{name}_zeroed"] = float((o - out).abs().max())
    g = torch.Generator().manual_seed(6)
    cap2 = torch.randn((45, 32), generator=g)
    x2 = torch.randn((16, 1, 8, 8), generator=g)
    both = tr([x.clone(), x2], torch.tensor([0.3, 0.6]), [cap.clone(), cap2], return_dict=False)[0]
    alone2 = tr([x2], torch.tensor([0.6]), [cap2], return_dict=False)[0][0]
    res["batched_vs_alone_row0_max_abs_diff"] = float((both[0] - out).abs().max())
    res["batched_vs_alone_row1_max_abs_diff"] = float((both[1] - alone2).abs().max())
    res["out_std"] = float(out.std())
    log(f"probes: {res}")
    return res


# ------------------------------------------------------------------- main --

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-gz", required=True, help="folder with qwen25_{vocab.json,merges.txt,"
                    "tokenizer_config.json}.gz (engine/tokenizer)")
    ap.add_argument("--qwen3-template", required=True)
    ap.add_argument("--vae", required=True, help="testdata/reference/flux-pipe/dev/vae")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from gen_flux_pipeline_fixtures import compare_sd, read_st
    from gen_qwenllm_fixtures import calibrate as calibrate_qwen

    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp()
    failures, checks = [], {}
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)

    # tokenizer, and every id a case feeds the encoder
    tok = make_tokenizer(args.tokenizer_gz, args.qwen3_template, work)
    pad_id = tok.pad_token_id
    used = {pad_id}
    for c in CASES:
        for text in texts_of(c):
            ids, _ = tokenize(tok, text, c["msl"])
            used.update(ids)
    used = sorted(used)
    log(f"tokenizer {type(tok).__name__} pad {tok.pad_token!r} {pad_id} padding_side {tok.padding_side}; "
        f"{len(used)} distinct ids used")

    # text encoder
    cfg = Qwen3Config(rope_theta=ROPE_THETA, **TEXT)
    if isinstance(getattr(cfg, "rope_parameters", None), dict):
        cfg.rope_parameters["rope_theta"] = ROPE_THETA
    te = Qwen3ForCausalLM(cfg).eval()
    calibrate_qwen(te, args.seed)
    emb = te.model.embed_tokens.weight
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[torch.tensor(used)] = True
    with torch.no_grad():
        emb[~keep] = 0
    round_all(te.float().eval())
    log(f"lm_head tied to the embedding: {te.lm_head.weight.data_ptr() == emb.data_ptr()}")

    # which hidden state the pipeline takes
    probe = {}
    hk = te.model.layers[TEXT["num_hidden_layers"] - 2].register_forward_hook(
        lambda m, a, o: probe.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach().clone()))
    ids0, mask0 = tokenize(tok, CASES[0]["prompt"], 64)
    hs = te(input_ids=torch.tensor([ids0]), attention_mask=torch.tensor([mask0]).bool(),
            output_hidden_states=True).hidden_states
    hk.remove()
    hidden_note = dict(n_hidden_states=len(hs), minus2_is_output_of_layer=TEXT["num_hidden_layers"] - 2,
                       equal=bool(torch.equal(hs[-2], probe["h"])))
    log(f"hidden_states: {hidden_note}")
    if not hidden_note["equal"]:
        failures.append("hidden_states[-2] is not the second-to-last layer's output")

    # transformer
    tr = ZImageTransformer2DModel(**TR)
    init_transformer(tr, g)
    tr = round_all(tr.float().eval())
    vae = AutoencoderKL.from_pretrained(args.vae).float().eval()
    sched = FlowMatchEulerDiscreteScheduler.from_config(ZIMAGE_SCHEDULER)
    pipe = ZImagePipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=tr)
    pipe.set_progress_bar_config(disable=True)

    # calibrate: the final linear scaled so the first step's velocity has std 1
    pe, _ = pipe.encode_prompt(CASES[0]["prompt"], device="cpu", do_classifier_free_guidance=False)
    z = torch.randn((1, 16, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    fl = tr.all_final_layer["2-1"].linear
    for _ in range(2):
        v = tr(list(z.unbind(0)), torch.zeros(1), pe, return_dict=False)[0][0]
        s = 1.0 / float(v.std())
        fl.weight.mul_(s)
        fl.bias.mul_(s)
    round_all(tr)
    v = tr(list(z.unbind(0)), torch.zeros(1), pe, return_dict=False)[0][0]
    calib = dict(velocity_std=float(v.std()), velocity_mean=float(v.mean()))
    log(f"calibrated transformer: {calib}")

    # the diffusers folder
    turbo = os.path.join(out_dir, "turbo")
    shutil.rmtree(turbo, ignore_errors=True)
    os.makedirs(os.path.join(turbo, "scheduler"))
    os.makedirs(os.path.join(turbo, "text_encoder"))
    with open(os.path.join(turbo, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(ZIMAGE_SCHEDULER, f, indent=2)
    with open(os.path.join(turbo, "model_index.json"), "w") as f:
        json.dump({"_class_name": "ZImagePipeline", "_diffusers_version": diffusers.__version__,
                   "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                   "text_encoder": ["transformers", "Qwen3Model"], "tokenizer": ["transformers", "Qwen2Tokenizer"],
                   "transformer": ["diffusers", "ZImageTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]},
                  f, indent=2)
    tr.to(torch.float16).save_pretrained(os.path.join(turbo, "transformer"), safe_serialization=True)
    tr.to(torch.float32)
    tdir = os.path.join(turbo, "transformer")
    fn = [x for x in os.listdir(tdir) if x.endswith(".safetensors")][0]
    saved = {k: v.float() for k, v in read_st(os.path.join(tdir, fn)).items()}
    checks["transformer_saved"] = compare_sd("turbo/transformer == in-memory", saved, state(tr))["ok"]
    back = ZImageTransformer2DModel.from_pretrained(tdir, torch_dtype=torch.float32)
    checks["transformer_from_pretrained"] = compare_sd("from_pretrained == in-memory", state(back), state(tr))["ok"]
    del back

    te_sd = {k: v.half().contiguous() for k, v in te.state_dict().items()
             if k.startswith("model.") and k != "model.embed_tokens.weight"}
    save_file(te_sd, os.path.join(turbo, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    te_cfg = json.loads(cfg.to_json_string())
    te_cfg["architectures"] = ["Qwen3ForCausalLM"]
    te_cfg["rope_theta"] = ROPE_THETA  # the transformers 4 spelling too (the released config.json's)
    te_cfg.pop("_attn_implementation_autoset", None)
    with open(os.path.join(turbo, "text_encoder", "config.json"), "w") as f:
        json.dump(te_cfg, f, indent=2)
    ids_t = torch.tensor(used, dtype=torch.int64)
    save_file({"ids": ids_t, "rows": emb[ids_t].half().contiguous()}, os.path.join(out_dir, "embed.safetensors"))

    # ComfyUI's layout, proved with diffusers' own converter
    comfy = os.path.join(out_dir, "comfy")
    shutil.rmtree(comfy, ignore_errors=True)
    os.makedirs(comfy)
    sd16 = {k: v.half() for k, v in state(tr).items()}
    nat = to_comfy(sd16)
    save_file(nat, os.path.join(comfy, "z_image_tiny.safetensors"))
    conv = sfu.convert_z_image_transformer_checkpoint_to_diffusers(dict(read_st(os.path.join(comfy,
                                                                                         "z_image_tiny.safetensors"))))
    checks["comfy_to_diffusers"] = compare_sd("comfy/z_image_tiny -> diffusers", conv, sd16)["ok"]
    comfy_keys = sorted(nat)

    # cases
    tensors, manifest = {}, []
    for c in CASES:
        try:
            meta = run_case(pipe, c, tensors)
            manifest.append(meta)
            failures.extend(f"{c['name']}: {p}" for p in meta["problems"])
            if meta["stats"]["image_std"] < 0.05:
                failures.append(f"{c['name']}: flat image")
        except Exception as e:  # noqa: BLE001
            log(f"{c['name']}: FAILED {type(e).__name__}: {e}")
            traceback.print_exc(limit=8)
            failures.append(c["name"])
    try:
        debug = debug_forward(tr, tensors)
    except Exception as e:  # noqa: BLE001
        log(f"debug: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)
        failures.append("debug")
        debug = None

    # the encoder rebuilt as the Go test does: saved layers + the used rows, zeros elsewhere
    try:
        te2 = Qwen3ForCausalLM(cfg).eval()
        sd2 = {k: v.float() for k, v in read_st(os.path.join(turbo, "text_encoder", "model.safetensors")).items()}
        es = read_st(os.path.join(out_dir, "embed.safetensors"))
        full = torch.zeros((TEXT["vocab_size"], TEXT["hidden_size"]))
        full[es["ids"].long()] = es["rows"].float()
        sd2["model.embed_tokens.weight"] = full
        missing, unexpected = te2.load_state_dict(sd2, strict=False)
        te2.eval()
        pipe2 = ZImagePipeline(scheduler=sched, vae=vae, text_encoder=te2, tokenizer=tok, transformer=tr)
        ok = [k for k in missing if k != "lm_head.weight"] == [] and not unexpected
        diffs = {}
        for c in manifest:
            pe2, _ = pipe2.encode_prompt(c["prompt"], device="cpu", do_classifier_free_guidance=False,
                                         max_sequence_length=c["msl"])
            want = tensors[f"{c['name']}/prompt_embeds_0"]
            same = pe2[0].shape == want.shape and torch.equal(pe2[0].float(), want)
            diffs[c["name"]] = 0.0 if same else (float((pe2[0].float() - want).abs().max())
                                                 if pe2[0].shape == want.shape else "shape")
            ok = ok and same
        checks["text_encoder_rebuilt"] = bool(ok)
        log(f"text encoder rebuilt from the fixture files: {'IDENTICAL' if ok else 'DIFFERENT'} "
            f"(missing {missing}, unexpected {unexpected}, max |diff| {diffs})")
        if not ok:
            a, b = dict(te.named_buffers()), dict(te2.named_buffers())
            a.update(te.state_dict())
            b.update(te2.state_dict())
            log("  tensors that differ:", [k for k in a if k in b and not torch.equal(a[k].float(), b[k].float())])
    except Exception as e:  # noqa: BLE001
        log(f"rebuild check FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=8)
        checks["text_encoder_rebuilt"] = False
    for k, ok in checks.items():
        if not ok:
            failures.append(f"check {k}")

    save_file(tensors, os.path.join(out_dir, "cases.safetensors"))
    doc = dict(generator="tools/reference/gen_zimage_fixtures.py", diffusers=diffusers.__version__,
               transformers=transformers.__version__, torch=torch.__version__, seed=args.seed,
               transformer=dict(tr.config), text_encoder=te_cfg, scheduler=ZIMAGE_SCHEDULER,
               vae=dict(path="testdata/reference/flux-pipe/dev/vae", scaling_factor=vae.config.scaling_factor,
                        shift_factor=vae.config.shift_factor),
               tokenizer=dict(cls=type(tok).__name__, pad_token=tok.pad_token, pad_id=pad_id,
                              padding_side=tok.padding_side),
               embed=dict(n_ids=len(used), vocab=TEXT["vocab_size"]), hidden_states=hidden_note,
               calibration=calib, checks=checks, comfy_keys=comfy_keys,
               conventions=dict(
                   cfg="pred = pos + g * (pos - neg), only when g > 0; the pipeline steps with -pred",
                   transformer_t="t = (1000 - sigma * 1000) / 1000 in float32 (1 = clean), times t_scale 1000",
                   sigmas="linspace(1, 1/n, n) shifted by 3 (s' = 3s / (1 + 2s)), then a terminal 0",
                   prompt_embeds="hidden_states[-2] of the encoder at the attention-masked positions only",
                   latents="[B, 16, H/8, W/8]; the transformer gets [16, 1, H/8, W/8] per row"),
               cases=manifest, debug=debug, failures=failures)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False, default=str)
    shutil.rmtree(work, ignore_errors=True)
    log(f"checks: {checks}")
    log(f"failures: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
