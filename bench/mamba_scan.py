"""Selective scan speed: tokenzoo's chunked CPU scan vs the sequential reference vs the ``mambapy`` package.

All three compute the same thing in the same run on the same inputs: Mamba-1's selective scan with
delta softplus + bias, D skip and SiLU(z) gate, B=1, E=64 channels, N=16 states (the width of
TokenUnify's first stage), float32. mambapy's path is its own ``selective_scan`` recipe (materialise
exp(delta A) and delta B u, ``mambapy.pscan.pscan``, contract with C) in its (B, L, E) layout.

The sequential reference under autograd needs one graph node per time step, so its forward+backward
runs only up to ``--ref-max-bwd`` (default 4096); its forward alone up to ``--ref-max-fwd``.

Forward+backward runs also return every input's gradient, compared with mambapy's (the largest
difference relative to the gradient's largest magnitude, within --grad-rtol for ``grads_equal``), and
record the memory high-water mark: the process's resident memory sampled every millisecond during the
run, above its level at the start (glibc's free heap is trimmed before each run, and large tensors go
back to the system when freed, so this follows the live tensors). ``min_speedup_vs_mambapy`` is the
smallest fwd+bwd ratio over all lengths.

    flock /tmp/tokenzoo-cpu.lock python bench/mamba_scan.py            # L = 1k, 4k, 16k, 64k
    ATEN_CPU_CAPABILITY=avx2 python bench/mamba_scan.py                # the second configuration on AVX-512 machines
    python bench/mamba_scan.py --lengths 1024 4096

Ends with one JSON line: {"bench": "mamba_scan", "min_speedup_vs_mambapy": .., "grads_equal": .., ...}.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
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


class PeakMemory:
    """Resident memory high-water mark (MB above the level at entry), sampled by a thread every millisecond.

    On entry, glibc's free heap memory is handed back to the system (malloc_trim), so that tensors reusing it
    fault their pages in again and show in the resident size, as in a fresh process.
    """

    PAGE = os.sysconf("SC_PAGE_SIZE")

    @classmethod
    def rss(cls) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * cls.PAGE

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the figure may then under-count reused memory
            pass
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())
        self.mb = (self.peak - self.start) / 2**20


def timed(fn, inputs, backward: bool, repeats: int) -> float:
    return timed_run(fn, inputs, backward, repeats)[0]


def timed_run(fn, inputs, backward: bool, repeats: int) -> tuple[float, list, float]:
    """Best wall time of ``repeats`` runs, the inputs' gradients of the last (backward only), its memory peak (MB)."""
    best, grads, peak = float("inf"), [], 0.0
    for _ in range(repeats):
        xs = [t.detach().clone().requires_grad_(backward) for t in inputs]
        with PeakMemory() as memory:
            start = time.perf_counter()
            if backward:
                y = fn(*xs)
                y.backward(torch.ones_like(y))
            else:
                with torch.no_grad():
                    fn(*xs)
            best = min(best, time.perf_counter() - start)
        grads, peak = [x.grad for x in xs], memory.mb
        del xs
    return best, grads, peak


def grad_difference(grads, reference) -> float:
    """The largest |difference| of any input's gradient, relative to that gradient's largest magnitude."""
    return max(
        float((g - r).abs().max() / r.abs().max().clamp_min(1e-30))
        for g, r in zip(grads, reference)
        if g is not None and r is not None
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--ref-max-fwd", type=int, default=16384)
    parser.add_argument("--ref-max-bwd", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad-rtol", type=float, default=1e-4, help="gradients agree within this (relative)")
    args = parser.parse_args()

    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}", flush=True)
    warm = make_inputs(256)
    for fn in (ours("chunked"), mambapy_scan):  # first-call costs (thread pools, autograd) out of the timings
        timed_run(fn, warm, True, 1)
    rows, summary = [], {}
    for length in args.lengths:
        inputs = make_inputs(length)
        repeats = args.repeats if length <= 16384 else 1
        # agreement first (forward), against mambapy, which is independent of our code
        with torch.no_grad():
            diff = (ours("chunked")(*inputs) - mambapy_scan(*inputs)).abs().max().item()
        row = {"L": length, "max_abs_diff_vs_mambapy": diff}
        grads = {}
        for name, fn in (("chunked", ours("chunked")), ("mambapy", mambapy_scan), ("reference", ours("reference"))):
            for backward in (False, True):
                limit = args.ref_max_bwd if backward else args.ref_max_fwd
                key = f"{name}_{'fwdbwd' if backward else 'fwd'}_s"
                if name == "reference" and length > limit:
                    row[key] = None
                    continue
                seconds, grads[name], peak = timed_run(fn, inputs, backward, 1 if name == "reference" else repeats)
                row[key] = seconds
                if backward and name != "reference":
                    row[f"{name}_fwdbwd_peak_mb"] = round(peak, 1)
        row["grad_rel_diff_vs_mambapy"] = grad_difference(grads["chunked"], grads["mambapy"])
        row["speedup_vs_mambapy_fwdbwd"] = row["mambapy_fwdbwd_s"] / row["chunked_fwdbwd_s"]
        rows.append(row)
        print(
            f"L={length:6d}  chunked fwd {row['chunked_fwd_s']:.4f}s fwd+bwd {row['chunked_fwdbwd_s']:.4f}s "
            f"(peak {row['chunked_fwdbwd_peak_mb']:.0f} MB) | mambapy fwd {row['mambapy_fwd_s']:.4f}s "
            f"fwd+bwd {row['mambapy_fwdbwd_s']:.4f}s (peak {row['mambapy_fwdbwd_peak_mb']:.0f} MB) | "
            f"reference fwd {row['reference_fwd_s'] or float('nan'):.4f}s "
            f"fwd+bwd {row['reference_fwdbwd_s'] or float('nan'):.4f}s | "
            f"fwd+bwd {row['speedup_vs_mambapy_fwdbwd']:.2f}x mambapy | "
            f"max|diff| {diff:.1e}, grads {row['grad_rel_diff_vs_mambapy']:.1e}",
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
            summary[f"speedup_vs_mambapy_fwdbwd_{row['L']}"] = round(row["speedup_vs_mambapy_fwdbwd"], 2)
    summary["min_speedup_vs_mambapy"] = round(min(r["speedup_vs_mambapy_fwdbwd"] for r in rows), 2)
    summary["grads_equal"] = all(r["grad_rel_diff_vs_mambapy"] <= args.grad_rtol for r in rows)
    summary["peak_mb"] = {
        r["L"]: {"chunked": r["chunked_fwdbwd_peak_mb"], "mambapy": r["mambapy_fwdbwd_peak_mb"]} for r in rows
    }
    print(
        json.dumps(
            {
                "bench": "mamba_scan",
                **summary,
                "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
