"""Timing helpers the benchmarks share: best-of-n wall time, a matmul peer, FLOP counting."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize()


def timed(fn, device: torch.device, repeats: int = 1) -> float:
    """The best wall time of ``repeats`` calls of ``fn`` (seconds), synchronising accelerators."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matmul: the peer each benchmark's achieved rate is a fraction of."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    return 2 * n**3 / timed(lambda: a @ b, device, repeats) / 1e9


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
