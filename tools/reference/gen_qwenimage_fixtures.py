#!/usr/bin/env python3
"""Tiny Qwen-Image pipeline and diffusers QwenImagePipeline reference cases.

Builds a tiny Qwen-Image with diffusers' own QwenImageTransformer2DModel, transformers'
Qwen2_5_VLForConditionalGeneration and the tiny AutoencoderKLQwenImage of testdata/reference/qwenimage-vae, and
runs diffusers' QwenImagePipeline (FlowMatchEulerDiscreteScheduler with Qwen-Image's own scheduler_config.json:
dynamic exponential shift, base 256 / max 8192 tokens, shift 0.5 / 0.9, shift_terminal 0.02) in float32 on the CPU:

- text_encoder: a NEW tiny Qwen2_5_VLForConditionalGeneration (text: hidden 32, MLP 64, 3 layers, 4 query / 2
  key-value heads of 8, mrope_section [1, 1, 2], RoPE theta 1e6, eps 1e-6, untied lm_head; a one-block vision
  tower that text never reaches) with Qwen2.5-VL-7B's vocabulary size 152064, because the real tokenizer is used;
  gen_qwenllm_fixtures' calibration. Every embedding row that no case feeds the encoder is zeroed BEFORE the cases
  run, so the model that ran is exactly the one rebuilt from embed.safetensors with zeros elsewhere;
- tokenizer: transformers' Qwen2 tokenizer from the bundled engine/tokenizer/qwen25_*.gz (gen_qwen_tokenizer_fixtures
  "qwen25" folder); no chat template: the pipeline formats its own prompt_template_encode;
- transformer: a NEW tiny QwenImageTransformer2DModel (2 heads of 16 = RoPE axes 4+6+6, 2 blocks, text width 32,
  patch 2, 64 packed input channels, 16 out); unit-scale random weights (1/sqrt(fan_in) matrices, RMS norms around
  1, small biases), the final linear scaled so the first step's velocity has std 1;
- vae: testdata/reference/qwenimage-vae (--vae: vae.safetensors + qwenimage-vae.json), loaded, not copied.

Parameters (not buffers) are rounded to float16 so the F16 files hold them exactly.

Layouts written (--out):
- pipe/: model_index.json, scheduler/scheduler_config.json, transformer/ (save_pretrained, F16), vae/config.json
  only (the Go test links qwenimage-vae/vae.safetensors as vae/diffusion_pytorch_model.safetensors),
  text_encoder/config.json + model.safetensors (F16, released names model.layers.N.*, model.norm.weight; no
  model.embed_tokens.weight, no lm_head, no visual.*); no tokenizer/ (darkroom bundles Qwen2.5's);
- embed.safetensors: "ids" (int64, sorted) and "rows" ([n, 32] F16), the embedding rows that are not zero;
- cases.json / cases.safetensors (float32 unless said; "<case>/<what>": prompt_embeds, negative_prompt_embeds
  (as the transformer gets them), noise [B, 16, h, w], model_out_0 (and neg_model_out_0), latents_<k> (packed,
  as the step callback sees them), latents_unpacked_<k> [B, 16, h, w], vae_in (what vae.decode gets, after the
  latents_mean / latents_std de-normalisation, [B, 16, 1, h, w]), image [B, H, W, 3]; "debug/<what>": one
  transformer forward on fixed random inputs with its intermediates, "debug_mask/out" the same with a text mask).

Checks (failures make the script exit 1): the saved files equal the models that ran; the transformer reloads with
from_pretrained; an encoder rebuilt from the saved files and embed.safetensors reproduces every case's prompt and
negative embeddings bit for bit; the recomputed noise, packed, is the transformer's first input; the first 34
template tokens are the system prefix; no image is flat.

Usage (no network; diffusers from a source tree on PYTHONPATH):
    PYTHONPATH=DIFFUSERS/src python3 tools/reference/gen_qwenimage_fixtures.py --tokenizer-gz engine/tokenizer \\
        --vae testdata/reference/qwenimage-vae --out DIR
"""
import argparse
import functools
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

QWEN_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.35.0.dev0",
                  "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192,
                  "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
                  "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
                  "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False}
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=152064, rms_norm_eps=1e-6, max_position_embeddings=2048, tie_word_embeddings=False,
            hidden_act="silu")
ROPE_THETA = 1e6
MROPE = [1, 1, 2]
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[0], in_channels=3)
SPECIAL = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
               vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645)
TR = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
          joint_attention_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
DROP = 34

LONG_PROMPT = ("A vast panoramic matte painting of a floating citadel above a sea of clouds at sunrise, waterfalls "
               "pouring off its terraced gardens into the golden mist below, airships with patched canvas sails "
               "docking at slender crystal spires, flocks of white birds circling the highest towers, tiny figures "
               "in flowing robes crossing rope bridges between the islands, lanterns still glowing in the arched "
               "windows, ancient stone walls covered in ivy and moss, colours of coral, amber, gold and lavender "
               "blending across the sky, a distant range of snow-capped mountains on the horizon, ultra detailed")
CASES = [
    dict(name="plain", prompt='A coffee shop sign that says "Qwen 咖啡", warm light', negative_prompt=None,
         width=64, height=64, steps=6, true_cfg_scale=1.0, seed=42, n=1, msl=512),
    dict(name="true_cfg", prompt="a lighthouse on a cliff at dusk, oil painting", negative_prompt="blurry, low quality",
         width=80, height=48, steps=5, true_cfg_scale=4.0, seed=7, n=2, msl=512),
    dict(name="msl", prompt=LONG_PROMPT, negative_prompt=" ", width=64, height=64, steps=4, true_cfg_scale=3.0,
         seed=3, n=1, msl=40),
]


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


def compare_sd(what, got, want):
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    bad = [k for k in sorted(set(want) & set(got))
           if got[k].shape != want[k].shape or not torch.equal(got[k].float(), want[k].float())]
    ok = not missing and not extra and not bad
    log(f"  {what}: {'IDENTICAL' if ok else 'DIFFERENT'} ({len(want)} tensors; missing {missing[:4]}, "
        f"extra {extra[:4]}, different {bad[:4]})")
    return ok


def init_transformer(m, g):
    """Unit-scale random weights: 1/sqrt(fan_in) matrices, 1-D weights (the RMS norms) around 1, small biases."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.15 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------- tokenizer --

def make_tokenizer(gz_dir, work):
    """Qwen2.5's tokenizer as gen_qwen_tokenizer_fixtures builds its "qwen25" folder."""
    from gen_qwen_tokenizer_fixtures import Qwen2TokenizerFast, make_folder
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        with gzip.open(os.path.join(gz_dir, "qwen25_" + name + ".gz"), "rb") as fi, \
                open(os.path.join(src, name), "wb") as fo:
            shutil.copyfileobj(fi, fo)
    dst = os.path.join(work, "qwen25")
    make_folder(src, dst, "qwen25")
    return Qwen2TokenizerFast.from_pretrained(dst)


def tokenize(pipe, text):
    """The ids QwenImagePipeline._get_qwen_prompt_embeds feeds the encoder for one text (batch of one: no padding)."""
    txt = pipe.prompt_template_encode.format(text)
    enc = pipe.tokenizer([txt], max_length=pipe.tokenizer_max_length + pipe.prompt_template_encode_start_idx,
                         padding=True, truncation=True)
    return txt, enc["input_ids"][0], enc["attention_mask"][0]


def texts_of(c):
    """Every text the pipeline encodes for a case (the negative only when true CFG runs)."""
    out = [c["prompt"]]
    if c["true_cfg_scale"] > 1 and c["negative_prompt"] is not None:
        out.append(c["negative_prompt"])
    return out


# ----------------------------------------------------------- text encoder --

def make_text_config():
    from transformers import Qwen2_5_VLConfig
    variants = [  # transformers 5 names it rope_parameters, 4 rope_scaling
        dict(rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE}),
        dict(rope_theta=ROPE_THETA, rope_scaling={"type": "mrope", "mrope_section": MROPE}),
    ]
    for v in variants:
        try:
            c = Qwen2_5_VLConfig(text_config={**TEXT, **SPECIAL, **v}, vision_config=VISION,
                                 tie_word_embeddings=False, **SPECIAL)
        except Exception as e:  # noqa: BLE001 - try the other spelling
            log("config variant failed:", v, e)
            continue
        t = c.text_config if hasattr(c, "text_config") else c
        r = getattr(t, "rope_parameters", None) or getattr(t, "rope_scaling", None)
        log("qwen2.5-vl text rope:", r, "theta", getattr(t, "rope_theta", None))
        if r and list(r.get("mrope_section", [])) == MROPE:
            c._attn_implementation = "eager"
            if hasattr(t, "_attn_implementation"):
                t._attn_implementation = "eager"
            return c, t
    raise RuntimeError("no config variant kept the mrope_section")


def lm_prefix(model):
    k = next(k for k in model.state_dict() if k.endswith("layers.0.self_attn.q_proj.weight"))
    return k[: -len("layers.0.self_attn.q_proj.weight")]


def released_config(cfg, tc):
    """config.json in the released Qwen-Image text_encoder's flat style, with transformers' text_config too."""
    text = json.loads(tc.to_json_string())
    text["rope_theta"] = ROPE_THETA
    text.setdefault("head_dim", TEXT["hidden_size"] // TEXT["num_attention_heads"])
    out = dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl", **TEXT,
               rope_theta=ROPE_THETA, rope_scaling={"type": "mrope", "mrope_section": MROPE},
               vision_config=VISION, **SPECIAL, text_config=text)
    return out


# ------------------------------------------------------------------ cases --

def run_case(pipe, c, tensors):
    import numpy as np
    from diffusers.utils.torch_utils import randn_tensor
    name = c["name"]
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], true_cfg_scale=c["true_cfg_scale"],
              height=c["height"], width=c["width"], num_inference_steps=c["steps"], num_images_per_prompt=c["n"],
              max_sequence_length=c["msl"], output_type="np")
    lat, calls, st, vae_in = [], [], {}, {}
    tr, sched, vae = pipe.transformer, pipe.scheduler, pipe.vae
    orig_fwd, orig_set, orig_dec = tr.forward, sched.set_timesteps, vae.decode

    def fwd(*a, **k):
        out = orig_fwd(*a, **k)
        m = k.get("encoder_hidden_states_mask")
        rec = dict(t=[float(v) for v in k["timestep"]], txt_len=int(k["encoder_hidden_states"].shape[1]),
                   mask=None if m is None else m.tolist(), img_shapes=k.get("img_shapes"))
        if len(calls) < 2:
            rec.update(x=k["hidden_states"].detach().clone(), txt=k["encoder_hidden_states"].detach().clone(),
                       out=(out[0] if isinstance(out, tuple) else out.sample).detach().clone())
        calls.append(rec)
        return out

    @functools.wraps(orig_set)  # retrieve_timesteps inspects its signature for "sigmas"
    def set_ts(*a, **k):
        st.update(mu=k.get("mu"), sigmas_in=[float(s) for s in k["sigmas"]] if k.get("sigmas") is not None else None)
        return orig_set(*a, **k)

    def dec(z, *a, **k):
        vae_in["z"] = z.detach().clone()
        return orig_dec(z, *a, **k)

    def cb(p, i, t, k):
        lat.append(k["latents"].detach().clone())
        return {}

    tr.forward, sched.set_timesteps, vae.decode = fwd, set_ts, dec
    try:
        g = torch.Generator("cpu").manual_seed(c["seed"])
        out = pipe(**kw, generator=g, callback_on_step_end=cb)
    finally:
        del tr.forward, sched.set_timesteps, vae.decode
    b = c["n"]
    h, w = 2 * (c["height"] // 16), 2 * (c["width"] // 16)
    noise5 = randn_tensor((b, 1, 16, h, w), generator=torch.Generator("cpu").manual_seed(c["seed"]),
                          device=torch.device("cpu"), dtype=torch.float32)
    packed = pipe._pack_latents(noise5, b, 16, h, w)
    cfg_ran = len(texts_of(c)) == 2
    problems = []
    if len(calls) != c["steps"] * (2 if cfg_ran else 1):
        problems.append(f"{len(calls)} transformer calls for {c['steps']} steps, cfg {cfg_ran}")
    if not torch.equal(packed, calls[0]["x"]):
        problems.append("recomputed noise, packed, != the transformer's first input")
    t = {f"{name}/prompt_embeds": f32(calls[0]["txt"])}
    if cfg_ran:
        t[f"{name}/negative_prompt_embeds"] = f32(calls[1]["txt"])
        t[f"{name}/neg_model_out_0"] = f32(calls[1]["out"])
    t[f"{name}/noise"] = f32(noise5[:, 0])
    t[f"{name}/model_out_0"] = f32(calls[0]["out"])
    for i, l in enumerate(lat):
        t[f"{name}/latents_{i}"] = f32(l)
        t[f"{name}/latents_unpacked_{i}"] = f32(pipe._unpack_latents(l, c["height"], c["width"],
                                                                     pipe.vae_scale_factor)[:, :, 0])
    t[f"{name}/vae_in"] = f32(vae_in["z"])
    img = torch.from_numpy(np.asarray(out.images)).float()
    t[f"{name}/image"] = img.contiguous()
    tensors.update(t)

    token_ids, texts, prefix_ok = {}, {}, {}
    prefix_ids = pipe.tokenizer(pipe.prompt_template_encode.split("{}")[0])["input_ids"]
    for role, text in zip(("prompt", "negative_prompt"), texts_of(c)):
        txt, ids, mask = tokenize(pipe, text)
        if not all(mask):
            problems.append(f"{role}: padded ids in a batch of one")
        token_ids[role] = ids
        texts[role] = txt
        prefix_ok[role] = ids[:DROP] == prefix_ids[:DROP]
        want = min(len(ids) - DROP, c["msl"])
        got = calls[0 if role == "prompt" else 1]["txt_len"]
        if want != got:
            problems.append(f"{role}: {len(ids)} ids - {DROP} cut at {c['msl']} is {want}, but {got} text rows")
    if not all(prefix_ok.values()):
        problems.append(f"the first {DROP} ids are not the template prefix: {prefix_ok}")
    meta = dict(c, cfg_ran=cfg_ran, texts=texts, token_ids=token_ids,
                n_template_prefix_ids=len(prefix_ids), drop=DROP,
                sigmas=[float(s) for s in pipe.scheduler.sigmas],
                timesteps=[float(x) for x in pipe.scheduler.timesteps], sigmas_in=st.get("sigmas_in"),
                mu=st.get("mu"), image_seq_len=(h // 2) * (w // 2),
                model_t=[k["t"] for k in calls], calls=len(calls), text_lens=[k["txt_len"] for k in calls],
                masks=[k["mask"] for k in calls], img_shapes=calls[0]["img_shapes"], latent_hw=[h, w],
                problems=problems,
                stats=dict(image_std=float(img.std()), image_mean=float(img.mean()),
                           clipped=float(((img <= 0) | (img >= 1)).float().mean()),
                           latent_std=float(lat[-1].std()), latent_mean=float(lat[-1].mean()),
                           model_out_0_std=float(t[f"{name}/model_out_0"].std())),
                tensors={k.split("/", 1)[1]: list(v.shape) for k, v in t.items()})
    log(f"{name}: mu {meta['mu']} sigmas {[round(s, 6) for s in meta['sigmas']]} calls {len(calls)} "
        f"text_lens {meta['text_lens'][:2]} masks {[m is None for m in meta['masks'][:2]]} "
        f"stats {json.dumps(meta['stats'])} problems {problems}")
    return meta


def debug_forward(tr, tensors):
    """One forward on fixed random inputs with the intermediates a Go implementation needs to bisect."""
    g = torch.Generator().manual_seed(5)
    img = torch.randn((1, 12, 64), generator=g)
    txt = torch.randn((1, 7, 32), generator=g)
    tt = torch.tensor([0.3])
    shapes_in = [[(1, 3, 4)]]
    rec, hooks = {}, []

    def save(key):
        def h(m, a, o):
            rec[key] = o
        return h

    hooks.append(tr.img_in.register_forward_hook(save("img_in")))
    hooks.append(tr.txt_norm.register_forward_hook(save("txt_normed")))
    hooks.append(tr.txt_in.register_forward_hook(save("txt_in")))
    hooks.append(tr.time_text_embed.register_forward_hook(save("temb")))
    hooks.append(tr.pos_embed.register_forward_hook(save("freqs")))
    hooks.append(tr.transformer_blocks[0].attn.register_forward_hook(save("block_0_attn")))
    for i, blk in enumerate(tr.transformer_blocks):
        hooks.append(blk.register_forward_hook(save(f"block_{i}")))
    hooks.append(tr.norm_out.register_forward_hook(save("norm_out")))
    try:
        out = tr(hidden_states=img.clone(), encoder_hidden_states=txt.clone(), timestep=tt.clone(),
                 img_shapes=shapes_in, return_dict=False)[0]
    finally:
        for h in hooks:
            h.remove()
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    out_m = tr(hidden_states=img.clone(), encoder_hidden_states=txt.clone(), encoder_hidden_states_mask=mask,
               timestep=tt.clone(), img_shapes=shapes_in, return_dict=False)[0]
    t = {"debug/img": img, "debug/txt": txt, "debug/t": tt, "debug/out": f32(out),
         "debug_mask/out": f32(out_m), "debug_mask/mask": mask.to(torch.int32)}
    for k in ("img_in", "txt_normed", "txt_in", "temb", "norm_out"):
        t[f"debug/{k}"] = f32(rec[k])
    fi, ft = rec["freqs"]
    t["debug/img_freqs"] = f32(torch.view_as_real(fi))
    t["debug/txt_freqs"] = f32(torch.view_as_real(ft))
    a_img, a_txt = rec["block_0_attn"]
    t["debug/block_0_attn_img"], t["debug/block_0_attn_txt"] = f32(a_img), f32(a_txt)
    for i in range(len(tr.transformer_blocks)):
        tx, im = rec[f"block_{i}"]
        t[f"debug/block_{i}_txt"], t[f"debug/block_{i}_img"] = f32(tx), f32(im)
    tensors.update(t)
    notes = {
        "img": "packed image tokens [1, 12, 64] of a 3x4 patch grid (img_shapes [[(1, 3, 4)]]); patch vector "
               "order (C=16, 2, 2) as _pack_latents", "txt": "prompt embeddings [1, 7, 32]",
        "t": "the transformer's timestep (the pipeline passes t/1000 = sigma); time_proj scales it by 1000",
        "img_in": "img_in(img) [1, 12, 32]", "txt_normed": "txt_norm (RMSNorm, eps 1e-6) of txt [1, 7, 32]",
        "txt_in": "txt_in(txt_normed) [1, 7, 32]", "temb": "time_text_embed(t) [1, 32]",
        "img_freqs": "RoPE of the image tokens, complex viewed real (cos, sin) [12, 8, 2]: frame axis 2 pairs, "
                     "height 3, width 3; scale_rope centres h and w (positions -(h - h//2) .. h//2 - 1)",
        "txt_freqs": "RoPE of the text tokens [7, 8, 2]: position max(h//2, w//2) + i on all three axes",
        "block_0_attn_img": "block 0's joint attention, image part after to_out [1, 12, 32]",
        "block_0_attn_txt": "block 0's joint attention, text part after to_add_out [1, 7, 32]",
        "block_<i>_txt": "block i's text stream output", "block_<i>_img": "block i's image stream output",
        "norm_out": "AdaLayerNormContinuous(img, temb) [1, 12, 32]", "out": "proj_out [1, 12, 64]",
        "debug_mask/out": "the same forward with encoder_hidden_states_mask [[1,1,1,1,1,0,0]] (masked text keys; "
                          "the text RoPE still spans all 7 rows)",
    }
    shapes = {k: list(v.shape) for k, v in t.items()}
    log(f"debug: {shapes}")
    return dict(shapes=shapes, notes=notes, out_std=float(out.std()),
                mask_max_abs_change=float((out_m - out).abs().max()))


# ------------------------------------------------------------------- main --

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-gz", required=True, help="folder with qwen25_{vocab.json,merges.txt,"
                    "tokenizer_config.json}.gz (engine/tokenizer)")
    ap.add_argument("--vae", required=True, help="testdata/reference/qwenimage-vae (vae.safetensors, "
                    "qwenimage-vae.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    import diffusers
    import transformers
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5_VLForConditionalGeneration
    from gen_qwenllm_fixtures import calibrate as calibrate_qwen

    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp()
    failures, checks = [], {}
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)

    tok = make_tokenizer(args.tokenizer_gz, work)
    log(f"tokenizer {type(tok).__name__} pad {tok.pad_token!r} {tok.pad_token_id} side {tok.padding_side}")

    # text encoder
    cfg, tc = make_text_config()
    te = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    calibrate_qwen(te, args.seed)
    prefix = lm_prefix(te)
    emb = te.get_input_embeddings().weight
    log(f"language model prefix {prefix!r}; embedding {tuple(emb.shape)}")

    # transformer, VAE, scheduler, pipeline (the encoder's unused rows are zeroed below, before any case runs)
    tr = QwenImageTransformer2DModel(**TR)
    init_transformer(tr, g)
    tr = round_all(tr.float().eval())
    with open(os.path.join(args.vae, "qwenimage-vae.json")) as f:
        vmeta = json.load(f)
    vae = AutoencoderKLQwenImage(**vmeta["config"], latents_mean=vmeta["latents_mean"],
                                 latents_std=vmeta["latents_std"]).float().eval()
    vsd = load_file(os.path.join(args.vae, "vae.safetensors"))
    vae.load_state_dict({k: v.float() for k, v in vsd.items()}, strict=True)
    sched = FlowMatchEulerDiscreteScheduler.from_config(QWEN_SCHEDULER)
    pipe = QwenImagePipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=tr)
    pipe.set_progress_bar_config(disable=True)

    # every id a case feeds the encoder; the other rows zeroed
    used = {tok.pad_token_id}
    for c in CASES:
        for text in texts_of(c):
            used.update(tokenize(pipe, text)[1])
    used = sorted(used)
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[torch.tensor(used)] = True
    with torch.no_grad():
        emb[~keep] = 0
    round_all(te.float().eval())
    log(f"{len(used)} distinct ids used")

    # which hidden state the pipeline takes: hidden_states[-1] (after the final norm?)
    lm = te.model.language_model if hasattr(te.model, "language_model") else te.model
    probe = {}
    hk = lm.norm.register_forward_hook(lambda m, a, o: probe.__setitem__("normed", o.detach().clone()))
    hk2 = lm.layers[-1].register_forward_hook(
        lambda m, a, o: probe.__setitem__("raw", (o[0] if isinstance(o, tuple) else o).detach().clone()))
    _, ids0, mask0 = tokenize(pipe, CASES[0]["prompt"])
    hs = te(input_ids=torch.tensor([ids0]), attention_mask=torch.tensor([mask0]), output_hidden_states=True)
    hs = hs.hidden_states
    hk.remove()
    hk2.remove()
    hidden_note = dict(n_hidden_states=len(hs), last_is_final_norm_output=bool(torch.equal(hs[-1], probe["normed"])),
                       last_is_raw_last_layer=bool(torch.equal(hs[-1], probe["raw"])))
    log(f"hidden_states: {hidden_note}")

    # calibrate: the final linear scaled so the first step's velocity has std 1
    pe, _ = pipe.encode_prompt(CASES[0]["prompt"], device="cpu")
    z = torch.randn((1, 16, 64), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        v = tr(hidden_states=z, encoder_hidden_states=pe, timestep=torch.ones(1), img_shapes=[[(1, 4, 4)]],
               return_dict=False)[0]
        s = 1.0 / float(v.std())
        tr.proj_out.weight.mul_(s)
        tr.proj_out.bias.mul_(s)
    round_all(tr)
    v = tr(hidden_states=z, encoder_hidden_states=pe, timestep=torch.ones(1), img_shapes=[[(1, 4, 4)]],
           return_dict=False)[0]
    calib = dict(velocity_std=float(v.std()), velocity_mean=float(v.mean()))
    log(f"calibrated transformer: {calib}")

    # the diffusers folder
    pdir = os.path.join(out_dir, "pipe")
    shutil.rmtree(pdir, ignore_errors=True)
    for d in ("scheduler", "text_encoder", "vae"):
        os.makedirs(os.path.join(pdir, d))
    with open(os.path.join(pdir, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(QWEN_SCHEDULER, f, indent=2)
    with open(os.path.join(pdir, "model_index.json"), "w") as f:
        json.dump({"_class_name": "QwenImagePipeline", "_diffusers_version": diffusers.__version__,
                   "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                   "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
                   "tokenizer": ["transformers", "Qwen2Tokenizer"],
                   "transformer": ["diffusers", "QwenImageTransformer2DModel"],
                   "vae": ["diffusers", "AutoencoderKLQwenImage"]}, f, indent=2)
    vae.save_config(os.path.join(pdir, "vae"))
    tdir = os.path.join(pdir, "transformer")
    tr.to(torch.float16).save_pretrained(tdir, safe_serialization=True)
    tr.to(torch.float32)
    fn = [x for x in os.listdir(tdir) if x.endswith(".safetensors")][0]
    saved = load_file(os.path.join(tdir, fn))
    checks["transformer_saved_f16"] = all(v.dtype == torch.float16 for v in saved.values())
    checks["transformer_saved"] = compare_sd("pipe/transformer == in-memory", saved, state(tr))
    back = QwenImageTransformer2DModel.from_pretrained(tdir, torch_dtype=torch.float32)
    checks["transformer_from_pretrained"] = compare_sd("from_pretrained == in-memory", state(back), state(tr))
    del back

    te_sd = {"model." + k[len(prefix):]: v.half().contiguous() for k, v in te.state_dict().items()
             if k.startswith(prefix) and not k.endswith("embed_tokens.weight")}
    save_file(te_sd, os.path.join(pdir, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    te_cfg = released_config(cfg, tc)
    with open(os.path.join(pdir, "text_encoder", "config.json"), "w") as f:
        json.dump(te_cfg, f, indent=2)
    ids_t = torch.tensor(used, dtype=torch.int64)
    save_file({"ids": ids_t, "rows": emb[ids_t].half().contiguous()}, os.path.join(out_dir, "embed.safetensors"))

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
            traceback.print_exc(limit=12)
            failures.append(c["name"])
    try:
        debug = debug_forward(tr, tensors)
    except Exception as e:  # noqa: BLE001
        log(f"debug: FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=12)
        failures.append("debug")
        debug = None

    # the encoder rebuilt as the Go test does: saved layers + the used rows, zeros elsewhere
    try:
        te2 = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        sd2 = {prefix + k[len("model."):]: v.float()
               for k, v in load_file(os.path.join(pdir, "text_encoder", "model.safetensors")).items()}
        es = load_file(os.path.join(out_dir, "embed.safetensors"))
        full = torch.zeros((TEXT["vocab_size"], TEXT["hidden_size"]))
        full[es["ids"].long()] = es["rows"].float()
        sd2[prefix + "embed_tokens.weight"] = full
        missing, unexpected = te2.load_state_dict(sd2, strict=False)
        te2.eval()
        bad_missing = [k for k in missing if not (k.startswith("lm_head") or "visual" in k)]
        pipe2 = QwenImagePipeline(scheduler=sched, vae=vae, text_encoder=te2, tokenizer=tok, transformer=tr)
        ok = not bad_missing and not unexpected
        diffs = {}
        for c in manifest:
            for role, text in zip(("prompt_embeds", "negative_prompt_embeds"), texts_of(c)):
                pe2, _ = pipe2.encode_prompt(text, device="cpu", max_sequence_length=c["msl"])
                want = tensors[f"{c['name']}/{role}"][:1]
                same = pe2.shape == want.shape and torch.equal(pe2.float(), want)
                diffs[f"{c['name']}/{role}"] = 0.0 if same else (
                    float((pe2.float() - want).abs().max()) if pe2.shape == want.shape else "shape")
                ok = ok and same
        checks["text_encoder_rebuilt"] = bool(ok)
        log(f"text encoder rebuilt from the fixture files: {'IDENTICAL' if ok else 'DIFFERENT'} "
            f"(unexpected missing {bad_missing}, unexpected {unexpected}, max |diff| {diffs})")
    except Exception as e:  # noqa: BLE001
        log(f"rebuild check FAILED {type(e).__name__}: {e}")
        traceback.print_exc(limit=12)
        checks["text_encoder_rebuilt"] = False
    for k, ok in checks.items():
        if not ok:
            failures.append(f"check {k}")

    save_file(tensors, os.path.join(out_dir, "cases.safetensors"))
    doc = dict(generator="tools/reference/gen_qwenimage_fixtures.py", diffusers=diffusers.__version__,
               transformers=transformers.__version__, torch=torch.__version__, seed=args.seed,
               transformer=dict(tr.config), text_encoder=te_cfg, scheduler=QWEN_SCHEDULER,
               vae=dict(path="testdata/reference/qwenimage-vae/vae.safetensors", config=dict(vae.config)),
               tokenizer=dict(cls=type(tok).__name__, pad_token=tok.pad_token, pad_id=tok.pad_token_id,
                              padding_side=tok.padding_side),
               template=pipe.prompt_template_encode, drop=pipe.prompt_template_encode_start_idx,
               embed=dict(n_ids=len(used), vocab=TEXT["vocab_size"]), hidden_states=hidden_note,
               calibration=calib, checks=checks,
               conventions=dict(
                   true_cfg="only when true_cfg_scale > 1 and a negative is given: comb = neg + s * (pos - neg), "
                            "then rescaled per token to the norm of pos over the last (channel) axis: "
                            "pred = comb * |pos| / |comb|",
                   transformer_t="the pipeline passes timestep / 1000 = sigma; time_proj multiplies by 1000",
                   sigmas="linspace(1, 1/n, n), exponential time shift with mu = calculate_shift(image_seq_len, "
                          "256, 8192, 0.5, 0.9): e^mu / (e^mu + 1/s - 1), stretched so the last is 0.02, then a "
                          "terminal 0",
                   prompt_embeds="hidden_states[-1] (after the final norm) at the attention-masked positions, "
                                 "the first 34 (the system prefix) dropped, then cut at max_sequence_length",
                   latents="noise [B, 1, 16, h, w] (h = 2 * (H // 16)) packed to [B, h/2 * w/2, 64] in (C, 2, 2) "
                           "order; the VAE gets unpacked latents * latents_std + latents_mean, [B, 16, 1, h, w]"),
               cases=manifest, debug=debug, failures=failures)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False, default=str)
    shutil.rmtree(work, ignore_errors=True)
    log(f"checks: {checks}")
    log(f"failures: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
