#!/usr/bin/env python3
"""LoRA reference fixtures for darkroom, made with diffusers (and torch).

Builds random LoRAs for the tiny SD1 model in testdata/reference/sd1-tiny-a
(rank 4, alpha 2, calibrated so that each targeted weight moves by about
15 % of its norm: visible, not broken) and stores, per case, the LoRA file
as users have it, a selection of the fused weights and the final latent of a
4-step Euler txt2img run (float32, CPU):

  kohya     kohya-ss / A1111 names (lora_unet_<diffusers>_…, lora_te_…),
            .lora_down/.lora_up/.alpha, attention + feed-forward +
            proj_in/out + 3x3 resnet convolutions (LoCon) + time_emb_proj +
            every text-encoder projection; loaded by diffusers
            (lora_state_dict converts kohya files itself), fused with
            strength 0.8 (UNet) and 1.2 (text encoder).
  peft      diffusers/peft names (unet.<module>.lora_A/lora_B.weight,
            text_encoder.text_model.<module>…), no alpha (scale = strength),
            fused by diffusers at 0.7.
  stacked   kohya at 0.6 and peft at 0.5: both loaded, weighted with
            set_adapters and fused at once by diffusers (fusing one, then
            loading the other, unmerges the first).
  loha      LyCORIS LoHa (hada_w1_a/b, hada_w2_a/b; hada_t1/t2 Tucker
            factors on the 3x3 convolutions), strength 1.0 / clip 0.9.
  lokr      LyCORIS LoKr (lokr_w1 full with lokr_w2_a/b factors on linear
            layers, lokr_w1 + full lokr_w2 on 3x3 convolutions), plus .diff /
            .diff_b full differences on attn2.to_out.0 and k_proj;
            strength 0.9.
  locon_mid LyCORIS LoCon with the lora_mid Tucker core on the 3x3
            convolutions; strength 1.0.

Every LoRA file is stored in float16, as released ones mostly are; each
reference is computed from the stored values.

diffusers does not load LoHa, LoKr, lora_mid or .diff files: for those the
reference weight is W + strength * dW with dW computed here with torch from
LyCORIS's published formulas (hada: (w1a@w1b)*(w2a@w2b); Tucker:
einsum('ijkl,jr,ip->prkl'); lokr: kron(w1, w2)), scale alpha/rank where rank
is w1_b's (LoHa) or the factor's (LoKr, 1 with no factor) first dimension.

transformers 5 flattened CLIPTextModel (no .text_model submodule), so the
"text_encoder.text_model." keys diffusers' converter produces are given to
load_lora_into_text_encoder without "text_model." (the only change made to
what diffusers' loader does).

Usage (no network; diffusers' src/ on PYTHONPATH):
    PYTHONPATH=.ref/lora/diffusers_src python3 tools/reference/gen_lora_fixtures.py \
        --model testdata/reference/sd1-tiny-a/diffusers --out OUTDIR
Writes OUTDIR/{sd1_kohya,sd1_peft,sd1_loha,sd1_lokr,sd1_locon_mid}.safetensors,
OUTDIR/fused.safetensors ("<case>/unet/<name>", "<case>/text_encoder/<name>"
with diffusers' stored names, "<case>/final_latent", "sigmas") and
OUTDIR/cases.json.
"""
import argparse
import json
import os
import traceback

import torch
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
SEED, CFG, W, H, STEPS = 1234, 6.0, 64, 64, 4
RANK, ALPHA = 4, 2.0
TARGET = 0.15  # ||strength * scale * dW|| / ||W|| per layer

UNET_LINEAR = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
               "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TE_LINEAR = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")

# Fused tensors stored per case (diffusers names; text encoder with text_model.).
SELECT = [
    "unet/down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "unet/down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
    "unet/down_blocks.0.attentions.1.transformer_blocks.0.ff.net.2.weight",
    "unet/up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0.weight",
    "unet/down_blocks.0.attentions.0.proj_in.weight",
    "unet/up_blocks.1.attentions.0.proj_out.weight",
    "unet/down_blocks.0.resnets.0.conv1.weight",
    "unet/down_blocks.0.resnets.1.conv2.weight",
    "unet/down_blocks.0.resnets.0.time_emb_proj.weight",
    "text_encoder/text_model.encoder.layers.0.self_attn.q_proj.weight",
    "text_encoder/text_model.encoder.layers.0.self_attn.k_proj.weight",
    "text_encoder/text_model.encoder.layers.1.self_attn.out_proj.weight",
]


def load_pipe(path):
    tok = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"))
    te = CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder")).float().eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(path, "unet")).float().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(path, "vae")).float().eval()
    sched = EulerDiscreteScheduler(**SD1, timestep_spacing="linspace")
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def te_name(name):
    """A text-encoder module name as the stored file and kohya spell it (with text_model.)."""
    return name if name.startswith("text_model.") else "text_model." + name


def targets(pipe, conv=True):
    """(component, diffusers module name, module) of every LoRA target."""
    out = []
    for name, mod in pipe.unet.named_modules():
        if name.endswith(UNET_LINEAR) or name.endswith((".proj_in", ".proj_out", ".time_emb_proj")):
            out.append(("unet", name, mod))
        elif conv and ".resnets." in name and name.endswith((".conv1", ".conv2")):
            out.append(("unet", name, mod))
    for name, mod in pipe.text_encoder.named_modules():
        if name.endswith(TE_LINEAR) and ".layers." in name:
            out.append(("text_encoder", te_name(name), mod))
    return out


def kohya_key(comp, name):
    return ("lora_unet_" if comp == "unet" else "lora_te_") + name.replace(".", "_")


def calibrate(w, dw, strength, scale):
    """The factor making ||strength*scale*dw|| = TARGET*||w||."""
    return TARGET * float(w.norm()) / (abs(strength) * scale * float(dw.norm()) + 1e-30)


def make_lora(g, w, strength):
    """down, up for weight w (Linear [o,i] or Conv [o,i,k,k]); up calibrated."""
    o, i = w.shape[0], w.shape[1]
    ks = w.shape[2:]
    down = torch.randn((RANK, i, *ks), generator=g) / (i * (ks[0] * ks[1] if ks else 1)) ** 0.5
    up = torch.randn((o, RANK, *([1, 1] if ks else [])), generator=g)
    dw = (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    up = up * calibrate(w, dw, strength, ALPHA / RANK)
    return half(down), half(up)


def half(t):
    """t rounded to float16 (LoRA files are stored so), as float32."""
    return t.half().float().contiguous()


def lycoris_delta(sd, k, shape):
    """LyCORIS's dW and scale for module k of a state dict (float32 values), by kind."""
    get = lambda n: sd.get(k + n)
    alpha = get(".alpha")
    if get(".diff") is not None or get(".diff_b") is not None:
        return get(".diff"), get(".diff_b")
    if get(".hada_w1_a") is not None:
        if get(".hada_t1") is not None:
            w1 = tucker(get(".hada_t1"), get(".hada_w1_b"), get(".hada_w1_a"))
            w2 = tucker(get(".hada_t2"), get(".hada_w2_b"), get(".hada_w2_a"))
        else:
            w1 = get(".hada_w1_a") @ get(".hada_w1_b")
            w2 = get(".hada_w2_a") @ get(".hada_w2_b")
        scale = float(alpha) / get(".hada_w1_b").shape[0] if alpha is not None else 1.0
        return scale * (w1 * w2).reshape(shape), None
    if get(".lokr_w1") is not None or get(".lokr_w1_a") is not None:
        w1 = get(".lokr_w1") if get(".lokr_w1") is not None else get(".lokr_w1_a") @ get(".lokr_w1_b")
        if get(".lokr_w2") is not None:
            w2 = get(".lokr_w2")
        elif get(".lokr_t2") is not None:
            w2 = tucker(get(".lokr_t2"), get(".lokr_w2_b"), get(".lokr_w2_a"))
        else:
            w2 = get(".lokr_w2_a") @ get(".lokr_w2_b")
        dim = None
        if get(".lokr_w1_b") is not None:
            dim = get(".lokr_w1_b").shape[0]
        if get(".lokr_w2_b") is not None:
            dim = get(".lokr_w2_b").shape[0]
        scale = float(alpha) / dim if alpha is not None and dim is not None else 1.0
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return scale * torch.kron(w1, w2).reshape(shape), None
    down, up, mid = get(".lora_down.weight"), get(".lora_up.weight"), get(".lora_mid.weight")
    if mid is not None:
        # dW[o,i,h,w] = sum_{r,q} up[o,r] mid[r,q,h,w] down[q,i]
        dw = torch.einsum("or,rqhw,qi->oihw", up.flatten(1), mid, down.flatten(1))
    else:
        dw = up.flatten(1) @ down.flatten(1)
    scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
    return scale * dw.reshape(shape), None


def run(pipe):
    """The txt2img loop of StableDiffusionPipeline (as gen_pipeline_fixtures.py), returning the final latent."""
    sched = EulerDiscreteScheduler(**SD1, timestep_spacing="linspace")
    sched.set_timesteps(STEPS)
    te = pipe.text_encoder

    def enc(text):
        ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return te(ids).last_hidden_state

    with torch.no_grad():
        ctx = torch.cat([enc(NEGATIVE), enc(PROMPT)])
        noise = torch.randn((1, 4, H // 8, W // 8), generator=torch.Generator("cpu").manual_seed(SEED))
        lat = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([lat] * 2), t)
            eps = pipe.unet(inp, t, encoder_hidden_states=ctx).sample
            eu, ec = eps.chunk(2)
            lat = sched.step(eu + CFG * (ec - eu), t, lat).prev_sample
    return lat.detach().float().contiguous(), sched.sigmas.detach().float().contiguous()


def weights_of(pipe):
    out = {}
    for k, v in pipe.unet.state_dict().items():
        out["unet/" + k] = v.detach().float().clone()
    for k, v in pipe.text_encoder.state_dict().items():
        out["text_encoder/" + te_name(k)] = v.detach().float().clone()
    return out


def diffusers_load(pipe, path, name, s_unet, s_te, fuse=True):
    """diffusers' load_lora_weights, split so that the text-encoder keys fit transformers 5, then fuse_lora."""
    sd, alphas = pipe.lora_state_dict(load_file(path))
    if not hasattr(pipe.text_encoder, "text_model"):
        fix = lambda k: k.replace("text_encoder.text_model.", "text_encoder.", 1)
        sd = {fix(k): v for k, v in sd.items()}
        alphas = {fix(k): v for k, v in alphas.items()} if alphas else alphas
    pipe.load_lora_into_unet(sd, network_alphas=alphas, unet=pipe.unet, adapter_name=name, _pipeline=pipe)
    pipe.load_lora_into_text_encoder(sd, network_alphas=alphas, text_encoder=pipe.text_encoder,
                                     adapter_name=name, _pipeline=pipe)
    if not fuse:
        return
    pipe.fuse_lora(components=["unet"], lora_scale=s_unet, adapter_names=[name])
    pipe.fuse_lora(components=["text_encoder"], lora_scale=s_te, adapter_names=[name])


def fused_weights(pipe):
    """Weights with peft's LoRA wrappers looked through (base_layer.weight -> weight)."""
    out = {}
    for k, v in weights_of(pipe).items():
        if "lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def tucker(t, wb, wa):
    """LyCORIS Tucker rebuild: einsum('i j k l, j r, i p -> p r k l', t, w_b, w_a)."""
    return torch.einsum("ijkl,jr,ip->prkl", t, wb, wa)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator("cpu").manual_seed(20261203)

    pipe = load_pipe(args.model)
    base = weights_of(pipe)
    base_latent, sigmas = run(pipe)
    fixtures = {"sigmas": sigmas, "base/final_latent": base_latent}
    manifest = []

    def record(case, p, meta):
        fw = fused_weights(p)
        lat, _ = run(p)
        for k in SELECT:
            fixtures[f"{case}/{k}"] = fw[k].contiguous()
        fixtures[f"{case}/final_latent"] = lat
        changed = sum(1 for k in fw if k in base and not torch.equal(fw[k], base[k]))
        rel = float((lat - base_latent).norm() / base_latent.norm())
        te_rel = float((fw[SELECT[-1]] - base[SELECT[-1]]).norm() / base[SELECT[-1]].norm())
        print(f"{case}: {changed} weights changed, latent moved {rel:.3f} (relative), te fc1 moved {te_rel:.3f}")
        meta.update(name=case, changed=changed, latent_moved=rel)
        manifest.append(meta)
        return fw

    # kohya / A1111.
    tg = targets(pipe)
    kohya = {}
    for comp, name, mod in tg:
        k = kohya_key(comp, name)
        down, up = make_lora(g, mod.weight.detach().float(), 1.0)
        kohya[k + ".lora_down.weight"], kohya[k + ".lora_up.weight"] = down, up
        kohya[k + ".alpha"] = torch.tensor(ALPHA)
    kpath = os.path.join(args.out, "sd1_kohya.safetensors")
    save_file({k: v.half() for k, v in kohya.items()}, kpath, metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(RANK),
                                      "ss_network_alpha": str(ALPHA)})

    # diffusers / peft: linear layers and the 3x3 convolutions, no alpha.
    peft = {}
    for comp, name, mod in tg:
        down, up = make_lora(g, mod.weight.detach().float(), 1.0)
        up = up * (ALPHA / RANK)  # calibrated for scale 1
        prefix = "unet." if comp == "unet" else "text_encoder."
        peft[prefix + name + ".lora_A.weight"] = down
        peft[prefix + name + ".lora_B.weight"] = half(up)
    ppath = os.path.join(args.out, "sd1_peft.safetensors")
    save_file({k: v.half() for k, v in peft.items()}, ppath)

    fused = {}
    for case, loras in [("kohya", [(kpath, 0.8, 1.2)]), ("peft", [(ppath, 0.7, 0.7)]),
                        ("stacked", [(kpath, 0.6, 0.6), (ppath, 0.5, 0.5)])]:
        try:
            p = load_pipe(args.model)
            if len(loras) == 1:
                path, su, st = loras[0]
                diffusers_load(p, path, "a0", su, st)
            else:
                # Several adapters: load all, weight them with set_adapters, fuse
                # once (loading one after fusing another unmerges the first).
                for j, (path, su, st) in enumerate(loras):
                    diffusers_load(p, path, f"a{j}", su, st, fuse=False)
                names = [f"a{j}" for j in range(len(loras))]
                p.set_adapters(names, adapter_weights=[dict(unet=su, text_encoder=st) for _, su, st in loras])
                p.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
            fused[case] = record(case, p, dict(loras=[dict(file=os.path.basename(f), strength=su, clip_strength=st)
                                                      for f, su, st in loras], reference="diffusers fuse_lora"))
        except Exception:  # keep the other cases
            traceback.print_exc()
    if len(fused) == 3:  # stacked = base + 0.6/0.8 (kohya - base) + 0.5/0.7 (peft - base)?
        for k in SELECT[:2] + SELECT[-2:]:
            ks = 0.6 / (1.2 if k.startswith("text_encoder/") else 0.8)
            want = base[k] + (fused["kohya"][k] - base[k]) * ks + (fused["peft"][k] - base[k]) * 0.5 / 0.7
            print(f"stacked check {k}: {float((fused['stacked'][k] - want).norm() / want.norm()):.2e}")

    # LyCORIS: LoHa, LoKr (+ .diff), LoCon with lora_mid; reference dW by formula.
    def lycoris_case(case, fname, strength, clip, build):
        sd, deltas = {}, {}
        for comp, name, mod in tg:
            build(sd, kohya_key(comp, name), mod.weight.detach().float(), strength if comp == "unet" else clip, name)
        sd = {k: half(v) for k, v in sd.items()}  # stored as float16; dW from the stored values
        for comp, name, mod in tg:
            s = strength if comp == "unet" else clip
            dw, bias_dw = lycoris_delta(sd, kohya_key(comp, name), mod.weight.shape)
            deltas[(comp, name)] = (None if dw is None else s * dw, None if bias_dw is None else s * bias_dw)
        path = os.path.join(args.out, fname)
        save_file({k: v.half().contiguous() for k, v in sd.items()}, path)
        p = load_pipe(args.model)
        with torch.no_grad():
            for (comp, name), (dw, db) in deltas.items():
                model = p.unet if comp == "unet" else p.text_encoder
                mname = name if comp == "unet" or hasattr(p.text_encoder, "text_model") else name[len("text_model."):]
                mod = model.get_submodule(mname)
                if dw is not None:
                    mod.weight += dw.reshape(mod.weight.shape)
                if db is not None:
                    mod.bias += db
        record(case, p, dict(loras=[dict(file=fname, strength=strength, clip_strength=clip)],
                             reference="torch, LyCORIS formulas"))

    def loha(sd, k, w, s, name):
        o, i = w.shape[0], w.shape[1]
        conv = w.dim() == 4
        sd[k + ".alpha"] = torch.tensor(ALPHA)
        scale = ALPHA / RANK
        if conv:
            kk = w.shape[2]
            f = []
            for n in ("1", "2"):
                t = torch.randn((RANK, RANK, kk, kk), generator=g) / RANK ** 0.5
                wa = torch.randn((RANK, o), generator=g)
                wb = torch.randn((RANK, i), generator=g) / i ** 0.5
                sd[k + f".hada_t{n}"], sd[k + f".hada_w{n}_a"], sd[k + f".hada_w{n}_b"] = t, wa, wb
                f.append((t, wb, wa))
            dw = tucker(*f[0]) * tucker(*f[1])
            c = calibrate(w, dw, s, scale) ** 0.5
            sd[k + ".hada_w1_a"] = sd[k + ".hada_w1_a"] * c
            sd[k + ".hada_w2_a"] = sd[k + ".hada_w2_a"] * c
            dw = tucker(sd[k + ".hada_t1"], sd[k + ".hada_w1_b"], sd[k + ".hada_w1_a"]) * \
                tucker(sd[k + ".hada_t2"], sd[k + ".hada_w2_b"], sd[k + ".hada_w2_a"])
        else:
            for n in ("1", "2"):
                sd[k + f".hada_w{n}_a"] = torch.randn((o, RANK), generator=g)
                sd[k + f".hada_w{n}_b"] = torch.randn((RANK, i), generator=g) / i ** 0.5
            dw = (sd[k + ".hada_w1_a"] @ sd[k + ".hada_w1_b"]) * (sd[k + ".hada_w2_a"] @ sd[k + ".hada_w2_b"])
            c = calibrate(w, dw, s, scale) ** 0.5
            sd[k + ".hada_w1_a"] = sd[k + ".hada_w1_a"] * c
            sd[k + ".hada_w2_a"] = sd[k + ".hada_w2_a"] * c
            dw = (sd[k + ".hada_w1_a"] @ sd[k + ".hada_w1_b"]) * (sd[k + ".hada_w2_a"] @ sd[k + ".hada_w2_b"])
        return scale * dw.reshape(w.shape), None

    def lokr(sd, k, w, s, name):
        o, i = w.shape[0], w.shape[1]
        if name.endswith("attn2.to_out.0") or name.endswith("self_attn.k_proj"):  # layers with a bias
            # full difference, with a bias difference (.diff / .diff_b)
            dw = torch.randn(w.shape, generator=g)
            dw = dw * TARGET * float(w.norm()) / (abs(s) * float(dw.norm()))
            db = torch.randn((o,), generator=g) * 0.01
            sd[k + ".diff"], sd[k + ".diff_b"] = dw, db
            return dw, db
        a, b = 4, 4 if i % 4 == 0 else 1
        o2, i2 = o // a, i // b
        w1 = torch.randn((a, b), generator=g)
        if w.dim() == 4:
            w2 = torch.randn((o2, i2, *w.shape[2:]), generator=g) / (i2 * w.shape[2] * w.shape[3]) ** 0.5
            sd[k + ".lokr_w2"] = w2
            scale = 1.0  # no factorised part: alpha is not used
            dw = torch.kron(w1.reshape(a, b, 1, 1), w2)
        else:
            w2a = torch.randn((o2, RANK), generator=g)
            w2b = torch.randn((RANK, i2), generator=g) / i2 ** 0.5
            sd[k + ".lokr_w2_a"], sd[k + ".lokr_w2_b"] = w2a, w2b
            sd[k + ".alpha"] = torch.tensor(ALPHA)
            scale = ALPHA / RANK
            dw = torch.kron(w1, w2a @ w2b)
        c = calibrate(w, dw, s, scale)
        w1 = w1 * c
        sd[k + ".lokr_w1"] = w1
        dw = dw * c
        return scale * dw.reshape(w.shape), None

    def locon_mid(sd, k, w, s, name):
        o, i = w.shape[0], w.shape[1]
        sd[k + ".alpha"] = torch.tensor(ALPHA)
        scale = ALPHA / RANK
        if w.dim() == 4:
            kk = w.shape[2]
            down = torch.randn((RANK, i, 1, 1), generator=g) / i ** 0.5
            mid = torch.randn((RANK, RANK, kk, kk), generator=g) / (RANK * kk * kk) ** 0.5
            up = torch.randn((o, RANK, 1, 1), generator=g)
            # dW[o,i,h,w] = sum_{r,q} up[o,r] mid[r,q,h,w] down[q,i]
            dw = torch.einsum("or,rqhw,qi->oihw", up.flatten(1), mid, down.flatten(1))
            c = calibrate(w, dw, s, scale)
            up, dw = up * c, dw * c
            sd[k + ".lora_down.weight"], sd[k + ".lora_mid.weight"], sd[k + ".lora_up.weight"] = down, mid, up
        else:
            down, up = make_lora(g, w, s)
            sd[k + ".lora_down.weight"], sd[k + ".lora_up.weight"] = down, up
            dw = up.flatten(1) @ down.flatten(1)
        return scale * dw.reshape(w.shape), None

    for args_ in [("loha", "sd1_loha.safetensors", 1.0, 0.9, loha), ("lokr", "sd1_lokr.safetensors", 0.9, 0.9, lokr),
                  ("locon_mid", "sd1_locon_mid.safetensors", 1.0, 1.0, locon_mid)]:
        try:
            lycoris_case(*args_)
        except Exception:
            traceback.print_exc()

    save_file({k: v.detach().cpu().contiguous() for k, v in fixtures.items()}, os.path.join(args.out, "fused.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(dict(seed=SEED, cfg=CFG, width=W, height=H, steps=STEPS, prompt=PROMPT, negative=NEGATIVE,
                       sampler="euler", rank=RANK, alpha=ALPHA, selected=SELECT, cases=manifest), f, indent=1)


if __name__ == "__main__":
    main()
