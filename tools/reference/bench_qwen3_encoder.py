#!/usr/bin/env python3
"""Time transformers' Qwen3-4B (random weights, bfloat16, GPU) encoding a
512-token prompt as diffusers' ZImagePipeline does (output_hidden_states,
hidden_states[-2]), eager and SDPA attention, for docs/llm-encoders.md; the
Go side is engine/models/qwenllm's TestBenchQwen3_4B (QWENLLM_BENCH=1).

Usage (no network): python3 tools/reference/bench_qwen3_encoder.py
"""
import time

import torch
import transformers
from transformers import Qwen3Config, Qwen3Model


def main():
    cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                      max_position_embeddings=40960, tie_word_embeddings=True)
    ids = ((torch.arange(512) * 7919 + 13) % cfg.vocab_size)[None].cuda()
    mask = torch.ones_like(ids)
    print("transformers", transformers.__version__, "torch", torch.__version__, torch.cuda.get_device_name())
    for impl in ("sdpa", "eager"):
        cfg._attn_implementation = impl
        with torch.device("cuda"):
            model = Qwen3Model._from_config(cfg, torch_dtype=torch.bfloat16).eval()
        times = []
        with torch.no_grad():
            for _ in range(6):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        print(f"{impl}: Qwen3-4B, 512 tokens, bf16, hidden_states[-2] {tuple(h.shape)}: "
              + ", ".join(f"{t * 1000:.1f} ms" for t in times) + f"; best of last 5 {min(times[1:]) * 1000:.1f} ms")
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
