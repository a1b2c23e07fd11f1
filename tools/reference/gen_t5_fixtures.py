#!/usr/bin/env python3
"""T5 v1.1 tokenizer and encoder fixtures from Hugging Face transformers.

Tokenizer: the prompts below are tokenised with `T5TokenizerFast` loaded from
a local tokenizer folder (the one darkroom bundles: FLUX.1-schnell's
`tokenizer_2/`, whose tokenizer.json is the T5 v1.1 vocabulary), exactly as a
diffusers Flux pipeline loads it, untruncated and with
`max_length=N, truncation=True, padding="max_length"` for N = 256 and 512.
The same prompts also go through the `tokenizers` library directly, from
the file as it is and from a "legacy" rewrite of it (the normalizer and
pre-tokenizer of the original t5-v1_1 tokenizer.json that ComfyUI ships:
Precompiled + Replace(" {2,}" -> " "), WhitespaceSplit + Metaspace), so
both pipeline layouts are covered.

Encoder: a tiny random `T5EncoderModel` in the T5 v1.1 architecture
(gated-GELU, untied relative-position bias in block 0, RMS layer norms),
its weights rounded to float16 and saved as one safetensors file, run in
float32 on the CPU on a few token sequences, with and without an
attention mask. Also saved: the relative-position buckets of
`T5Attention._relative_position_bucket` for distances -700..700, the
per-layer hidden states of one case, and (with --cuda) the model's output in
float16 on the GPU (transformers clamps fp16 hidden states in every block).

Output (DIR): tokens.json, model.safetensors (F16 weights, transformers'
T5EncoderModel names, "shared.weight" as the only embedding copy),
encoder.json (cases: ids, mask, whether the mask was passed; buckets;
config), encoder.safetensors (float32 hidden states "c<i>/hidden",
"c<i>/layer<j>", "c<i>/fp16_cuda").

Usage (no network):
    python3 tools/reference/gen_t5_fixtures.py --tokenizer .ref/t5/t5_tokenizer --out DIR [--cuda]
"""
import argparse
import copy
import hashlib
import json
import os

import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

try:
    from transformers import T5TokenizerFast
except ImportError:  # transformers 5 folds the fast tokenizer into T5Tokenizer
    from transformers import T5Tokenizer as T5TokenizerFast

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A cute cat wearing a tiny wizard hat, digital art, trending on artstation",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    inner     spaces",
    "tabs\tand\tmore\t\ttabs",
    "new\nlines\n\nand\r\ncarriage returns",
    "naïve café résumé — Ångström, façade, jalapeño",
    "Straße, Œuvre, æsir, ŁÓDŹ, İstanbul, ǅemal",
    "東京の夜景、ネオンが光る街並み",
    "一只可爱的猫在草地上玩耍",
    "서울의 밤거리 풍경",
    "Привет, мир! Ёлка и щука",
    "Γειά σου Κόσμε, αβγδε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "emoji 🐱🚀🔥 and 👩‍👩‍👧 family, flags 🇯🇵",
    "digits 0123456789 3.14159 1,000,000 2024-01-31 12:30:45",
    "full-width ＡＢＣ１２３ and ｶﾀｶﾅ half-width",
    "ligatures ﬁ ﬂ ﬀ, superscripts x² y³, fractions ½ ¼, roman Ⅻ",
    "punctuation!!! ??? ... ,,, ;;; ::: --- ___ +++ === ### $$$ %%% &&& ***",
    "(((masterpiece))), [best quality], {detailed}, <lora:foo:0.8>",
    "quotes \"double\" 'single' «guillemets» „German“ 「Japanese」",
    "C:\\path\\to\\file.txt and /usr/local/bin and https://example.com/a?b=c&d=e",
    "email@example.com #hashtag @mention",
    "mixed CASE Words, CamelCase, snake_case, kebab-case",
    "zero\u200bwidth\u200cjoiner\u200dtext and soft\u00adhyphen",
    "non\u00a0breaking\u2003em\u2009thin spaces",
    "control\u0001chars\u0007here\u007f",
    "accents combining: e\u0301 a\u0300 o\u0308 n\u0303",
    "the </s> eos in text and <pad> and <unk> and <extra_id_0> sentinel",
    "▁already▁has▁metaspace ▁x",
    "a",
    "A",
    ".",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    " ".join(["word"] * 300),
    ", ".join("a beautiful landscape painting of mountains at sunset with a lake" for _ in range(60)),
    "x " * 254 + "end",
    "x " * 255 + "end",
    "x " * 510 + "end",
    "x " * 511 + "end",
    "\u3000ideographic\u3000space\u3000",
    "\ufeffbyte order mark",
    "Tschüß! Ça va? ¿Qué tal? ¡Hola!",
]

MAX_LENGTHS = (256, 512)


def legacy_json(doc):
    """The original t5-v1_1 tokenizer.json pipeline over the same vocabulary."""
    doc = copy.deepcopy(doc)
    charsmap = None
    for n in doc["normalizer"]["normalizers"]:
        if n["type"] == "Precompiled":
            charsmap = n["precompiled_charsmap"]
    doc["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ],
    }
    doc["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        ],
    }
    return doc


def with_length(tok, n):
    """A copy of tok that truncates and pads to n (n = 0: neither)."""
    t = tokenizers.Tokenizer.from_str(tok.to_str())
    if n:
        t.enable_truncation(max_length=n)
        t.enable_padding(length=n, pad_id=0, pad_token="<pad>")
    return t


def tokenizer_fixtures(folder):
    path = os.path.join(folder, "tokenizer.json")
    raw_bytes = open(path, "rb").read()
    doc = json.loads(raw_bytes)
    file_tok = tokenizers.Tokenizer.from_file(path)
    legacy_tok = tokenizers.Tokenizer.from_str(json.dumps(legacy_json(doc)))
    try:
        hf = T5TokenizerFast.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - report and fall back to the file alone
        print(f"from_pretrained failed ({e}); using tokenizer_file=")
        hf = T5TokenizerFast(tokenizer_file=path)
    variants = {name: {n: with_length(tok, n) for n in (0,) + MAX_LENGTHS}
                for name, tok in (("file", file_tok), ("legacy", legacy_tok))}
    backend = hf.backend_tokenizer
    out = {
        "tokenizer_sha256": hashlib.sha256(raw_bytes).hexdigest(),
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "torch": torch.__version__},
        "hf_class": type(hf).__name__,
        "hf_normalizer": str(backend.normalizer),
        "hf_pre_tokenizer": str(backend.pre_tokenizer),
        "prompts": PROMPTS,
        "hf": [],
        "file": [],
        "legacy": [],
    }
    for text in PROMPTS:
        enc = hf(text)
        case = {"ids": enc["input_ids"], "mask": enc["attention_mask"],
                "tokens": hf.convert_ids_to_tokens(enc["input_ids"])}
        for n in MAX_LENGTHS:
            e = hf(text, max_length=n, truncation=True, padding="max_length")
            case[f"ids{n}"] = e["input_ids"]
            case[f"mask{n}"] = e["attention_mask"]
        out["hf"].append(case)
        for name, toks in variants.items():
            c = {"ids": toks[0].encode(text).ids}
            for n in MAX_LENGTHS:
                e = toks[n].encode(text)
                c[f"ids{n}"], c[f"mask{n}"] = e.ids, e.attention_mask
            out[name].append(c)
    same = sum(1 for a, b in zip(out["hf"], out["file"]) if a["ids"] == b["ids"] and a["ids512"] == b["ids512"])
    out["hf_equals_file"] = same
    print(f"tokenizer: {type(hf).__name__}, hf == tokenizers(file) on {same}/{len(PROMPTS)} prompts")
    return hf, out


def tiny_model():
    cfg = T5Config(
        vocab_size=32128, d_model=32, d_kv=16, num_heads=4, d_ff=64, num_layers=3,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0,
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )
    try:
        cfg._attn_implementation = "eager"
    except Exception:  # noqa: BLE001 - older configs have no setter
        pass
    torch.manual_seed(1234)
    model = T5EncoderModel(cfg).eval()
    # Calibrated init: unit embeddings, layer-norm weights away from 1, a
    # relative bias that matters, q/k large enough for peaked (not uniform)
    # attention without scaling.
    std = {"q": 0.15, "k": 0.15, "v": 0.2, "o": 0.15, "wi_0": 0.25, "wi_1": 0.25, "wo": 0.15}
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2]
            if name.endswith("shared.weight") or name.endswith("embed_tokens.weight"):
                p.normal_(0, 1.0)
            elif "layer_norm" in name:
                p.uniform_(0.6, 1.4)
            elif "relative_attention_bias" in name:
                p.normal_(0, 1.0)
            elif leaf in std:
                p.normal_(0, std[leaf])
            else:
                raise SystemExit(f"unexpected parameter {name}")
            p.copy_(p.half().float())
    return cfg, model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_grad_enabled(False)

    hf, toks = tokenizer_fixtures(args.tokenizer)
    with open(os.path.join(args.out, "tokens.json"), "w") as f:
        json.dump(toks, f, ensure_ascii=False, separators=(",", ":"))

    cfg, model = tiny_model()
    sd = {}
    state = model.state_dict()
    for k, v in state.items():
        if k == "encoder.embed_tokens.weight" and "shared.weight" in state:
            continue  # the tied copy of shared.weight
        sd[k] = v.detach().half().contiguous().clone()
    save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})

    long_prompt = ", ".join("a beautiful landscape painting of mountains at sunset with a lake" for _ in range(25))
    specs = [  # (prompts, max_length or 0 for untruncated/unpadded, pass mask)
        (["a photograph of an astronaut riding a horse"], 0, False),
        (["a photograph of an astronaut riding a horse"], 32, True),
        (["a photograph of an astronaut riding a horse"], 32, False),
        ([long_prompt], 0, False),
        (["cat"], 16, True),
        (["cat"], 16, False),
        (["a red fox in the snow", "東京の夜景 at night, neon lights 🚀"], 24, True),
        (["a red fox in the snow", "東京の夜景 at night, neon lights 🚀"], 24, False),
    ]
    cases, tensors = [], {}
    for i, (prompts, n, use_mask) in enumerate(specs):
        if n:
            enc = hf(prompts, max_length=n, truncation=True, padding="max_length", return_tensors="pt")
        else:
            enc = hf(prompts, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        kw = {"attention_mask": mask} if use_mask else {}
        out = model(input_ids=ids, output_hidden_states=True, **kw)
        tensors[f"c{i}/hidden"] = out.last_hidden_state.float().clone()
        if i == 3:
            for j, hs in enumerate(out.hidden_states):
                tensors[f"c{i}/layer{j}"] = hs.float().clone()
        if args.cuda and torch.cuda.is_available():
            try:
                m16 = copy.deepcopy(model).half().cuda()
                kw16 = {"attention_mask": mask.cuda()} if use_mask else {}
                o16 = m16(input_ids=ids.cuda(), **kw16).last_hidden_state
                tensors[f"c{i}/fp16_cuda"] = o16.float().cpu().clone()
            except Exception as e:  # noqa: BLE001 - optional
                print(f"fp16 cuda case {i} failed: {e}")
        h = out.last_hidden_state
        print(f"case {i}: ids {tuple(ids.shape)} mask={use_mask} hidden std {h.std():.3f} "
              f"absmax {h.abs().max():.3f}")
        cases.append({"prompts": prompts, "max_length": n, "masked": use_mask,
                      "ids": ids.tolist(), "mask": mask.tolist()})
    save_file(tensors, os.path.join(args.out, "encoder.safetensors"))

    from transformers.models.t5.modeling_t5 import T5Attention
    rel = torch.arange(-700, 701, dtype=torch.long)
    try:
        buckets = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=32,
                                                        max_distance=128).tolist()
    except Exception as e:  # noqa: BLE001 - the Go test skips the table then
        print(f"bucket table failed: {e}")
        buckets = []
    hs = tensors.get("c3/layer1")
    if hs is not None:
        print(f"layer-1 hidden std {hs.std():.3f}; distinct buckets {len(set(buckets))}")
    with open(os.path.join(args.out, "encoder.json"), "w") as f:
        json.dump({"config": json.loads(cfg.to_json_string()), "cases": cases,
                   "bucket_from": -700, "buckets": buckets,
                   "versions": toks["versions"]}, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
