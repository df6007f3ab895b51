"""Every bundled model on the GPU, in fp32 and under bf16 autocast, against CPU fp32 on the same inputs.

    python bench/gpu_check.py            # on a CUDA machine; elsewhere it says so and exits 0

For each model that loads offline (``zoo.registry.bundled_models``) it encodes the family's
``sample_inputs`` on CPU fp32 (the reference), then on CUDA in fp32 and in bf16 autocast, and decodes
the CPU tokens on each device. It checks:

- ids: the fraction of valid positions whose id differs from CPU (flip rate) is at most
  ``ID_FLIP_TOLERANCE`` (fp32: 0.1%, bf16: 5%; ids sit behind argmin/rounding, so bf16 moves a few);
- floats (embeddings, decoded tensors): max |GPU - CPU| / max |CPU| at most ``FLOAT_TOLERANCE``
  (fp32: 1e-3, bf16: 5e-2); decoded text must be identical;
- timing: median wall time of encode and decode per batch (3 runs after a warm-up, synchronized).

It prints one table and ends with one JSON line; the exit code is 1 if any check failed. A model
still unchecked when ``TIME_BUDGET_S`` is spent is listed as skipped, so the run ends in < 8 minutes.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo  # noqa: E402
from zoo.api import Tokens  # noqa: E402
from zoo.errors import NotSupportedError  # noqa: E402
from zoo.registry import bundled_models  # noqa: E402

ID_FLIP_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}
FLOAT_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}
TIME_BUDGET_S = 420
REPEATS = 3


def to_device(value: Any, device: torch.device) -> Any:
    from accelerate.utils import send_to_device

    return send_to_device(value, device)


def timed(fn, device: torch.device) -> tuple[Any, float]:
    """(result, median seconds) of ``fn()`` over REPEATS runs after one warm-up, synchronized."""
    result = fn()
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def flip_rate(reference: Tokens, other: Tokens) -> float | None:
    if reference.ids is None:
        return None
    other = other.to("cpu")
    if other.ids.shape != reference.ids.shape or not torch.equal(other.mask, reference.mask):
        return 1.0
    valid = reference.mask
    return float((other.ids[valid] != reference.ids[valid]).float().mean()) if valid.any() else 0.0


def relative_error(reference: Any, other: Any) -> float | None:
    """max |a - b| / max |a| over float tensors (recursing into lists/tuples); 0/1 for text; None if n/a."""
    if isinstance(reference, Tokens):
        if reference.embeddings is None:
            return None
        return relative_error(reference.embeddings, other.to("cpu").embeddings)
    if isinstance(reference, torch.Tensor) and reference.is_floating_point():
        other = other.detach().float().cpu()
        reference = reference.detach().float().cpu()
        if other.shape != reference.shape:
            return float("inf")
        return float((other - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
    if isinstance(reference, str):
        return 0.0 if reference == other else 1.0
    if isinstance(reference, (list, tuple)) and reference and len(reference) == len(other):
        errors = [e for e in (relative_error(a, b) for a, b in zip(reference, other)) if e is not None]
        return max(errors) if errors else None
    return None


def check_model(name: str, device: torch.device) -> list[dict[str, Any]]:
    model = zoo.load(name, device="cpu", dtype=torch.float32)
    items = model.sample_inputs()
    if not items:
        raise NotSupportedError(f"{name} offers no sample inputs to check it on")
    batch = model.collate(items)
    reference, cpu_encode_s = timed(lambda: model.encode(batch), torch.device("cpu"))
    decoded_reference, cpu_decode_s = None, None
    if model.supports_decode:
        decoded_reference, cpu_decode_s = timed(lambda: model.decode(reference), torch.device("cpu"))
    rows = [
        {"model": name, "modality": model.modality, "mode": "cpu fp32", "items": len(items), "flip_rate": 0.0}
        | {"float_error": 0.0, "encode_ms": 1000 * cpu_encode_s}
        | {"decode_ms": None if cpu_decode_s is None else 1000 * cpu_decode_s, "status": "reference"}
    ]
    model = model.to(device)
    gpu_batch = to_device(batch, device)
    gpu_reference = reference.to(device)
    for mode in ("fp32", "bf16"):

        def run(fn, mode=mode):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                return fn()

        tokens, encode_s = timed(lambda: run(lambda: model.encode(gpu_batch)), device)
        flips = flip_rate(reference, tokens)
        errors = [relative_error(reference, tokens)]
        decode_s = None
        if decoded_reference is not None:
            decoded, decode_s = timed(lambda: run(lambda: model.decode(gpu_reference)), device)
            errors.append(relative_error(decoded_reference, decoded))
        errors = [e for e in errors if e is not None]
        float_error = max(errors) if errors else None
        ok = (flips is None or flips <= ID_FLIP_TOLERANCE[mode]) and (
            float_error is None or float_error <= FLOAT_TOLERANCE[mode]
        )
        rows.append(
            {"model": name, "modality": model.modality, "mode": f"{device.type} {mode}", "items": len(items)}
            | {"flip_rate": flips, "float_error": float_error, "encode_ms": 1000 * encode_s}
            | {"decode_ms": None if decode_s is None else 1000 * decode_s, "status": "PASS" if ok else "FAIL"}
        )
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (run it on a GPU machine).")
        print(json.dumps({"bench": "gpu_check", "cuda": False}))
        return 0
    device = torch.device("cuda")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    skipped = []
    for name in bundled_models():
        if time.monotonic() - started > TIME_BUDGET_S:
            skipped.append(name)
            continue
        try:
            rows += check_model(name, device)
        except NotSupportedError as err:
            skipped.append(f"{name} ({err})")
        except Exception as err:  # report and go on: one broken family must not hide the others
            rows.append({"model": name, "mode": "error", "status": f"FAIL: {type(err).__name__}: {err}"})
    columns = ["model", "modality", "mode", "items", "flip_rate", "float_error", "encode_ms", "decode_ms", "status"]
    print(f"GPU check on {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"tolerances: id flip rate {ID_FLIP_TOLERANCE}, relative float error {FLOAT_TOLERANCE}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    if skipped:
        print("\nskipped: " + ", ".join(skipped))
    failures = sum(str(r["status"]).startswith("FAIL") for r in rows)
    print(
        json.dumps(
            {
                "bench": "gpu_check",
                "cuda": True,
                "models": len({r["model"] for r in rows}),
                "failures": failures,
                "skipped": len(skipped),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
