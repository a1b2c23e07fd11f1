#!/usr/bin/env python3
"""Train darkroom-digits, the tiny demo model embedded in the darkroom binary.

The model is a real Stable Diffusion 1.x pipeline in miniature -- a CLIP text
encoder (transformers CLIPTextModel, real CLIP BPE ids), a UNet with
cross-attention (diffusers UNet2DConditionModel, SD1 conventions) and a KL
autoencoder (diffusers AutoencoderKL) -- trained on the 1,797 handwritten
digits that scikit-learn ships (UCI Optical Recognition of Handwritten Digits,
CC BY 4.0), upscaled from 8x8 to 32x32.

Stages, all seeded:
  1. data: 8x8 digits (0..16 ink) -> dark ink on white paper -> bilinear
     upscale to 32x32 (align_corners=False) -> RGB in [-1, 1];
  2. VAE: 3 levels (32x32 -> 8x8x4 latents), MSE + L1 + a small KL term; then
     the latent space is re-centred and rescaled *inside the weights*
     (quant_conv / post_quant_conv, an exact reparametrisation) so that
     latents x 0.18215 -- SD1's fixed scaling factor, which the engine always
     uses -- have zero mean and unit variance per channel;
  3. UNet + text encoder, jointly: epsilon prediction on SD1's discrete
     schedule (scaled_linear betas 0.00085..0.012, 1000 steps), min-SNR-5
     loss weights, 10% caption dropout to "" (for classifier-free guidance),
     EMA of the weights;
  4. evaluation: Euler sampling with the engine's defaults (ComfyUI "normal"
     schedule) for every digit, classified by a logistic-regression digit
     classifier fitted on the 8x8 data (saved for the Go test), a PNG grid;
  5. export: diffusers-named F16 safetensors per component plus configs,
     converted to the single-file LDM layout by tools/train_demo/convert.

Outputs (in --out): unet.safetensors, vae.safetensors, text_encoder.safetensors,
configs.json, classifier.json, report.json, grid.png, train.log.
"""

import argparse
import json
import math
import os
import random
import struct
import sys
import time
import zlib

import torch
import torch.nn.functional as F

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Caption templates: {w} is the word, {d} the numeral, {a} the article for {d}.
TEMPLATES = [
    "a handwritten digit {w}",
    "a handwritten digit {d}",
    "the number {d}",
    "the number {w}",
    "{d}",
    "{w}",
    "digit {d}",
    "digit {w}",
    "{a} {d}",
    "the digit {w}",
    "the digit {d}",
    "a handwritten {w}",
    "a handwritten {d}",
    "handwritten number {w}",
    "a picture of the number {d}",
    "an image of {a} {w}",
    "number {d}",
    "a drawing of the digit {w}",
    "{w}, handwritten",
    "a scanned handwritten digit, {w}",
]

SCALING = 0.18215  # SD1 latent scaling factor, fixed by the engine
PROBE = 60  # UNet steps at full learning rate before the cosine decay starts


def article(d):
    return "an" if d == 8 else "a"


def captions_for(d):
    return [t.format(w=WORDS[d], d=d, a=article(d)) for t in TEMPLATES]


class Log:
    def __init__(self, path):
        self.f = open(path, "w", buffering=1)
        self.t0 = time.time()

    def __call__(self, *args):
        msg = " ".join(str(a) for a in args)
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


def seed_all(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def write_png(path, img):
    """Write an 8-bit grey or RGB image ([H, W] or [H, W, 3] uint8 tensor)."""
    img = img.cpu().contiguous()
    h, w = img.shape[:2]
    ch = 1 if img.dim() == 2 else img.shape[2]
    raw = bytearray()
    rows = img.reshape(h, w * ch).tolist()
    for r in rows:
        raw.append(0)
        raw.extend(r)

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    color = 0 if ch == 1 else 2
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(bytes(raw), 9)))
        f.write(chunk(b"IEND", b""))


# ---------------------------------------------------------------- data

def load_data(dev):
    from sklearn.datasets import load_digits

    d = load_digits()
    ink8 = torch.tensor(d.images, dtype=torch.float32) / 16.0  # [N, 8, 8], 1 = ink
    labels = torch.tensor(d.target, dtype=torch.long)
    paper8 = 1.0 - ink8  # dark ink on white paper
    img32 = F.interpolate(paper8[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    pixels = (img32 * 2 - 1).repeat(1, 3, 1, 1)  # [N, 3, 32, 32] in [-1, 1]
    return d, pixels.to(dev), labels.to(dev)


def ink_features(images):
    """Images [N, 3, H, W] in [-1, 1] -> [N, 64] ink in 0..16 (8x8 area average)."""
    grey = ((images.float().clamp(-1, 1) + 1) / 2).mean(dim=1, keepdim=True)
    ink = 1.0 - grey
    return F.adaptive_avg_pool2d(ink, (8, 8)).flatten(1) * 16.0


# ---------------------------------------------------------------- classifier

def fit_classifier(d, log):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X = d.data.astype("float64")  # [N, 64] in 0..16
    y = d.target
    clf = LogisticRegression(C=0.05, max_iter=5000)
    cv = cross_val_score(LogisticRegression(C=0.05, max_iter=5000), X, y, cv=5).mean()
    clf.fit(X, y)
    train_acc = clf.score(X, y)
    log(f"classifier: logistic regression, train acc {train_acc:.4f}, 5-fold cv acc {cv:.4f}")
    W = torch.tensor(clf.coef_, dtype=torch.float32)  # [10, 64]
    b = torch.tensor(clf.intercept_, dtype=torch.float32)
    info = {
        "description": "Multinomial logistic regression fitted on scikit-learn's load_digits (UCI Optical "
        "Recognition of Handwritten Digits, CC BY 4.0): 1,797 8x8 images, ink 0..16. "
        "class = argmax(weights[k] . x + bias[k]) where x is the 8x8 image, row-major, ink in 0..16 "
        "(0 = white paper, 16 = full ink).",
        "fit": "sklearn.linear_model.LogisticRegression(C=0.05, max_iter=5000)",
        "train_accuracy": round(float(train_acc), 4),
        "cv5_accuracy": round(float(cv), 4),
        "classes": list(range(10)),
        "weights": [[float(f"{v:.6g}") for v in row] for row in W.tolist()],
        "bias": [float(f"{v:.6g}") for v in b.tolist()],
    }
    # Use the rounded numbers from here on, exactly as the Go test will.
    W = torch.tensor(info["weights"], dtype=torch.float32)
    b = torch.tensor(info["bias"], dtype=torch.float32)
    return info, W, b


def classify(features, W, b):
    return (features.float().cpu() @ W.T + b).argmax(dim=1)


# ---------------------------------------------------------------- VAE

def make_vae(channels):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=SCALING,
    )


def train_vae(vae, pixels, args, log):
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    n = pixels.shape[0]
    g = torch.Generator(device=pixels.device).manual_seed(args.seed + 1)
    steps = args.vae_steps
    t0 = time.time()
    for step in range(steps):
        lr = args.vae_lr * (0.5 * (1 + math.cos(math.pi * step / steps)) * 0.9 + 0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (args.vae_batch,), device=pixels.device, generator=g)
        x = pixels[idx]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            post = vae.encode(x).latent_dist
            z = post.sample(generator=g)
            rec = vae.decode(z).sample
        rec = rec.float()
        mse = F.mse_loss(rec, x)
        l1 = (rec - x).abs().mean()
        mean, logvar = post.mean.float(), post.logvar.float()
        # KL to N(0, I), summed over latent dims, mean over the batch.
        kl = (0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)).sum(dim=(1, 2, 3)).mean()
        loss = mse + 0.5 * l1 + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step + 1 == args.vae_stop_at or time.time() - t0 > args.vae_seconds:
            log(f"vae: stopped after step {step} ({time.time() - t0:.0f}s; repeat with --vae-stop-at {step + 1})")
            break
        if step % 250 == 0 or step == steps - 1:
            log(f"vae step {step:5d}/{steps} loss {loss.item():.5f} mse {mse.item():.5f} kl {kl.item():.2f} lr {lr:.2e} ({time.time() - t0:.0f}s)")


@torch.no_grad()
def encode_mode(vae, pixels, bs=512):
    out = []
    for i in range(0, pixels.shape[0], bs):
        out.append(vae.encode(pixels[i:i + bs]).latent_dist.mode())
    return torch.cat(out)


@torch.no_grad()
def decode(vae, latents, bs=512):
    out = []
    for i in range(0, latents.shape[0], bs):
        out.append(vae.decode(latents[i:i + bs]).sample)
    return torch.cat(out)


@torch.no_grad()
def fold_latent_affine(vae, pixels, log):
    """Re-centre and rescale the latent space inside the weights.

    With per-channel mean m and std s of the posterior means, the new latent
    is z' = (z - m) * k with k = 1 / (0.18215 * s), so that z' * 0.18215 has
    zero mean and unit variance. quant_conv produces (mean, logvar): the mean
    rows become (W z + b - m) * k and the logvar bias gains 2 ln k;
    post_quant_conv (1x1) sees z = z' / k + m, so its input columns are
    divided by k and its bias gains W m. Decoding is unchanged exactly (up to
    rounding).
    """
    z = encode_mode(vae, pixels)
    rec_before = decode(vae, z)
    m = z.mean(dim=(0, 2, 3))
    s = z.std(dim=(0, 2, 3))
    k = 1.0 / (SCALING * s)
    c = z.shape[1]
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias  # [2c, 2c, 1, 1]
    qw[:c] *= k.view(c, 1, 1, 1)
    qb[:c] = (qb[:c] - m) * k
    qb[c:] += 2 * torch.log(k)
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias  # [c, c, 1, 1]
    pb += (pw[:, :, 0, 0] @ m)
    pw /= k.view(1, c, 1, 1)
    z2 = encode_mode(vae, pixels)
    rec_after = decode(vae, z2)
    zs = z2 * SCALING
    log(f"latent fold: raw mean {[round(v, 3) for v in m.tolist()]} std {[round(v, 3) for v in s.tolist()]}")
    log(f"latent fold: after, latents*{SCALING} mean {[round(v, 3) for v in zs.mean(dim=(0, 2, 3)).tolist()]} "
        f"std {[round(v, 3) for v in zs.std(dim=(0, 2, 3)).tolist()]}; decode change max {(rec_after - rec_before).abs().max().item():.2e}")
    return z2


# ---------------------------------------------------------------- text + UNet

def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=1,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=64,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(cfg)


def make_unet(channels, layers):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        attention_head_dim=8,  # SD1 naming: 8 heads
        cross_attention_dim=64,
        norm_num_groups=32,
        use_linear_projection=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    )


def sd1_alphas_cumprod(dev):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(dev)


class EMA:
    def __init__(self, params, decay):
        self.params = list(params)
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - d)

    @torch.no_grad()
    def copy_to_model(self):
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))


def tokenize(tokenizer, texts, dev):
    ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return ids.to(dev)


def used_token_ids(tokenizer):
    """Every token id a training caption (or the empty caption) produces,
    including the start, end and padding tokens."""
    texts = [c for dd in range(10) for c in captions_for(dd)] + [""]
    ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True).input_ids
    return sorted({i for row in ids for i in row})


def train_unet(unet, text, latents, labels, tokenizer, args, log):
    dev = latents.device
    acp = sd1_alphas_cumprod(dev).float()
    snr = acp / (1 - acp)
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 for epsilon prediction

    # Pre-tokenize every caption: index 0 is "", digit d owns a block.
    caps = [""]
    start = []
    for d in range(10):
        start.append(len(caps))
        caps += captions_for(d)
    per = len(TEMPLATES)
    ids = tokenize(tokenizer, caps, dev)
    start = torch.tensor(start, device=dev)
    log(f"captions: {len(caps)}; e.g. {caps[start[7]:start[7] + 6]}; ids of '{caps[start[7]]}': {ids[start[7]][:8].tolist()}")

    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(params, args.ema)
    g = torch.Generator(device=dev).manual_seed(args.seed + 2)
    n = latents.shape[0]
    bs = args.batch
    x0_all = latents * SCALING

    def step_fn(step, total):
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if total:
            frac = max(0, step - PROBE) / max(1, total - PROBE)
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (bs,), device=dev, generator=g)
        x0 = x0_all[idx]
        y = labels[idx]
        cap = start[y] + torch.randint(0, per, (bs,), device=dev, generator=g)
        drop = torch.rand(bs, device=dev, generator=g) < args.caption_dropout
        cap = torch.where(drop, torch.zeros_like(cap), cap)
        t = torch.randint(0, 1000, (bs,), device=dev, generator=g)
        eps = torch.randn(x0.shape, device=dev, generator=g)
        a = acp[t].view(bs, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ctx = text(ids[cap]).last_hidden_state
            pred = unet(xt, t, encoder_hidden_states=ctx).sample
        per_item = F.mse_loss(pred.float(), eps, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_item * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        return loss, lr

    total = args.unet_steps
    step = 0
    t0 = time.time()
    running = 0.0
    if not total:
        # Measure the speed on the first steps (part of training, with the
        # warmup that does not depend on the total), then fix the total so
        # the run fits in --unet-seconds. The log prints the total: pass it
        # as --unet-steps to repeat the run exactly.
        probe = PROBE
        for step in range(probe):
            loss, lr = step_fn(step, 0)
            if step == 9:
                torch.cuda.synchronize()
                t10 = time.time()
        torch.cuda.synchronize()
        rate = (probe - 10) / (time.time() - t10)
        total = int(min(args.max_unet_steps, max(probe + 100, rate * args.unet_seconds)))
        log(f"unet speed {rate:.1f} steps/s -> total {total} steps (repeat with --unet-steps {total})")
        step = probe
    while step < total:
        loss, lr = step_fn(step, total)
        running += loss.item() if step % 50 == 0 else 0.0
        if step % 500 == 0 or step == total - 1:
            log(f"unet step {step:6d}/{total} loss {loss.item():.5f} lr {lr:.2e} ({time.time() - t0:.0f}s)")
        step += 1
    ema.copy_to_model()
    return total


# ---------------------------------------------------------------- sampling

class Schedule:
    """SD1 discrete schedule in k-diffusion form (sigma <-> timestep)."""

    def __init__(self, dev):
        acp = sd1_alphas_cumprod(dev)
        self.sigmas = ((1 - acp) / acp).sqrt()
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma):
        ls = sigma.double().log()
        dists = ls - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high = low + 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((lo - ls) / (lo - hi)).clamp(0, 1)
        return (1 - w) * low + w * high

    def t_to_sigma(self, t):
        t = t.double()
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def normal(self, steps):
        """ComfyUI's "normal" scheduler: evenly spaced timesteps, then sigma 0."""
        start = self.sigma_to_t(self.sigmas[-1:])[0]
        end = self.sigma_to_t(self.sigmas[:1])[0]
        ts = torch.linspace(float(start), float(end), steps, dtype=torch.float64, device=self.sigmas.device)
        sig = self.t_to_sigma(ts)
        return torch.cat([sig, sig.new_zeros(1)])


@torch.no_grad()
def sample_euler(unet, ctx_c, ctx_u, noise, sched, steps, cfg):
    """Euler (k-diffusion) with CFG; initial noise scaled by sqrt(1+sigma_max^2) as ComfyUI does."""
    sig = sched.normal(steps).float()
    x = noise * (1 + sig[0] ** 2).sqrt()
    n = x.shape[0]
    for i in range(steps):
        s = sig[i]
        t = sched.sigma_to_t(s.view(1)).float().expand(n)
        xin = x / (s ** 2 + 1).sqrt()
        if cfg == 1.0:
            eps = unet(xin, t, encoder_hidden_states=ctx_c).sample.float()
        else:
            out = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=torch.cat([ctx_c, ctx_u])).sample.float()
            ec, eu = out.chunk(2)
            eps = eu + cfg * (ec - eu)
        den = x - s * eps
        d = (x - den) / s
        x = x + d * (sig[i + 1] - s)
    return x


def torch_noise(seed, batch, dev):
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((batch, 4, 8, 8), generator=g).to(dev)


@torch.no_grad()
def evaluate(unet, text, vae, tokenizer, W, b, args, log, out):
    dev = next(unet.parameters()).device
    sched = Schedule(dev)

    def encode_text(prompts):
        return text(tokenize(tokenizer, prompts, dev)).last_hidden_state.float()

    def run(template, seeds, steps, cfg, batch=1):
        """Images for every digit and seed as the engine draws them: seed s
        gives torch.randn((batch,4,8,8)) on the CPU generator."""
        prompts, noises, digits = [], [], []
        for d in range(10):
            for s in seeds:
                nz = torch_noise(s, batch, dev)
                for j in range(batch):
                    prompts.append(template.format(w=WORDS[d], d=d, a=article(d)))
                    noises.append(nz[j:j + 1])
                    digits.append(d)
        ctx_c = encode_text(prompts)
        ctx_u = encode_text([""] * len(prompts))
        lat = sample_euler(unet, ctx_c, ctx_u, torch.cat(noises), sched, steps, cfg)
        imgs = decode(vae, lat / SCALING).float().clamp(-1, 1)
        pred = classify(ink_features(imgs), W, b)
        truth = torch.tensor(digits)
        return imgs, pred, truth

    results = {}
    seeds = list(range(1, 9))
    for template in ["a handwritten digit {w}", "{d}", "the number {d}"]:
        for cfg in [1.0, 2.0, 3.0, 5.0, 7.0]:
            for steps in [10, 20]:
                _, pred, truth = run(template, seeds, steps, cfg)
                acc = (pred == truth).float().mean().item()
                results[f"{template}|cfg{cfg}|steps{steps}"] = round(acc, 4)
                log(f"eval '{template}' cfg {cfg} steps {steps}: accuracy {acc:.3f}")

    # The exact configuration of the Go test (engine/demo): one request per
    # digit, seed 1, batch args.test_batch, euler/normal.
    imgs, pred, truth = run("a handwritten digit {w}", [1], args.test_steps, args.test_cfg, batch=args.test_batch)
    per_digit = {str(d): round((pred[truth == d] == d).float().mean().item(), 3) for d in range(10)}
    acc = (pred == truth).float().mean().item()
    log(f"go-test config (steps {args.test_steps}, cfg {args.test_cfg}, batch {args.test_batch}, seed 1): accuracy {acc:.3f} per digit {per_digit}")
    results["go_test"] = {"steps": args.test_steps, "cfg": args.test_cfg, "batch": args.test_batch, "seed": 1,
                          "accuracy": round(acc, 4), "per_digit": per_digit, "predictions": pred.tolist()}

    # Grid: per row a digit; first column a VAE reconstruction of a real
    # example, then 8 seeds at the recommended settings; nearest x4.
    g_imgs, g_pred, _ = run("a handwritten digit {w}", seeds, 20, args.test_cfg)
    return results, g_imgs, g_pred


def save_grid(path, real, gen, cols):
    """real [10,3,32,32], gen [10*cols,3,32,32] in [-1,1] -> PNG, nearest x4, 2px gutters."""
    tiles = []
    for d in range(10):
        row = [real[d]] + [gen[d * cols + j] for j in range(cols)]
        tiles.append(row)
    scale, gap = 4, 2
    tile = 32 * scale
    H = 10 * tile + 11 * gap
    Wd = (cols + 1) * tile + (cols + 2) * gap
    canvas = torch.full((H, Wd, 3), 128, dtype=torch.uint8)
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            u8 = ((im.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().permute(1, 2, 0)
            u8 = u8.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
            y0 = gap + r * (tile + gap)
            x0 = gap + c * (tile + gap)
            canvas[y0:y0 + tile, x0:x0 + tile] = u8
    write_png(path, canvas)


# ---------------------------------------------------------------- export

def save_f16(model, path, prefix="", skip=("position_ids",)):
    """Save the state dict in F16 under diffusers names. prefix is added to
    names that lack it (transformers 5 state dicts of CLIPTextModel have no
    "text_model." prefix; diffusers folders store it)."""
    from safetensors.torch import save_file

    sd = {(k if k.startswith(prefix) else prefix + k): v.detach().to(torch.float16).contiguous().cpu()
          for k, v in model.state_dict().items() if not any(s in k for s in skip)}
    save_file(sd, path)
    return sum(v.numel() for v in sd.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--tokenizer", default="testdata/reference/sd1-tiny-a/diffusers/tokenizer")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--vae-steps", type=int, default=2500)
    p.add_argument("--vae-seconds", type=float, default=100, help="safety stop: end VAE training after this long")
    p.add_argument("--vae-stop-at", type=int, default=0, help="end VAE training after this many steps (the cosine schedule still spans --vae-steps)")
    p.add_argument("--vae-batch", type=int, default=256)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    p.add_argument("--vae-channels", type=lambda v: [int(c) for c in v.split(",")], default=[32, 32, 32],
                   help="VAE block_out_channels, comma-separated (three levels, multiples of 32)")
    p.add_argument("--vae-init", default="", help="load this VAE (vae.safetensors of an earlier run) instead of training one")
    p.add_argument("--unet-channels", type=lambda v: [int(c) for c in v.split(",")], default=[32, 64],
                   help="UNet block_out_channels, comma-separated (multiples of 32)")
    p.add_argument("--unet-layers", type=int, default=2, help="UNet res blocks per level (layers_per_block)")
    p.add_argument("--unet-steps", type=int, default=0, help="0: as many as fit in --unet-seconds")
    p.add_argument("--unet-seconds", type=float, default=200)
    p.add_argument("--max-unet-steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--test-steps", type=int, default=12)
    p.add_argument("--test-cfg", type=float, default=5.0)
    p.add_argument("--test-batch", type=int, default=3)
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    log = Log(os.path.join(args.out, "train.log"))
    log("args", vars(args))
    seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    log(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}")

    from transformers import CLIPTokenizer
    import diffusers
    import transformers

    log(f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer)

    d, pixels, labels = load_data(dev)
    log(f"data: {pixels.shape[0]} images, labels {torch.bincount(labels).tolist()}")
    clf_info, W, b = fit_classifier(d, log)
    feats = ink_features(pixels)
    acc_rt = (classify(feats, W, b) == labels.cpu()).float().mean().item()
    log(f"classifier on 8x8 -> 32x32 bilinear -> 8x8 area average: acc {acc_rt:.4f}")
    with open(os.path.join(args.out, "classifier.json"), "w") as f:
        json.dump(clf_info, f, indent=1)

    # 1. VAE
    seed_all(args.seed)
    vae = make_vae(args.vae_channels).to(dev)
    log(f"vae params {sum(p.numel() for p in vae.parameters()) / 1e6:.3f}M")
    if args.vae_init:
        # A VAE trained (and folded) by an earlier run of this script.
        from safetensors.torch import load_file

        vae.load_state_dict({k: v.float() for k, v in load_file(args.vae_init).items()})
        vae.eval()
        latents = encode_mode(vae, pixels)
        zs = latents * SCALING
        log(f"vae loaded from {args.vae_init}: latents*{SCALING} mean {[round(v, 3) for v in zs.mean(dim=(0, 2, 3)).tolist()]} "
            f"std {[round(v, 3) for v in zs.std(dim=(0, 2, 3)).tolist()]}")
    else:
        train_vae(vae, pixels, args, log)
        vae.eval()
        latents = fold_latent_affine(vae, pixels, log)
    with torch.no_grad():
        rec = decode(vae, latents).float().clamp(-1, 1)
    mse = F.mse_loss((rec + 1) / 2, (pixels + 1) / 2).item()
    acc_rec = (classify(ink_features(rec), W, b) == labels.cpu()).float().mean().item()
    log(f"vae reconstruction: PSNR {10 * math.log10(1 / mse):.2f} dB, classifier acc on reconstructions {acc_rec:.4f}")
    vae.requires_grad_(False)

    # 2. UNet + text encoder
    seed_all(args.seed + 10)
    text = make_text_encoder().to(dev)
    unet = make_unet(args.unet_channels, args.unet_layers).to(dev)
    log(f"text encoder params {sum(p.numel() for p in text.parameters()) / 1e6:.3f}M, unet params {sum(p.numel() for p in unet.parameters()) / 1e6:.3f}M")
    text.train()
    unet.train()
    total = train_unet(unet, text, latents.detach(), labels, tokenizer, args, log)
    unet.eval()
    text.eval()

    # Rows of the token embedding that no caption uses were never trained:
    # zero them, so that an unknown word is a neutral token (position
    # embedding only) instead of a random vector, and the embedded checkpoint
    # compresses (49,408 rows x 64 are most of the file otherwise).
    used = used_token_ids(tokenizer)
    emb = text.get_input_embeddings().weight
    with torch.no_grad():
        keep = torch.zeros(emb.shape[0], dtype=torch.bool, device=emb.device)
        keep[used] = True
        emb[~keep] = 0
    log(f"token embedding: kept the {len(used)} rows the captions use, zeroed {int((~keep).sum())}")

    # Export first (so a late failure still leaves the weights).
    n_unet = save_f16(unet, os.path.join(args.out, "unet.safetensors"))
    n_vae = save_f16(vae, os.path.join(args.out, "vae.safetensors"))
    n_text = save_f16(text, os.path.join(args.out, "text_encoder.safetensors"), prefix="text_model.")
    log(f"saved F16: unet {n_unet}, vae {n_vae}, text {n_text} parameters ({2 * (n_unet + n_vae + n_text) / 2**20:.2f} MiB)")
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text.config.to_dict()}
    with open(os.path.join(args.out, "configs.json"), "w") as f:
        json.dump(configs, f, indent=1, default=str)

    # 3. Evaluate with the weights rounded to F16, as the engine sees them.
    for m in (unet, text, vae):
        for prm in m.parameters():
            prm.data = prm.data.half().float()
    results, g_imgs, g_pred = evaluate(unet, text, vae, tokenizer, W, b, args, log, args.out)
    real = torch.stack([rec[(labels == dd).nonzero()[0, 0]] for dd in range(10)])
    save_grid(os.path.join(args.out, "grid.png"), real, g_imgs, 8)
    log(f"grid predictions (rows = digits): {g_pred.view(10, 8).tolist()}")
    report = {"unet_steps": total, "vae_steps": args.vae_steps, "seed": args.seed,
              "classifier_roundtrip_acc": acc_rt, "vae_recon_classifier_acc": acc_rec,
              "vae_psnr_db": 10 * math.log10(1 / mse), "eval": results,
              "params": {"unet": n_unet, "vae": n_vae, "text": n_text}}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    log("done")


if __name__ == "__main__":
    sys.exit(main())
