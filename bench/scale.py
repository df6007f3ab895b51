"""Scaling of tokenization across workers: Ray actors (zoo.ray) and `tokenzoo batch` processes, same inputs.

    python bench/scale.py                              # s3tokenizer-tiny, 200 clips of 4-10 s
    python bench/scale.py --clips 60 --model bpe-tiny  # any registered model; text models get text files

Inputs: ``--clips`` WAV files cut from the bundled held-out speech (audio/samples; concatenated and
sliced at seeded offsets so every clip differs), written once to a temporary folder. Every worker is
given one CPU thread (OMP_NUM_THREADS=1; Ray gives an actor as many as its num_cpus, 1), so N workers
can use N cores at most; the machine's core count caps the speedup.

Four runs on the same inputs:
- `tokenzoo batch`, 1 and 2 processes (``accelerate launch``, ACCELERATE_USE_CPU=1). Each process loads
  the model, waits for the others, then times ``zoo.tools.batch.run``: items/s = inputs / (last end -
  first start), so the figure is the tokenizing itself, model loading and interpreter start excluded.
- Ray, 1 and 2 actors (a local ``ray.init(num_cpus=2)``): ``zoo.ray.Tokenize`` in an actor pool, each
  call stamped with its start and end; items/s = inputs / (last end - first start). Ray Data is told
  to start the whole pool before the first call (``wait_for_min_actors_s``), so actor start-up is
  excluded in the same way. The Ray Data plan is the one ``tokenzoo batch --engine ray`` builds (same
  rows per task).
- end to end: the wall time of ``zoo.tools.ray.run`` (``tokenzoo batch --engine ray``, Parquet written),
  1 and 2 actors, start-up included, for reference.

Each configuration runs ``--repeats`` times (1 and 2 workers alternating) and the best rate is kept:
a busy machine only slows runs down. The ideal column is the one-worker rate times the workers.
Efficiency = speedup / workers. On a shared 2-core machine other jobs take cores away; the load
average is printed beside the figures.
The last line is one JSON object: ``ray_two_actor_efficiency`` (steady state) is the headline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_clips(folder: Path, count: int, low: float, high: float, seed: int = 0) -> list[str]:
    """``count`` speech clips of ``low``-``high`` seconds cut from the bundled held-out clips."""
    import numpy as np
    import soundfile

    speech = np.concatenate(
        [soundfile.read(p, dtype="float32")[0] for p in sorted((ROOT / "audio/samples").glob("*.wav"))]
    )
    speech = np.concatenate([speech, speech[::-1], speech])  # long enough for the longest clip
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        n = int(rng.uniform(low, high) * 16000)
        start = int(rng.integers(0, len(speech) - n))
        path = folder / f"clip{i:04d}.wav"
        soundfile.write(path, speech[start : start + n] * rng.uniform(0.5, 1.0), 16000)
        paths.append(str(path))
    return paths


def make_texts(folder: Path, count: int, seed: int = 0) -> list[str]:
    import numpy as np

    words = (ROOT / "README.md").read_text(encoding="utf-8").split()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        start = int(rng.integers(0, len(words) - 400))
        (folder / f"doc{i:04d}.txt").write_text(" ".join(words[start : start + 400]), encoding="utf-8")
        paths.append(str(folder / f"doc{i:04d}.txt"))
    return paths


# ---- tokenzoo batch (accelerate) ----------------------------------------------------------------------
def batch_worker(args) -> None:
    """One accelerate process: load, wait for the others, time zoo.tools.batch.run, print the window."""
    import torch

    import zoo
    import zoo.tools.batch
    from zoo.tools.options import process_state

    torch.set_num_threads(1)
    state = process_state(cpu=True)
    model = zoo.load(args.model, device="cpu")
    inputs = Path(args.list_file).read_text().split("\n")
    state.wait_for_everyone()
    start = time.time()
    zoo.tools.batch.run(model, inputs, args.out, batch_size=args.batch_size, shard_size=args.shard_size, progress=False)
    print(json.dumps({"process": state.process_index, "start": start, "end": time.time()}), flush=True)


def run_batch(processes: int, list_file: Path, out: Path, args) -> float:
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(processes)]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(29500 + os.getpid() % 1000)]
    command += [__file__, "--batch-worker", "--model", args.model, "--list-file", str(list_file), "--out", str(out)]
    command += ["--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"accelerate launch failed:\n{done.stderr[-3000:]}")
    windows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"process"')]
    return min(w["start"] for w in windows), max(w["end"] for w in windows)


# ---- Ray ----------------------------------------------------------------------------------------------
def timed_stage():
    import pyarrow as pa

    import zoo.ray

    class TimedTokenize(zoo.ray.Tokenize):
        """Tokenize whose rows carry the wall-clock start and end of the call that made them."""

        def __call__(self, batch):
            start = time.time()
            table = super().__call__(batch)
            end = time.time()
            table = table.append_column("call_start", pa.array([start] * table.num_rows, pa.float64()))
            return table.append_column("call_end", pa.array([end] * table.num_rows, pa.float64()))

    return TimedTokenize


def run_ray_stage(actors: int, inputs: list[str], args) -> tuple[float, float, int]:
    import ray

    per_task = max(1, min(args.shard_size, math.ceil(len(inputs) / (4 * actors))))  # zoo.tools.ray.run's rule
    items = [{"index": i, "source": s} for i, s in enumerate(inputs)]
    dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_task))
    rows = dataset.map_batches(
        timed_stage(),
        fn_constructor_kwargs={"model": args.model, "batch_size": args.batch_size},
        batch_size=per_task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    ).materialize()
    stamps = rows.select_columns(["call_start", "call_end", "error"]).to_pandas()
    return float(stamps["call_start"].min()), float(stamps["call_end"].max()), int(stamps["error"].notna().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="s3tokenizer-tiny")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, nargs=2, default=(4.0, 10.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=25, help="inputs per batch shard / per Ray task at most")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, alternating; best kept")
    parser.add_argument("--batch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--list-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_worker:
        return batch_worker(args)

    import ray
    import torch

    import zoo
    import zoo.tools.ray

    modality = zoo.load(args.model).modality
    work = Path(tempfile.mkdtemp(prefix="tokenzoo-scale-"))
    if modality == "audio":
        inputs = make_clips(work / "in", args.clips, *args.seconds)
    else:
        inputs = make_texts(work / "in", args.clips)
    list_file = work / "inputs.txt"
    list_file.write_text("\n".join(inputs))
    n = len(inputs)
    print(
        f"{args.model}: {n} inputs; torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{os.cpu_count()} cores; one thread per worker; load average before: {os.getloadavg()[0]:.2f}")

    rates: dict[str, float] = {}
    for repeat in range(args.repeats):  # 1 and 2 alternate; the best of the repeats is kept
        for processes in (1, 2):
            start, end = run_batch(processes, list_file, work / f"batch{processes}-{repeat}", args)
            rate = n / (end - start)
            rates[f"batch_{processes}"] = max(rate, rates.get(f"batch_{processes}", 0.0))
            print(f"  tokenzoo batch, {processes} process(es): {rate:.1f} items/s")

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = 600  # the whole pool is up (model loaded) before the first call
    walls: dict[int, float] = {}
    try:
        for _ in range(args.repeats):
            for actors in (1, 2):
                start, end, errors = run_ray_stage(actors, inputs, args)
                if errors:
                    raise SystemExit(f"{errors} inputs failed in the Ray stage")
                rate = n / (end - start)
                rates[f"ray_{actors}"] = max(rate, rates.get(f"ray_{actors}", 0.0))
                print(f"  Ray, {actors} actor(s): {rate:.1f} items/s")
        for actors in (1, 2):
            began = time.time()
            zoo.tools.ray.run(
                args.model, inputs, work / f"ray-run{actors}", actors=actors, batch_size=args.batch_size,
                shard_size=args.shard_size, progress=False,
            )  # fmt: skip
            walls[actors] = time.time() - began
            print(f"  tokenzoo batch --engine ray, {actors} actor(s), end to end: {walls[actors]:.1f} s")
    finally:
        ray.shutdown()

    print(f"\n{'engine':<34}{'workers':>8}{'items/s':>10}{'ideal':>10}{'efficiency':>12}")
    for engine, key in (("tokenzoo batch (accelerate)", "batch"), ("zoo.ray (Ray Data actors)", "ray")):
        one = rates[f"{key}_1"]
        for workers in (1, 2):
            rate = rates[f"{key}_{workers}"]
            print(f"{engine:<34}{workers:>8}{rate:>10.1f}{one * workers:>10.1f}{rate / (one * workers):>12.2f}")
    print(f"{'tokenzoo batch --engine ray (wall)':<34}{'1 / 2':>8}{walls[1]:>9.1f}s{walls[2]:>9.1f}s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    summary = {
        "bench": "scale",
        "model": args.model,
        "inputs": n,
        "ray_two_actor_efficiency": round(rates["ray_2"] / (2 * rates["ray_1"]), 3),
        "batch_two_process_efficiency": round(rates["batch_2"] / (2 * rates["batch_1"]), 3),
        "ray_items_per_s": [round(rates["ray_1"], 2), round(rates["ray_2"], 2)],
        "batch_items_per_s": [round(rates["batch_1"], 2), round(rates["batch_2"], 2)],
        "ray_end_to_end_s": [round(walls[1], 1), round(walls[2], 1)],
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
