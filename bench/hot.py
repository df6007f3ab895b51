"""HoT-MixSTE vs MixSTE on the CPU: FLOPs, latency and achieved GFLOP/s, measured side by side in one run.

    flock /tmp/tokenzoo-cpu.lock python bench/hot.py [--frames 243] [--repeats 3]

Both models at their released configuration (C=512, depth 8, 243 frames; HoT keeps 81 frames from block 3),
random weights (latency and FLOPs do not depend on them), batch 1, float32, torch's default threads.
Runs alternate between the two models so that machine noise hits both alike; the median is reported.
FLOPs come from torch.utils.flop_counter (every matmul-type op) on the meta device. The machine's matmul
rate is measured in the same run with a large square matmul, and each model's achieved GFLOP/s is
given against it. The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from video_pose.flops import count_flops, default_model  # noqa: E402


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=243)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    names = ("mixste", "hot-mixste")
    flops = {n: count_flops(default_model(n), (1, args.frames, 17, 2)) for n in names}
    models = {n: default_model(n, device="cpu").eval() for n in names}
    x = torch.rand(1, args.frames, 17, 2) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            models[n](x, generator=generator)
        for _ in range(args.repeats):
            for n in names:
                start = time.perf_counter()
                models[n](x, generator=generator)
                times[n].append(time.perf_counter() - start)
    peak = matmul_gflops()

    rows = {}
    for n in names:
        median = statistics.median(times[n])
        rate = flops[n]["flops_total"] / median / 1e9
        rows[n] = {"seconds": median, "gflops": flops[n]["flops_total"] / 1e9, "gflops_per_s": rate}
    print(f"batch 1, {args.frames} frames, {torch.get_num_threads()} threads, {args.repeats} timed runs each")
    header = ("model", "params", "GFLOPs", "Linear GFLOPs", "s/clip", "GFLOP/s", "of matmul")
    print(f"{header[0]:<12} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], (8, 8, 14, 8, 8, 10))))
    for n in names:
        r, f = rows[n], flops[n]
        print(
            f"{n:<12} {f['params'] / 1e6:>7.2f}M {r['gflops']:>8.2f} {f['flops_linear'] / 1e9:>14.2f} "
            f"{r['seconds']:>8.3f} {r['gflops_per_s']:>8.1f} {r['gflops_per_s'] / peak:>9.0%}"
        )
    print(f"large matmul (2048^3): {peak:.1f} GFLOP/s")
    result = {
        "bench": "hot",
        "flops_ratio": round(flops["hot-mixste"]["flops_total"] / flops["mixste"]["flops_total"], 4),
        "flops_ratio_linear": round(flops["hot-mixste"]["flops_linear"] / flops["mixste"]["flops_linear"], 4),
        "speedup": round(rows["mixste"]["seconds"] / rows["hot-mixste"]["seconds"], 3),
        "seconds_mixste": round(rows["mixste"]["seconds"], 3),
        "seconds_hot_mixste": round(rows["hot-mixste"]["seconds"], 3),
        "gflops_per_s_mixste": round(rows["mixste"]["gflops_per_s"], 1),
        "gflops_per_s_hot_mixste": round(rows["hot-mixste"]["gflops_per_s"], 1),
        "matmul_gflops_per_s": round(peak, 1),
        "frames": args.frames,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
