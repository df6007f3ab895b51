"""Batch inference over many files: ``tokenzoo batch MODEL INPUTS... --out DIR`` and ``zoo.tools.batch.run``.

Inputs are files, folders, globs (``'data/**/*.wav'``) or list files (``@list.txt``, one path per
line). They are cut into shards of ``shard_size`` inputs in the order given; each shard is one unit of
work and one Parquet file (``shard-00000.parquet``), written atomically, so a shard file on disk is
always complete. Shards are split between the processes ``accelerate launch`` starts
(``PartialState.split_between_processes``); because a shard's content depends only on the plan, one
process and two write the same files. ``resume=True`` skips shards already written, so a run killed
with ``kill -9`` and resumed ends with the files an uninterrupted run writes.

Within a shard, items are sorted by the model's ``batch_key`` (audio length, say) and grouped into
batches of at most ``batch_size`` items whose padded size ``max(key) * count`` stays under
``max_batch_units``. A batch that fails is retried item by item; an input that still fails is written
to the shard's errors and to ``errors.jsonl`` and the run goes on.

One Parquet row per input: ``source`` (the path), ``index`` (its position among the inputs), ``ids``
(list<int64>, the valid ids; null for continuous tokens), ``embeddings`` (list<list<float32>> for
continuous tokens, else null), ``length`` (valid tokens), ``meta`` (JSON: that sample's Tokens.meta,
leaving out per-sample tensors of more than ``MAX_META_VALUES`` values, such as cached activations),
``model`` and ``revision`` (the Hub commit sha the model was loaded at; for a local folder the
sha256 of its weights). ``manifest.json`` lists the shards, counts and the model.

Corpus containers: a Parquet/Arrow file or a WebDataset shard stands for its items (``field`` names
the column, or the member extensions); ``zoo.tools.inputs`` is the one reader layer every engine uses.

Engines: this module is the one-machine engine (one process, or the processes ``accelerate launch``
starts); ``engine="ray"`` (``--engine ray [--address ADDR]``) runs the same job on a Ray cluster
through ``zoo.tools.ray`` and writes Parquet with Ray's writer. ``ENGINES`` names each engine's
runner as "module:function", imported only when chosen (Ray is an optional extra).

With ``write_outputs`` (``--write-outputs``, models that ``supports_decode``) each item is also
decoded (``reconstruct``) and written by the model's ``save_output`` hook into a folder beside its
shard, ``shard-00000/000012.wav`` for input 12 (TouchTTS: speech for each text; an image family:
``.png``); the row's meta names the file under ``output``. A shard's outputs are written before its
Parquet file, so a finished shard has all of them.

The run reaches the family only through the hooks ``zoo.api.ZooModel`` declares: ``load_item``
(one file -> one item), ``batch_key`` (bucketing), ``collate`` (items -> the batch ``encode`` takes),
and for outputs ``reconstruct`` and ``save_output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.api import Tokens, ZooModel, check_device, check_output_dir
from zoo.errors import ConfigError, InputError
from zoo.files import WEIGHTS_NAME, atomic_write, sha256_file
from zoo.tools.inputs import InputReader, resolve_sources
from zoo.tools.options import add_model_options, model_options, process_state

logger = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.jsonl"
FORMAT = "tokenzoo.batch/1"
# Each engine's runner, imported only when chosen; each takes ``run``'s arguments.
ENGINES = {"accelerate": "zoo.tools.batch:run", "ray": "zoo.tools.ray:run"}


# ---- model identity ----------------------------------------------------------------------------
def _state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def model_identity(model: ZooModel) -> tuple[str, str]:
    """(name, revision) to stamp on every row: the name the model was loaded by, and the Hub commit sha it
    was loaded at; for a local folder the sha256 of its weights file, for a model built in memory a hash
    of its state."""
    name = model.name or model.arch
    if model.revision:
        return name, model.revision
    weights = Path(model.source) / WEIGHTS_NAME if model.source else None
    if weights is not None and weights.is_file():
        return name, "sha256:" + sha256_file(weights)[:16]
    return name, _state_digest(model)


# ---- shards ------------------------------------------------------------------------------------
def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("index", pa.int64()),
            ("ids", pa.list_(pa.int64())),
            ("embeddings", pa.list_(pa.list_(pa.float32()))),
            ("length", pa.int64()),
            ("meta", pa.string()),
            ("model", pa.string()),
            ("revision", pa.string()),
        ]
    )


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


MAX_META_VALUES = 4096  # per-sample meta tensors larger than this (cached activations) are not stored


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def token_rows(tokens: Tokens) -> list[dict[str, Any]]:
    """One dict per sample: its valid ids (or embeddings), length and own meta."""
    tokens = tokens.to("cpu")
    rows = []
    for b in range(tokens.batch_size):
        mask = tokens.mask[b]
        meta = {
            k: _json_value(v[b]) if isinstance(v, torch.Tensor) else v
            for k, v in sorted(tokens.meta.items())
            if not callable(v) and not (isinstance(v, torch.Tensor) and v[b].numel() > MAX_META_VALUES)
        }
        rows.append(
            {
                "ids": None if tokens.ids is None else tokens.ids[b][mask].tolist(),
                "embeddings": None if tokens.embeddings is None else tokens.embeddings[b][mask].float().tolist(),
                "length": int(mask.sum()),
                "meta": json.dumps(meta, sort_keys=True, default=str),
            }
        )
    return rows


def plan_batches(keys: list[int], batch_size: int, max_batch_units: int | None) -> list[list[int]]:
    """Positions grouped into batches: sorted by key (ties by position), at most ``batch_size`` each,
    and padded size ``max(key) * count`` at most ``max_batch_units`` (one oversized item still runs)."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        grown = current + [i]
        too_big = max_batch_units is not None and max(keys[j] for j in grown) * len(grown) > max_batch_units
        if current and (len(grown) > batch_size or too_big):
            batches.append(current)
            current = [i]
        else:
            current = grown
    if current:
        batches.append(current)
    return batches


@dataclass
class _Job:
    model: ZooModel
    name: str
    revision: str
    batch_size: int
    max_batch_units: int | None
    encode_kwargs: dict[str, Any]
    reader: InputReader
    write_outputs: bool = False
    outputs: Path | None = None  # the shard's output folder when outputs are written


def _encode_rows(job: _Job, items: list[Any], indices: list[int]) -> list[dict[str, Any]]:
    batch = job.model.collate(items)
    tokens = job.model.encode(batch, **job.encode_kwargs)
    rows = token_rows(tokens)
    if len(rows) != len(items):
        raise InputError(f"{job.model.arch} returned {len(rows)} token rows for {len(items)} inputs")
    if job.outputs is not None:
        outputs = job.model.reconstruct(batch, tokens)
        for row, output, index in zip(rows, outputs, indices):
            written = job.model.save_output(output, job.outputs / f"{index:06d}")
            meta = json.loads(row["meta"])
            meta["output"] = f"{job.outputs.name}/{written.name}"
            row["meta"] = json.dumps(meta, sort_keys=True, default=str)
    return rows


def _error(source: str, index: int, stage: str, err: BaseException) -> dict[str, Any]:
    return {"source": source, "index": index, "stage": stage, "error": f"{type(err).__name__}: {err}"}


def _run_shard(job: _Job, shard: list[tuple[int, str]], out_path: Path, progress) -> tuple[int, int]:
    """Encode one shard; write its errors then its Parquet file (both atomically). -> (rows, errors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if job.write_outputs:
        job = dataclasses.replace(job, outputs=out_path.with_suffix(""))
    loaded: list[tuple[int, str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, source in shard:
        try:
            loaded.append((index, source, job.model.load_item(job.reader.local_path(source))))
        except Exception as err:  # a bad input must not stop the run
            errors.append(_error(source, index, "load", err))
            progress.update(1)
    keys = [int(job.model.batch_key(item)) for _, _, item in loaded]
    rows: dict[int, dict[str, Any]] = {}
    for positions in plan_batches(keys, job.batch_size, job.max_batch_units):
        members = [loaded[p] for p in positions]
        try:
            results = list(zip(members, _encode_rows(job, [m[2] for m in members], [m[0] for m in members])))
        except Exception:
            results = []
            for member in members:  # find the bad one(s); the rest still get their tokens
                try:
                    results.append((member, _encode_rows(job, [member[2]], [member[0]])[0]))
                except Exception as err:
                    errors.append(_error(member[1], member[0], "encode", err))
        for (index, source, _), row in results:
            rows[index] = {"source": source, "index": index, **row, "model": job.name, "revision": job.revision}
        progress.update(len(members))
    table = pa.Table.from_pylist([rows[i] for i in sorted(rows)], schema=_schema())
    errors.sort(key=lambda e: e["index"])
    errors_path = out_path.with_suffix(".errors.jsonl")
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors)
    atomic_write(errors_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    atomic_write(out_path, lambda tmp: pq.write_table(table, tmp))
    job.reader.clear()  # the shard's scratch files (container items) are no longer needed
    return len(rows), len(errors)


# ---- the run -----------------------------------------------------------------------------------
def run(
    model: str | os.PathLike | ZooModel,
    inputs: Sequence[str | os.PathLike] | str,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    max_batch_units: int | None = None,
    shard_size: int = 256,
    resume: bool = False,
    overwrite: bool = False,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
    progress: bool = True,
    encode_kwargs: dict[str, Any] | None = None,
    field: str | None = None,
    write_outputs: bool = False,
) -> dict[str, Any]:
    """Tokenize ``inputs`` with ``model`` into Parquet shards under ``out_dir``; return the manifest.

    ``model`` is a registered name, ``"hf-hub:org/repo@rev"``, a folder, or a loaded ZooModel;
    ``field`` is the column of Parquet/Arrow inputs, or the member extensions of WebDataset shards;
    ``revision``, ``device``, ``dtype`` and ``local_files_only`` are ``zoo.load``'s.
    Runs on every process ``accelerate launch`` started (one when run plainly). ``write_outputs``
    also decodes every item into a file beside its shard (see the module docstring).
    """
    from tqdm.auto import tqdm

    import zoo

    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    device = check_device(device)  # before accelerate sees it: "gpu0" or cuda without CUDA is named, not a crash
    check_output_dir(out_dir, "batch output folder")
    state = process_state(cpu=device is not None and torch.device(device).type == "cpu")
    if not isinstance(model, ZooModel):
        model = zoo.load(
            model, device=device or state.device, dtype=dtype, revision=revision, local_files_only=local_files_only
        )
    elif device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    model.eval()
    if write_outputs and not model.supports_decode:
        raise ConfigError(f"{model.name or model.arch} has no decoder, so there are no outputs to write")
    name, revision = model_identity(model)

    out = Path(out_dir)
    paths = resolve_sources(inputs, field=field, modality=model.modality)
    plan = {
        "format": FORMAT,
        "model": name,
        "revision": revision,
        "arch": model.arch,
        "modality": model.modality,
        "inputs": paths,
        "shard_size": shard_size,
        "batch_size": batch_size,
        "max_batch_units": max_batch_units,
        "encode_kwargs": {k: _json_value(v) for k, v in sorted((encode_kwargs or {}).items())},
    }
    if write_outputs:  # only then, so runs started before the option existed still resume
        plan["write_outputs"] = True
    shards = [list(enumerate(paths))[i : i + shard_size] for i in range(0, len(paths), shard_size)]
    _check_out_dir(out, plan, resume, overwrite)  # every process checks; only the main one writes
    state.wait_for_everyone()
    if state.is_main_process:
        if overwrite and out.exists():
            shutil.rmtree(out)
        for stale in [*out.glob(".*.tmp"), *out.glob("shard-*/.*.tmp")]:  # left by a killed process
            stale.unlink(missing_ok=True)
        plan_text = json.dumps(plan, indent=1) + "\n"
        atomic_write(out / PLAN_NAME, lambda tmp: tmp.write_text(plan_text, encoding="utf-8"))
    state.wait_for_everyone()

    todo = [i for i in range(len(shards)) if not (out / shard_name(i)).is_file()]
    if resume and len(todo) < len(shards):
        logger.info("resuming: %d of %d shards already written", len(shards) - len(todo), len(shards))
    job = _Job(
        model, name, revision, batch_size, max_batch_units, dict(encode_kwargs or {}), InputReader(), write_outputs
    )
    with job.reader, state.split_between_processes(todo) as mine:
        total = sum(len(shards[i]) for i in mine)
        desc = f"batch {name} [{state.process_index}]"
        bar = tqdm(total=total, desc=desc, unit="item", disable=not progress, file=sys.stderr)
        with bar:
            for i in mine:
                _run_shard(job, shards[i], out / shard_name(i), bar)
    state.wait_for_everyone()
    manifest = _write_manifest(out, plan, len(shards)) if state.is_main_process else None
    state.wait_for_everyone()
    return manifest if manifest is not None else json.loads((out / MANIFEST_NAME).read_text())


def _check_out_dir(out: Path, plan: dict[str, Any], resume: bool, overwrite: bool) -> None:
    plan_path = out / PLAN_NAME
    if overwrite or not plan_path.is_file():
        if not overwrite and out.is_dir() and any(out.glob("shard-*.parquet")):
            raise ConfigError(f"{out} holds shards but no {PLAN_NAME}; choose an empty folder or pass overwrite")
        return
    if not resume:
        raise ConfigError(f"{out} already holds a batch run; pass --resume to finish it or --overwrite to redo it")
    previous = json.loads(plan_path.read_text(encoding="utf-8"))
    changed = sorted(k for k in plan if previous.get(k) != plan[k])
    if changed:
        raise ConfigError(
            f"cannot resume {out}: the run differs from the one started there in {', '.join(changed)}; "
            "use the same model, inputs and options, or a new --out"
        )


def _write_manifest(out: Path, plan: dict[str, Any], num_shards: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    entries, errors = [], []
    for i in range(num_shards):
        path = out / shard_name(i)
        error_lines = path.with_suffix(".errors.jsonl").read_text(encoding="utf-8").splitlines()
        errors.extend(error_lines)
        entries.append({"file": path.name, "rows": pq.read_metadata(path).num_rows, "errors": len(error_lines)})
    manifest = {
        "format": FORMAT,
        "model": plan["model"],
        "revision": plan["revision"],
        "arch": plan["arch"],
        "modality": plan["modality"],
        "inputs": len(plan["inputs"]),
        "rows": sum(e["rows"] for e in entries),
        "errors": len(errors),
        "errors_file": ERRORS_NAME,
        "shards": entries,
    }
    text = "".join(line + "\n" for line in errors)
    atomic_write(out / ERRORS_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    manifest_text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(out / MANIFEST_NAME, lambda tmp: tmp.write_text(manifest_text, encoding="utf-8"))
    return manifest


def read_shards(out_dir: str | os.PathLike):
    """All rows of a finished run as one pyarrow Table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    tables = [pq.read_table(out / entry["file"]) for entry in manifest["shards"]]
    return pa.concat_tables(tables) if tables else _schema().empty_table()


# ---- command line ------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    """Add ``batch`` to a ``tokenzoo`` argparse subparsers object."""
    p = subparsers.add_parser(
        "batch",
        help="tokenize many files into Parquet shards (resumable; runs under accelerate launch)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("model", help="registered name, hf-hub:org/repo@rev, or a model folder")
    p.add_argument("inputs", nargs="+", help="files, folders, globs (quote them) or @list files")
    p.add_argument("--out", required=True, help="output folder for shards, manifest.json and errors.jsonl")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-batch-units", type=int, default=None, help="cap on max(batch_key) * batch size")
    p.add_argument("--shard-size", type=int, default=256, help="inputs per Parquet shard (the unit of resume)")
    p.add_argument("--resume", action="store_true", help="finish a killed run: skip shards already written")
    p.add_argument("--overwrite", action="store_true", help="delete a previous run in --out first")
    p.add_argument(
        "--write-outputs",
        action="store_true",
        help="also decode each input and write it beside its shard (shard-00000/000012.wav for TouchTTS text)",
    )
    add_model_options(p, device_help="default: the device accelerate assigns this process")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--field", default=None, help="Parquet/Arrow column, or WebDataset member extensions ('flac;wav')")
    engine = p.add_argument_group("engine", "where the job runs (see zoo.tools.ray for the Ray engine)")
    engine.add_argument("--engine", choices=sorted(ENGINES), default="accelerate", help="default: accelerate")
    engine.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    engine.add_argument("--actors", type=int, default=None, help="Ray actor pool size (default: fill the cluster)")
    engine.add_argument("--cpus-per-actor", type=float, default=None, help="Ray: CPUs per actor (default 1)")
    engine.add_argument("--gpus-per-actor", type=float, default=None, help="Ray: GPUs per actor, 0.25 shares one")
    p.set_defaults(func=_cli)


_RAY_OPTIONS = {"address": "address", "actors": "actors", "cpus_per_actor": "num_cpus", "gpus_per_actor": "num_gpus"}


def _engine_runner(args: argparse.Namespace):
    """(runner, extra keyword arguments) of the engine ``--engine`` names, imported only now."""
    import importlib

    extra = {key: getattr(args, opt) for opt, key in _RAY_OPTIONS.items() if getattr(args, opt) is not None}
    if args.engine != "ray" and extra:
        flags = ", ".join("--" + opt.replace("_", "-") for opt in _RAY_OPTIONS if getattr(args, opt) is not None)
        raise ConfigError(f"{flags} belong to --engine ray")
    if args.engine == "ray" and args.write_outputs:
        raise ConfigError("--write-outputs runs on the one-machine engine only, not with --engine ray")
    if args.write_outputs:
        extra["write_outputs"] = True
    module, function = ENGINES[args.engine].split(":")
    try:
        runner = getattr(importlib.import_module(module), function)
    except ImportError as err:
        raise ConfigError(
            f"--engine {args.engine} needs the {args.engine} extra: pip install 'tokenzoo[{args.engine}]'"
        ) from err
    return runner, extra


def _cli(args: argparse.Namespace) -> int:
    runner, extra = _engine_runner(args)
    manifest = runner(
        args.model,
        args.inputs,
        args.out,
        batch_size=args.batch_size,
        max_batch_units=args.max_batch_units,
        shard_size=args.shard_size,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        field=args.field,
        **model_options(args),
        **extra,
    )
    if process_state().is_main_process:
        print(
            f"{manifest['rows']} of {manifest['inputs']} inputs tokenized into {len(manifest['shards'])} shards "
            f"in {args.out}; {manifest['errors']} errors"
            + (f" (see {Path(args.out) / ERRORS_NAME})" if manifest["errors"] else "")
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.tools.batch ...`` (what ``accelerate launch -m zoo.tools.batch`` runs)."""
    from zoo.tools.options import module_main

    return module_main("batch", add_cli, argv)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["model_identity", "read_shards", "run", "token_rows"]
