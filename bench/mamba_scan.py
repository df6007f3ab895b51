"""Selective scan speed: tokenzoo's chunked CPU scan vs the sequential reference vs the ``mambapy`` package.

All three compute the same thing in the same run on the same inputs: Mamba-1's selective scan with
delta softplus + bias, D skip and SiLU(z) gate, B=1, E=64 channels, N=16 states (the width of
TokenUnify's first stage), float32. mambapy's path is its own ``selective_scan`` recipe (materialise
exp(delta A) and delta B u, ``mambapy.pscan.pscan``, contract with C) in its (B, L, E) layout.

The sequential reference under autograd needs one graph node per time step, so its forward+backward
runs only up to ``--ref-max-bwd`` (default 4096); its forward alone up to ``--ref-max-fwd``.

    python bench/mamba_scan.py            # L = 1k, 4k, 16k, 64k
    python bench/mamba_scan.py --lengths 1024 4096

Ends with one JSON line: {"bench": "mamba_scan", "speedup_vs_reference_4k": .., "speedup_vs_mambapy_4k": ..}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from em_volume.mamba import selective_scan  # noqa: E402


def make_inputs(length: int, channels: int = 64, states: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(1, channels, length, generator=g)
    delta = torch.randn(1, channels, length, generator=g) * 0.5
    A = -torch.exp(torch.randn(channels, states, generator=g) * 0.5)
    B = torch.randn(1, states, length, generator=g)
    C = torch.randn(1, states, length, generator=g)
    D = torch.randn(channels, generator=g)
    z = torch.randn(1, channels, length, generator=g)
    bias = torch.randn(channels, generator=g) * 0.3
    return [u, delta, A, B, C, D, z, bias]


def ours(backend):
    def run(u, delta, A, B, C, D, z, bias):
        return selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, backend=backend)

    return run


def mambapy_scan(u, delta, A, B, C, D, z, bias):
    from mambapy.pscan import pscan

    # mambapy works in (B, L, E) / (B, L, N)
    x, dt = u.transpose(1, 2), F.softplus(delta + bias[:, None]).transpose(1, 2)
    b_in, c_in = B.transpose(1, 2), C.transpose(1, 2)
    decay = torch.exp(dt.unsqueeze(-1) * A)
    drive = (dt * x).unsqueeze(-1) * b_in.unsqueeze(2)
    hs = pscan(decay, drive)
    y = (hs @ c_in.unsqueeze(-1)).squeeze(3) + D * x
    return (y * F.silu(z.transpose(1, 2))).transpose(1, 2)


def timed(fn, inputs, backward: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        xs = [t.detach().clone().requires_grad_(backward) for t in inputs]
        start = time.perf_counter()
        if backward:
            y = fn(*xs)
            y.backward(torch.ones_like(y))
        else:
            with torch.no_grad():
                fn(*xs)
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--ref-max-fwd", type=int, default=16384)
    parser.add_argument("--ref-max-bwd", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows, summary = [], {}
    for length in args.lengths:
        inputs = make_inputs(length)
        repeats = args.repeats if length <= 16384 else 1
        # agreement first (forward), against mambapy, which is independent of our code
        with torch.no_grad():
            diff = (ours("chunked")(*inputs) - mambapy_scan(*inputs)).abs().max().item()
        row = {"L": length, "max_abs_diff_vs_mambapy": diff}
        for name, fn in (("chunked", ours("chunked")), ("mambapy", mambapy_scan), ("reference", ours("reference"))):
            for backward in (False, True):
                limit = args.ref_max_bwd if backward else args.ref_max_fwd
                key = f"{name}_{'fwdbwd' if backward else 'fwd'}_s"
                if name == "reference" and length > limit:
                    row[key] = None
                    continue
                row[key] = timed(fn, inputs, backward, 1 if name == "reference" else repeats)
        rows.append(row)
        print(
            f"L={length:6d}  chunked fwd {row['chunked_fwd_s']:.4f}s fwd+bwd {row['chunked_fwdbwd_s']:.4f}s | "
            f"mambapy fwd {row['mambapy_fwd_s']:.4f}s fwd+bwd {row['mambapy_fwdbwd_s']:.4f}s | "
            f"reference fwd {row['reference_fwd_s'] or float('nan'):.4f}s "
            f"fwd+bwd {row['reference_fwdbwd_s'] or float('nan'):.4f}s | max|diff| {diff:.1e}",
            flush=True,
        )
        if length == 4096:
            if row["reference_fwdbwd_s"]:
                summary["speedup_vs_reference_4k"] = round(row["reference_fwdbwd_s"] / row["chunked_fwdbwd_s"], 2)
            summary["speedup_vs_mambapy_4k"] = round(row["mambapy_fwdbwd_s"] / row["chunked_fwdbwd_s"], 2)
            summary["speedup_vs_reference_fwd_4k"] = round(row["reference_fwd_s"] / row["chunked_fwd_s"], 2)
            summary["speedup_vs_mambapy_fwd_4k"] = round(row["mambapy_fwd_s"] / row["chunked_fwd_s"], 2)
    for row in rows:
        if row["L"] == max(r["L"] for r in rows):
            summary[f"speedup_vs_mambapy_fwdbwd_{row['L']}"] = round(
                row["mambapy_fwdbwd_s"] / row["chunked_fwdbwd_s"], 2
            )
    print(json.dumps({"bench": "mamba_scan", **summary, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
