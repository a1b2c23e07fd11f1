"""time_ms: the median of CUDA-event times of a call after a warm-up, the
timing every side-by-side script uses."""
import statistics

import torch


def time_ms(fn, warm=5, runs=20):
    """Median milliseconds of fn over runs calls, after warm calls."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)
