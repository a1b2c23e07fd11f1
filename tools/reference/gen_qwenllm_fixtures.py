#!/usr/bin/env python3
"""Fixtures for engine/models/qwenllm from Hugging Face transformers.

Two tiny random decoder-only language models, run in float32 on the CPU:

* qwen3: transformers' Qwen3ForCausalLM (Z-Image's text encoder is a
  Qwen3-4B): grouped-query attention, per-head q_norm/k_norm, no q/k/v bias,
  RoPE theta 1e6, tied lm_head.
* qwen25vl: transformers' Qwen2_5_VLForConditionalGeneration (Qwen-Image's
  text encoder is Qwen2.5-VL-7B) with a one-block vision tower that text
  never reaches: q/k/v biases, no q/k norms, multimodal RoPE with an
  mrope_section. Run on text only, through the full model (whose
  get_rope_index builds the three position rows from the attention mask)
  and, for comparison, through its Qwen2_5_VLTextModel alone with no
  position ids: the report gives the largest difference.

Weights are rounded to float16 (so that the saved F16 file is exactly the
model that ran) and saved under the names the released checkpoints use
(model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, …,
model.norm.weight; no lm_head, no visual.*). Token ids are fed directly
(vocab 512). Cases: single sequences and a right-padded batch with its
attention_mask, as both pipelines pad (the tokenizer's default
padding_side "right").

Saved per case: every decoder layer's raw output (forward hooks:
"c<i>/layer<j>", j = 1..L), transformers' hidden_states tuple
("c<i>/hs<k>", k = 0..L) and last_hidden_state ("c<i>/last").

Output (DIR): <arch>.safetensors (F16 weights), <arch>_out.safetensors
(float32 states), qwenllm.json (config, cases, report).

Usage (no network):
    python3 tools/reference/gen_qwenllm_fixtures.py --out DIR
"""
import argparse
import json
import os

import torch
import transformers
from safetensors.torch import save_file

VOCAB = 512
CASES = [
    {"ids": [[3, 17, 250, 99, 4, 480, 7]], "mask": None},
    {"ids": [[11, 12, 13, 500, 2, 1, 0, 300, 301, 302, 77, 88, 99]], "mask": None},
    {"ids": [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [400, 401, 402, 403, 404, 405, 0, 0, 0, 0]],
     "mask": [[1] * 10, [1] * 6 + [0] * 4]},
    {"ids": [[42] * 3 + [43] * 3], "mask": None},
]


def calibrate(model, seed):
    """Random weights large enough that every part matters, rounded to F16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                fan_in = p.shape[1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())


def text_state(model, prefix_in):
    """The language model's weights under the released names."""
    out = {}
    for k, v in model.state_dict().items():
        if not k.startswith(prefix_in):
            continue
        out["model." + k[len(prefix_in):]] = v.detach().half().contiguous()
    return out


def run_cases(model, layers, tag, results, extra=None):
    for i, case in enumerate(CASES):
        ids = torch.tensor(case["ids"])
        mask = torch.tensor(case["mask"]) if case["mask"] is not None else None
        raw = {}
        hooks = [layer.register_forward_hook(
            lambda m, a, o, j=j: raw.__setitem__(j, (o[0] if isinstance(o, tuple) else o).detach().clone()))
            for j, layer in enumerate(layers)]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        for h in hooks:
            h.remove()
        for j in range(len(layers)):
            results[f"c{i}/layer{j + 1}"] = raw[j].float().contiguous()
        for k, h in enumerate(out.hidden_states):
            results[f"c{i}/hs{k}"] = h.float().clone()
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.hidden_states[-1]
        results[f"c{i}/last"] = last.float().clone()
        if extra is not None:
            extra(i, ids, mask)


def qwen3(out_dir, report):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                      max_position_embeddings=1024, tie_word_embeddings=True, attention_bias=False,
                      rope_theta=1e6)
    if hasattr(cfg, "rope_parameters") and isinstance(cfg.rope_parameters, dict):
        cfg.rope_parameters["rope_theta"] = 1e6
    cfg._attn_implementation = "eager"
    torch.manual_seed(1)
    model = Qwen3ForCausalLM(cfg).eval()
    calibrate(model, 1)
    print("qwen3 config:", cfg)
    keys = [k for k, _ in model.named_parameters()]
    prefix = "model." if any(k.startswith("model.layers.") for k in keys) else ""
    save_file(text_state(model, prefix), os.path.join(out_dir, "qwen3.safetensors"))
    res = {}
    run_cases(model, model.model.layers, "qwen3", res)
    save_file(res, os.path.join(out_dir, "qwen3_out.safetensors"))
    report["qwen3"] = {"config": json.loads(cfg.to_json_string()), "n_hidden_states": 4}


def qwen25vl(out_dir, report):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                max_position_embeddings=1024, tie_word_embeddings=False)
    variants = [  # transformers 5 names it rope_parameters, 4 rope_scaling
        dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
        dict(rope_theta=1e6, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
    ]
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[0], in_channels=3)
    cfg, tc, rp = None, None, None
    for v in variants:
        try:
            c = Qwen2_5_VLConfig(text_config={**base, **v}, vision_config=vision, image_token_id=509,
                                 video_token_id=510, vision_start_token_id=508, vision_end_token_id=511,
                                 tie_word_embeddings=False)
        except Exception as e:  # noqa: BLE001 - try the other spelling
            print("config variant failed:", v, e)
            continue
        t = c.text_config if hasattr(c, "text_config") else c
        r = getattr(t, "rope_parameters", None) or getattr(t, "rope_scaling", None)
        print("qwen2.5-vl text rope:", r, "theta", getattr(t, "rope_theta", None))
        if r and r.get("mrope_section") == [2, 3, 3]:
            cfg, tc, rp = c, t, r
            break
    assert cfg is not None, "no config variant kept the mrope_section"
    cfg._attn_implementation = "eager"
    if hasattr(tc, "_attn_implementation"):
        tc._attn_implementation = "eager"
    torch.manual_seed(2)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    calibrate(model, 2)
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
    keys = [k for k, _ in model.named_parameters()]
    print("qwen2.5-vl parameter names:", [k for k in keys if "layers.0." in k or "visual" not in k][:20])
    prefix = next(k for k in keys if k.endswith("layers.0.self_attn.q_proj.weight"))
    prefix = prefix[: -len("layers.0.self_attn.q_proj.weight")]
    save_file(text_state(model, prefix), os.path.join(out_dir, "qwen25vl.safetensors"))
    res = {}
    diffs = []
    positions = []

    def extra(i, ids, mask):
        # The full model's 3-row text positions, and the text model alone.
        try:
            pos, _ = model.model.get_rope_index(ids, None, None, attention_mask=mask)
            positions.append(pos.tolist())
        except Exception as e:  # noqa: BLE001 - report only
            positions.append(f"get_rope_index failed: {e}")
        with torch.no_grad():
            o = lm(input_ids=ids, attention_mask=mask, use_cache=False)
        ref = res[f"c{i}/last"]
        valid = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.bool()
        diffs.append(float((o.last_hidden_state - ref)[valid].abs().max()))

    run_cases(model, lm.layers, "qwen25vl", res, extra)
    save_file(res, os.path.join(out_dir, "qwen25vl_out.safetensors"))
    report["qwen25vl"] = {"config": json.loads(tc.to_json_string()),
                          "text_model_vs_full_max_abs_diff": diffs, "rope_index_positions": positions}
    print("qwen2.5-vl: text model alone vs full model (valid tokens), max |diff|:", diffs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(4)
    report = {"versions": {"transformers": transformers.__version__, "torch": torch.__version__},
              "cases": CASES}
    errors = []
    for fn in (qwen3, qwen25vl):
        try:
            fn(a.out, report)
        except Exception as e:  # noqa: BLE001 - one architecture failing must not lose the other
            import traceback
            traceback.print_exc()
            errors.append(f"{fn.__name__}: {e}")
    report["errors"] = errors
    with open(os.path.join(a.out, "qwenllm.json"), "w") as f:
        json.dump(report, f, indent=1)
    # Diagnostics for the docs: transformers' own text-only mrope and mask handling.
    try:
        import inspect
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m
        src = inspect.getsource(m)
        with open(os.path.join(a.out, "modeling_qwen2_5_vl_excerpt.txt"), "w") as f:
            for name in ("apply_multimodal_rotary_pos_emb", "Qwen2_5_VLRotaryEmbedding"):
                obj = getattr(m, name, None)
                if obj is not None:
                    f.write(inspect.getsource(obj) + "\n\n")
            i = src.find("def get_rope_index")
            f.write(src[i:i + 6000])
    except Exception as e:  # noqa: BLE001
        print("excerpt failed:", e)
    print("errors:", errors)


if __name__ == "__main__":
    main()
