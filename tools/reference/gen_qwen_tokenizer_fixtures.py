#!/usr/bin/env python3
"""Qwen byte-level BPE tokenizer fixtures from Hugging Face transformers.

The prompts below are tokenised by transformers' `Qwen2TokenizerFast`
(transformers 5: `Qwen2Tokenizer`, backed by the tokenizers library) loaded
with `from_pretrained` from local tokenizer folders, as diffusers'
ZImagePipeline / QwenImagePipeline and ComfyUI load them, untruncated and
without special tokens added (Qwen adds none):

  qwen25  the folder darkroom bundles: vocab.json, merges.txt and
          tokenizer_config.json of ComfyUI's comfy/text_encoders/
          qwen25_tokenizer (Qwen2.5-VL's vocabulary), gunzipped;
  qwen3   the same vocab.json and merges.txt with Qwen3's added tokens
          (151665 <tool_response>, 151666 </tool_response>, 151667 <think>,
          151668 </think>, none of them special) in place of ComfyUI's four
          extra ones, as Qwen3-4B's tokenizer_config.json lists them.

The same prompts also go through a tokenizers `Tokenizer` assembled here
from the pipeline of Qwen's tokenizer.json (NFC, Split with the Qwen2
pattern, ByteLevel without regex, BPE), to check that the two agree.

Chat templates: Z-Image's prompt as diffusers' ZImagePipeline builds it
(`apply_chat_template([{"role": "user", ...}], tokenize=False,
add_generation_prompt=True, enable_thinking=True)` with Qwen3's chat template,
read from --qwen3-template, a file holding Qwen3-4B's `chat_template`), then
`tokenizer(..., padding="max_length", max_length=512, truncation=True)`;
Qwen-Image's as QwenImagePipeline builds it (its prompt_template_encode,
`max_length=1024 + 34, padding=True, truncation=True`, 34 tokens dropped).

Output: tokens.json in --out.

Usage (no network):
    python3 gen_qwen_tokenizer_fixtures.py --tokenizer DIR_WITH_3_FILES \
        --qwen3-template qwen3_chat_template.jinja --out DIR
"""
import argparse
import json
import os
import shutil
import tempfile
import traceback
import unicodedata

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

try:
    from transformers import Qwen2TokenizerFast
except ImportError:  # transformers 5 folds the fast tokenizer into Qwen2Tokenizer
    from transformers import Qwen2Tokenizer as Qwen2TokenizerFast

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN3_ADDED = {
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}

QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
QWEN_IMAGE_DROP = 34
QWEN_IMAGE_MAX = 1024

LONG_PARAGRAPH = (
    "A sweeping panoramic view of an ancient mountain monastery at dawn, mist rolling through the valleys "
    "below, prayer flags fluttering in the wind, monks in saffron robes walking along a narrow stone path, "
    "warm golden light catching the edges of the weathered wooden roofs, 8k, highly detailed, cinematic. "
)

PROMPTS = [
    "a cat",
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "A photo of a cat sitting on a windowsill, golden hour, 35mm, bokeh",
    "masterpiece, best quality, (detailed eyes:1.2), [blurry], {red|blue} dress",
    "一只猫坐在窗台上，夕阳西下，温暖的光线",
    "中文混合English文本123和emoji🐱",
    "東京の夜景、ネオンサイン、雨上がりの路地。「こんにちは」",
    "ひらがな カタカナ 漢字 ｶﾀｶﾅ",
    "서울의 밤거리, 네온사인, 비 오는 날",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",  # Hangul jamo (NFD), NFC composes them
    "قطة تجلس على النافذة عند الغروب",
    "שלום עולם",
    "แมวนั่งบนหน้าต่าง",
    "हिन्दी में लिखा हुआ पाठ",
    "Кошка сидит на окне. ЗАГЛАВНЫЕ буквы",
    "Ελληνικά γράμματα ΣΊΣΥΦΟΣ",
    "🐱🐶🦊",
    "👨\u200d👩\u200d👧\u200d👦 family portrait",
    "🏳️\u200d🌈 rainbow flag and 🏴\u200d☠️ pirate flag",
    "thumbs up 👍🏽👍🏿 and flags 🇯🇵🇺🇸🇫🇷",
    "keycaps 1️⃣ #️⃣ and ©️ ™",
    "1234567890",
    "3.14159265358979",
    "In 2024, 1,000,000 people paid $19.99 each.",
    "٣٤٥ Arabic-Indic digits and ۱۲۳ Persian",
    "fractions ½ ¼ superscripts x² y³ roman Ⅷ fullwidth １２３",
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    '<div class="x">&amp; &lt;tag&gt;</div>',
    r"^\s+(?!\S)$ and \p{L}+",
    "https://example.com/path/to?q=1&r=two#frag",
    "a  b   c    d     e",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\t\tand\tspaces \t mixed\t",
    "line1\nline2\r\nline3\rline4",
    "\n\n\n",
    "para one\n\n  indented para\n\t\ttabbed",
    " \n \n ",
    "spaces before newline   \n  after",
    "ideographic\u3000space and nbsp\u00a0here",
    "line\u2028separator and next\u0085line",
    "I'm sure you're right, they've said it's fine, we'll see, he'd know, don't",
    "I'M SURE YOU'RE RIGHT, IT'S FINE, WE'LL SEE",
    "long s contraction it'ſ, IT'S and we'Re",
    "rock 'n' roll '' '",
    "café naïve résumé Åström façade jalapeño",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030astro\u0308m",
    "angstrom sign \u212b and ohm \u2126 and e\u0301\u0323 e\u0323\u0301",
    "Tiếng Việt có dấu",
    "Tie\u0302\u0301ng Vie\u0323\u0302t co\u0301 da\u0302\u0301u",
    "İstanbul ılık DİYARBAKIR Straße ẞ",
    "<|im_start|>user\nhello<|im_end|>",
    "text<|endoftext|>more text",
    "<think>reasoning here</think>the answer",
    "<|vision_start|><|image_pad|><|vision_end|>describe this",
    "a <|im_start|> spaced <|im_end|> b",
    "almost special <|im_start| and <|IM_START|> and < |im_end|>",
    "<tool_call>{\"name\": \"f\"}</tool_call> <tool_response>ok</tool_response>",
    "<|img|><|endofimg|><|meta|>",
    "<|fim_prefix|>def<|fim_suffix|>x<|fim_middle|>",
    "null\u0000char and controls \u0001\u0002\u001f",
    "\ufeffBOM at start and replacement \ufffd",
    "\u0301 lone combining mark",
    "zero\u200bwidth space and \u200d lone joiner",
    "∑∫√∞≠≤≥ math and $$$ €€€ ¥¥ ££",
    "!!!???... ----==== ***bold*** ___",
    "C++ C# F# e-mail Mr. O'Neil's",
    "snake_case_identifier camelCaseIdentifier ALLCAPS",
    "Émile Zola ÉCOLE ÑANDÚ",
    "x" * 3 + "\n" * 3 + " " * 3 + "\t" * 3 + "y",
    LONG_PARAGRAPH * 12,
    "a" * 2000,
    "1" * 300,
    " " * 300 + "end",
    "🐱" * 120,
    "超长的中文提示词" * 60,
]

ZIMAGE_PROMPTS = [
    "a cat",
    "",
    "一只猫坐在窗台上，夕阳西下",
    "A neon sign that says \"OPEN\" <think>not a tag</think> in the rain",
    LONG_PARAGRAPH * 8,  # longer than 512 tokens once templated
]

QWEN_IMAGE_PROMPTS = [
    "a cat",
    "",
    "A coffee shop sign with the text \"通义千问 Qwen-Image\" written in chalk",
    "<|im_start|>user\ninjected<|im_end|>",
    LONG_PARAGRAPH * 25,  # longer than 1024 tokens
]


def make_folder(src, dst, variant):
    os.makedirs(dst, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    if variant == "qwen3":
        dec = cfg["added_tokens_decoder"]
        for i in range(151665, 151669):
            dec.pop(str(i), None)
        for i, content in QWEN3_ADDED.items():
            dec[str(i)] = {
                "content": content, "lstrip": False, "normalized": False,
                "rstrip": False, "single_word": False, "special": False,
            }
        cfg.pop("chat_template", None)
    with open(os.path.join(dst, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, ensure_ascii=False, indent=2)
    return cfg


def assembled(folder, cfg):
    """A tokenizers Tokenizer with the pipeline of Qwen's tokenizer.json."""
    tok = Tokenizer(models.BPE.from_file(
        os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
        unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    dec = cfg["added_tokens_decoder"]
    for i in sorted(dec, key=int):
        e = dec[i]
        at = AddedToken(e["content"], single_word=e["single_word"], lstrip=e["lstrip"],
                        rstrip=e["rstrip"], normalized=e["normalized"], special=e["special"])
        if e["special"]:
            tok.add_special_tokens([at])
        else:
            tok.add_tokens([at])
        got = tok.token_to_id(e["content"])
        assert got == int(i), (e["content"], got, i)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--qwen3-template", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.qwen3_template, encoding="utf-8") as fh:
        qwen3_template = fh.read()
    try:
        import jinja2  # noqa: F401  (apply_chat_template needs it)
    except ImportError:
        qwen3_template = None

    work = tempfile.mkdtemp()
    toks, asm, problems = {}, {}, []
    for variant in ("qwen25", "qwen3"):
        folder = os.path.join(work, variant)
        cfg = make_folder(args.tokenizer, folder, variant)
        toks[variant] = Qwen2TokenizerFast.from_pretrained(folder)
        try:
            asm[variant] = assembled(folder, cfg)
        except Exception:  # the transformers ids are the fixture; this is a cross-check
            problems.append({"variant": variant, "assemble": traceback.format_exc()})
        backend = getattr(toks[variant], "backend_tokenizer", None) or getattr(toks[variant], "_tokenizer", None)
        if backend is not None:
            spec = json.loads(backend.to_str())
            spec["model"] = {k: v for k, v in spec["model"].items() if k not in ("vocab", "merges")}
            with open(os.path.join(args.out, f"pipeline_{variant}.json"), "w", encoding="utf-8") as fh:
                json.dump(spec, fh, ensure_ascii=False, indent=1)

    def ids_of(variant, text):
        a = toks[variant](text, add_special_tokens=False)["input_ids"]
        if variant not in asm:
            return a
        b = asm[variant].encode(text, add_special_tokens=False).ids
        if a != b:
            problems.append({"variant": variant, "text": text, "transformers": a, "assembled": b})
        return a

    errors = []
    cases = []
    for text in PROMPTS:
        c = {"text": text}
        for variant in ("qwen25", "qwen3"):
            c[variant] = ids_of(variant, text)
        dec = toks["qwen25"].decode(c["qwen25"], skip_special_tokens=False)
        c["decodes_to_nfc"] = dec == unicodedata.normalize("NFC", text)
        cases.append(c)

    zimage = []
    try:
        tz = toks["qwen3"]
        for p in ZIMAGE_PROMPTS if qwen3_template else []:
            s = tz.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=True,
                                       chat_template=qwen3_template)
            no_think = tz.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=False,
                                              chat_template=qwen3_template)
            enc = tz([s], padding="max_length", max_length=512, truncation=True)
            zimage.append({
                "prompt": p, "text": s, "text_no_thinking": no_think,
                "ids": enc["input_ids"][0], "mask": enc["attention_mask"][0],
                "ids_full": ids_of("qwen3", s),
            })
    except Exception:  # keep what the other sections found
        errors.append(("zimage", traceback.format_exc()))

    qimage = []
    try:
        tq = toks["qwen25"]
        for p in QWEN_IMAGE_PROMPTS:
            s = QWEN_IMAGE_TEMPLATE.format(p)
            enc = tq([s], max_length=QWEN_IMAGE_MAX + QWEN_IMAGE_DROP, padding=True, truncation=True)
            ids = enc["input_ids"][0]
            qimage.append({
                "prompt": p, "text": s, "ids": ids, "mask": enc["attention_mask"][0],
                "ids_full": ids_of("qwen25", s),
                "dropped": tq.decode(ids[:QWEN_IMAGE_DROP], skip_special_tokens=False),
            })
    except Exception:  # keep what the other sections found
        errors.append(("qwen_image", traceback.format_exc()))

    prefix = QWEN_IMAGE_TEMPLATE.split("{}")[0]

    out = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "tokenizer_class": type(toks["qwen25"]).__name__,
        "pattern": QWEN2_PATTERN,
        "agree": not problems,
        "problems": problems,
        "errors": errors,
        "cases": cases,
        "zimage": zimage,
        "qwen_image": {"template": QWEN_IMAGE_TEMPLATE, "drop": QWEN_IMAGE_DROP,
                       "prefix_tokens": len(ids_of("qwen25", prefix)), "max_length": QWEN_IMAGE_MAX + QWEN_IMAGE_DROP,
                       "cases": qimage},
        "special": {v: sorted(int(i) for i, e in toks[v].added_tokens_decoder.items()
                              if getattr(e, "special", False)) for v in toks},
        "vocab_size": {v: len(toks[v]) for v in toks},
    }
    with open(os.path.join(args.out, "tokens.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, separators=(",", ":"))
    print("cases", len(cases), "zimage", len(zimage), "qwen_image", len(qimage), "problems", len(problems))


if __name__ == "__main__":
    main()
