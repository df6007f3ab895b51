"""Load and first-call time: ``zoo.load`` of each bundled model and its first encode, and the CLI's start-up.

    flock /tmp/tokenzoo-cpu.lock python bench/load.py [--repeats 3] [--models 'flextok*']

Each measurement runs in a fresh interpreter, as a user's first call does: import zoo, ``zoo.load(name)``,
then one ``encode`` of the model's first sample input (``collate(sample_inputs()[:1])``). The child reports
its stage times and its peak resident memory (ru_maxrss). The peer, in the same run, is a fresh interpreter
that only imports torch: every model pays that, so each model's figures are also given above it.
CLI start-up is ``python -m zoo.cli --help`` in a fresh interpreter (what the ``tokenzoo`` script runs).
The best of --repeats is kept for times (a busy machine only slows runs down), the peak RSS of that run beside
it. The last line is one JSON object: the slowest model, its figures, and the CLI start-up.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in the child. Times from the child's own clock; RSS is the child's high-water mark in MiB (Linux: KiB units).
CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
result = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
          "torch_import_s": after_torch - start}
name = sys.argv[1]
if name:
    import zoo
    t0 = time.perf_counter()
    model = zoo.load(name)
    t1 = time.perf_counter()
    batch = model.collate(model.sample_inputs()[:1])
    t2 = time.perf_counter()
    model.encode(batch)
    t3 = time.perf_counter()
    result.update(zoo_import_s=t0 - after_torch, load_s=t1 - t0, collate_s=t2 - t1, first_encode_s=t3 - t2)
result["total_s"] = time.perf_counter() - start
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def measure(name: str) -> dict:
    """One fresh interpreter loading ``name`` (empty: torch alone) and encoding once; its wall time included."""
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", CHILD, name], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600
    )
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{name or 'torch'}: the child failed:\n{run.stderr[-2000:]}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "process_s": wall}


def cli_startup() -> float:
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--help"], cwd=ROOT, env=child_env(), capture_output=True, timeout=120
    )
    if run.returncode != 0:
        raise RuntimeError(f"tokenzoo --help failed:\n{run.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def bundled() -> list[str]:
    """Bundled model names, listed in a child so this process stays free of the families it times."""
    code = "import json; from zoo.registry import bundled_models; print(json.dumps(bundled_models()))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["process_s"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model (best kept)")
    parser.add_argument("--models", default="*", help="fnmatch pattern over the bundled models")
    args = parser.parse_args(argv)

    names = [n for n in bundled() if fnmatch.fnmatch(n, args.models)]
    rows: dict[str, dict] = {}
    peer: list[dict] = []
    cli: list[float] = []
    for _ in range(args.repeats):  # rounds alternate over everything, so machine noise spreads alike
        peer.append(measure(""))
        cli.append(cli_startup())
        for name in names:
            rows.setdefault(name, []).append(measure(name))
    torch_only = best(peer)
    rows = {n: best(r) for n, r in rows.items()}
    cli_s = min(cli)

    print(f"cpu capability {torch_only['capability']}, threads {torch_only['threads']}, {args.repeats} fresh runs each")
    header = f"{'model':<20}{'process s':>10}{'load s':>8}{'1st enc s':>10}{'peak MB':>9}{'above torch s':>14}"
    print(header)
    peer_row = f"{'(import torch only)':<20}{torch_only['process_s']:>10.2f}{'':>18}{torch_only['peak_rss_mb']:>9.0f}"
    print(peer_row)
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["process_s"]):
        above = r["process_s"] - torch_only["process_s"]
        print(
            f"{name:<20}{r['process_s']:>10.2f}{r['load_s']:>8.2f}{r['first_encode_s']:>10.2f}"
            f"{r['peak_rss_mb']:>9.0f}{above:>14.2f}"
        )
    print(f"tokenzoo --help (python -m zoo.cli --help): {cli_s:.2f} s (best of {len(cli)})")
    slowest = max(rows, key=lambda n: rows[n]["process_s"]) if rows else None
    s = rows.get(slowest, {})
    result = {
        "bench": "load",
        "slowest_model": slowest,
        "slowest_process_s": round(s.get("process_s", 0.0), 3),
        "slowest_load_s": round(s.get("load_s", 0.0), 3),
        "slowest_first_encode_s": round(s.get("first_encode_s", 0.0), 3),
        "slowest_peak_rss_mb": round(s.get("peak_rss_mb", 0.0)),
        "slowest_over_torch_import": round(s.get("process_s", 0.0) / torch_only["process_s"], 2),
        "torch_import_process_s": round(torch_only["process_s"], 3),
        "torch_import_peak_rss_mb": round(torch_only["peak_rss_mb"]),
        "cli_startup_s": round(cli_s, 3),
        "models": len(rows),
        "capability": torch_only["capability"],
        "threads": torch_only["threads"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
