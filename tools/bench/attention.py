"""PyTorch's scaled_dot_product_attention at the shapes of
engine/backend/cuda's BenchmarkFlashAttention, for a same-call comparison:
each backend torch has (flash, cuDNN, efficient), bf16 and fp16, CUDA-event
medians after a warm-up. Prints one line per shape and backend."""
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import time_ms  # noqa: E402

SHAPES = [
    ("sd15_4096_d40", 2, 4096, 4096, 8, 40),
    ("sdxl_4096_d64", 2, 4096, 4096, 10, 64),
    ("sd35l_4429_d64", 2, 4429, 4429, 38, 64),
    ("zimage_4224_d128", 1, 4224, 4224, 30, 128),
    ("flux_4608_d128", 1, 4608, 4608, 24, 128),
]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    for dt in (torch.bfloat16, torch.float16):
        for name, b, nq, nk, h, d in SHAPES:
            # darkroom's layout is [B, N, H*D]; torch's kernels take [B, H, N, D] views of it.
            q = torch.randn(b, nq, h, d, device="cuda", dtype=dt).transpose(1, 2)
            k = torch.randn(b, nk, h, d, device="cuda", dtype=dt).transpose(1, 2)
            v = torch.randn(b, nk, h, d, device="cuda", dtype=dt).transpose(1, 2)
            flops = 4 * b * h * nq * nk * d
            for bname, be in BACKENDS:
                try:
                    with sdpa_kernel(be):
                        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), 3, 20)
                    print(f"torch {str(dt)[6:]} {name} {bname}: {ms:.3f} ms {flops / ms / 1e9:.0f} TFLOP/s")
                except RuntimeError as e:
                    print(f"torch {str(dt)[6:]} {name} {bname}: unavailable ({str(e).splitlines()[0][:80]})")


if __name__ == "__main__":
    main()
