"""Batch inference over many files: ``tokenzoo batch MODEL INPUTS... --out DIR`` and ``zoo.batch.run``.

Inputs are files, folders, globs (``'data/**/*.wav'``) or list files (``@list.txt``, one path per
line). They are cut into shards of ``shard_size`` inputs in the order given; each shard is one unit of
work and one Parquet file (``shard-00000.parquet``), written atomically, so a shard file on disk is
always complete. Shards are split between the processes ``accelerate launch`` starts
(``PartialState.split_between_processes``); because a shard's content depends only on the plan, one
process and two write the same files. ``resume=True`` skips shards already written, so a run killed
with ``kill -9`` and resumed ends with the files an uninterrupted run writes.

Within a shard, items are sorted by the family's ``batch_key`` (audio length, say) and grouped into
batches of at most ``batch_size`` items whose padded size ``max(key) * count`` stays under
``max_batch_units``. A batch that fails is retried item by item; an input that still fails is written
to the shard's errors and to ``errors.jsonl`` and the run goes on.

One Parquet row per input: ``source`` (the path), ``index`` (its position among the inputs), ``ids``
(list<int64>, the valid ids; null for continuous tokens), ``embeddings`` (list<list<float32>> for
continuous tokens, else null), ``length`` (valid tokens), ``meta`` (JSON: that sample's Tokens.meta,
leaving out per-sample tensors of more than ``MAX_META_VALUES`` values, such as cached activations),
``model`` and ``revision``. ``manifest.json`` lists the shards, counts and the model.

Family hooks
------------
The batch runner, ``zoo.finetune``, ``zoo.compare``, the demos and ``bench/gpu_check.py`` reach a
family only through these optional ``ZooModel`` methods. A family defines the ones whose default
does not fit; the functions below call the method when the model has it and fall back otherwise.

``load_item(path) -> item``
    One input file -> one raw item ``preprocess`` understands. Default: UTF-8 text for text models,
    a numpy array for ``.npy`` files (pose clips, volumes; never pickles), and the path itself for
    the rest (images, audio: the family's ``preprocess`` reads them).
``batch_key(item) -> int``
    Size used to bucket items of similar size into a batch (audio samples, text characters).
    Default: ``len(item)`` when the item has one; for a path, its file size in bytes (for audio of
    one format that is the duration); else 0.
``collate(items) -> batch``
    A list of raw items -> the batch ``encode`` takes. Default: ``model.preprocess(items)``, as the
    contract says ``preprocess`` returns what ``encode`` takes; numpy arrays of one shape are stacked
    into one (B, ...) array first.
``training_batch(items) -> batch``
    A list of raw items -> the batch ``training_loss`` takes. Default: ``collate``.
``evaluate(batch) -> dict[str, float]``
    Held-out metrics for fine-tuning, lower-is-better first. Default: ``{"loss": training_loss(batch)}``.
``input_units(item) -> (float, str)``
    An item's size in its natural unit for bits per unit: ("byte", "pixel", "second", "frame", "voxel").
    Default: UTF-8 bytes for text; otherwise ``zoo.compare`` reads it from Tokens.meta
    (``num_samples`` + ``sample_rate`` -> seconds, ``image_size`` -> pixels), else unknown.
``reconstruct(batch, tokens) -> list[item]`` and ``reconstruction_quality(items, reconstructions) -> dict``
    For ``zoo.compare``: decode back, and score with ``{"name", "value", "protocol"}``. Defaults:
    ``postprocess(decode(tokens))``; text scores the fraction of exact round trips, images the PSNR
    of ``decode(encode(x))`` against the preprocessed ``x``; other modalities report none.
``compare_metrics(items, token_batches) -> dict[str, float]``
    Extra columns for ``zoo.compare``. Default: fertility (tokens per word) for text.
``sample_inputs() -> list[item]``
    A few raw items for compare, demos, the GPU check and the per-family tests; paths of bundled
    sample files are best (batch and fine-tuning need files). Default: short sentences for text.
``codebook_size`` (attribute or property)
    K for bits per token. Default: ``tokens.meta["codebook_size"|"vocab_size"]``, the model's
    ``vocab_size``, or the size of its one ``zoo.quant`` FSQ / VectorQuantizer.

The demo tabs (``demos/tabs/``) also use the task verbs ``lift`` (pose) and ``segment`` (EM volumes),
a ``skeleton_parents`` attribute (pose bones: a parent index per joint, -1 for the root), and the
``Tokens.meta`` keys ``image_size``, ``num_samples`` + ``sample_rate``, ``kept_frame_indices`` and
``grid_size``.
"""

from __future__ import annotations

import argparse
import glob
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

import numpy as np
import torch

from zoo.api import Tokens, ZooModel, atomic_write
from zoo.errors import ConfigError, InputError, NotSupportedError

logger = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.jsonl"
FORMAT = "tokenzoo.batch/1"
SAMPLE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers turn text, images, speech and poses into ids.",
    "Grüße aus Zürich — naïve café, 東京, Привет!",
)


# ---- family hooks with their defaults ----------------------------------------------------------
def load_item(model: ZooModel, path: str | os.PathLike) -> Any:
    """One input file -> one raw item (the model's ``load_item`` when it has one)."""
    if hasattr(model, "load_item"):
        return model.load_item(Path(path))
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if model.modality == "text":
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"{path}: not a plain numpy array file ({err})") from err
    return path


def batch_key(model: ZooModel, item: Any) -> int:
    """The size items are bucketed by (the model's ``batch_key``, else ``len(item)``, a file's size, or 0)."""
    if hasattr(model, "batch_key"):
        return int(model.batch_key(item))
    if isinstance(item, Path):
        return item.stat().st_size
    try:
        return len(item)
    except TypeError:
        return 0


def collate(model: ZooModel, items: list[Any]) -> Any:
    """Raw items -> the batch ``encode`` takes (the model's ``collate``, else ``preprocess(items)``;
    arrays of one shape are stacked into one (B, ...) array first, which every array-taking
    ``preprocess`` reads as a batch)."""
    if hasattr(model, "collate"):
        return model.collate(items)
    items = list(items)
    if items and all(isinstance(x, np.ndarray) for x in items) and len({x.shape for x in items}) == 1:
        return model.preprocess(np.stack(items))
    return model.preprocess(items)


def training_batch(model: ZooModel, items: list[Any]) -> Any:
    """Raw items -> the batch ``training_loss`` takes (the model's ``training_batch``, else ``collate``)."""
    if hasattr(model, "training_batch"):
        return model.training_batch(items)
    return collate(model, items)


def evaluate(model: ZooModel, batch: Any) -> dict[str, float]:
    """Held-out metrics of one batch (the model's ``evaluate``, else its training loss)."""
    if hasattr(model, "evaluate"):
        return {k: float(v) for k, v in model.evaluate(batch).items()}
    return {"loss": float(model.training_loss(batch))}


def input_units(model: ZooModel, item: Any) -> tuple[float, str] | None:
    """An item's size in its natural unit, or None when the family does not say."""
    if hasattr(model, "input_units"):
        count, unit = model.input_units(item)
        return float(count), unit
    if model.modality == "text" and isinstance(item, str):
        return float(len(item.encode("utf-8"))), "byte"
    return None


def reconstruct(model: ZooModel, batch: Any, tokens: Tokens) -> list[Any]:
    """Tokens -> raw items again (the model's ``reconstruct``, else ``postprocess(decode(tokens))``)."""
    if hasattr(model, "reconstruct"):
        return list(model.reconstruct(batch, tokens))
    return list(model.postprocess(model.decode(tokens)))


def reconstruction_quality(model: ZooModel, items: list[Any], reconstructions: list[Any]) -> dict[str, Any] | None:
    """``{"name", "value", "protocol"}`` scoring reconstructions against inputs, or None if unknown."""
    if hasattr(model, "reconstruction_quality"):
        return dict(model.reconstruction_quality(items, reconstructions))
    if model.modality == "text":
        exact = sum(a == b for a, b in zip(items, reconstructions)) / max(1, len(items))
        return {"name": "exact round trips", "value": exact, "protocol": "decode(encode(text)) == text, per item"}
    return None


def sample_inputs(model: ZooModel) -> list[Any]:
    """A few raw items to try a model on (the model's ``sample_inputs``; sentences for text)."""
    if hasattr(model, "sample_inputs"):
        return list(model.sample_inputs())
    if model.modality == "text":
        return list(SAMPLE_SENTENCES)
    raise NotSupportedError(f"{model.arch} has no sample_inputs hook, so there is nothing to try it on")


def codebook_size(model: ZooModel, tokens: Tokens | None = None) -> int | None:
    """K, the number of distinct ids, or None for continuous tokens or when unknown."""
    if tokens is not None and tokens.ids is None:
        return None
    meta = tokens.meta if tokens is not None else {}
    for key in ("codebook_size", "vocab_size"):
        if isinstance(meta.get(key), int):
            return meta[key]
    for attr in ("codebook_size", "vocab_size"):
        value = getattr(model, attr, None)
        if isinstance(value, int):
            return value
    from zoo.quant import FSQ, VectorQuantizer

    sizes = {m.codebook_size for m in model.modules() if isinstance(m, (FSQ, VectorQuantizer))}
    return sizes.pop() if len(sizes) == 1 else None


def bundled_models(modality: str | None = None) -> list[str]:
    """Registered models whose files are all in hub_cards/ (loadable offline), optionally of one modality.

    Cards of official checkpoints whose weights live on the Hub are left out, as are models whose
    family cannot be imported here (a missing optional dependency).
    """
    from zoo.registry import _card_folders, card_data, get_arch, list_models

    folders = _card_folders()
    names = []
    for name in list_models(modality=modality):
        try:
            files = get_arch(card_data(name).get("arch", "")).hub_files
        except (ImportError, KeyError, ConfigError) as err:
            logger.info("skipping %s: %s", name, err)
            continue
        if all((folders[name] / f).is_file() for f in files):
            names.append(name)
    return names


# ---- inputs ------------------------------------------------------------------------------------
def resolve_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files, folders (every file inside, recursively), globs and ``@list`` files -> paths, in order.

    A path that does not exist is kept (it becomes an error record of the run, not a crash); a glob
    that matches nothing is an InputError, as it is almost always a typo.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[str] = []
    for entry in inputs:
        text = os.fspath(entry)
        if text.startswith("@"):
            list_file = Path(text[1:])
            if not list_file.is_file():
                raise InputError(f"list file {list_file} does not exist")
            lines = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines()]
            for line in lines:
                if line and not line.startswith("#"):
                    path = Path(line) if Path(line).is_absolute() else list_file.parent / line
                    found.append(os.fspath(path))
        elif Path(text).is_dir():
            found.extend(
                os.fspath(p)
                for p in sorted(Path(text).rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(text).parts)
            )
        elif not Path(text).exists() and glob.has_magic(text):
            matches = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"the pattern {text!r} matches no files")
            found.extend(matches)
        else:
            found.append(text)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError("no inputs: give files, folders, globs or @list files")
    return unique


# ---- model identity ----------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def model_identity(spec: str | os.PathLike | ZooModel, revision: str | None = None) -> tuple[str, str]:
    """(name, revision) to stamp on every row: the card's pinned revision, else a hash of the weights."""
    from zoo.registry import _card_folders, card_data, parse_source

    if isinstance(spec, ZooModel):
        return getattr(spec, "name", None) or spec.arch, revision or _state_digest(spec)
    kind, where, pinned = parse_source(spec, revision)
    if kind == "hub":
        return os.fspath(spec), pinned or "main"
    folder = _card_folders()[where] if kind == "name" else Path(where)
    if kind == "name" and not (folder / "model.safetensors").is_file():
        return where, revision or card_data(where).get("revision") or "main"
    weights = folder / "model.safetensors"
    name = where if kind == "name" else Path(where).resolve().name
    return name, revision or (_file_digest(weights) if weights.is_file() else "unknown")


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


def _encode_rows(job: _Job, items: list[Any]) -> list[dict[str, Any]]:
    tokens = job.model.encode(collate(job.model, items), **job.encode_kwargs)
    rows = token_rows(tokens)
    if len(rows) != len(items):
        raise InputError(f"{job.model.arch} returned {len(rows)} token rows for {len(items)} inputs")
    return rows


def _error(source: str, index: int, stage: str, err: BaseException) -> dict[str, Any]:
    return {"source": source, "index": index, "stage": stage, "error": f"{type(err).__name__}: {err}"}


def _run_shard(job: _Job, shard: list[tuple[int, str]], out_path: Path, progress) -> tuple[int, int]:
    """Encode one shard; write its errors then its Parquet file (both atomically). -> (rows, errors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    loaded: list[tuple[int, str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, source in shard:
        try:
            loaded.append((index, source, load_item(job.model, source)))
        except Exception as err:  # a bad input must not stop the run
            errors.append(_error(source, index, "load", err))
            progress.update(1)
    keys = [batch_key(job.model, item) for _, _, item in loaded]
    rows: dict[int, dict[str, Any]] = {}
    for positions in plan_batches(keys, job.batch_size, job.max_batch_units):
        members = [loaded[p] for p in positions]
        try:
            results = list(zip(members, _encode_rows(job, [item for _, _, item in members])))
        except Exception:
            results = []
            for member in members:  # find the bad one(s); the rest still get their tokens
                try:
                    results.append((member, _encode_rows(job, [member[2]])[0]))
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
    return len(rows), len(errors)


# ---- the run -----------------------------------------------------------------------------------
def process_state(cpu: bool = False):
    """accelerate's PartialState, on CPU processes when asked, when ACCELERATE_USE_CPU=1, or without CUDA.

    PartialState alone ignores ACCELERATE_USE_CPU (only Accelerator reads it), and on a machine
    without CUDA it would then not join the processes ``accelerate launch --multi_gpu`` started.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


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
    progress: bool = True,
    encode_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize ``inputs`` with ``model`` into Parquet shards under ``out_dir``; return the manifest.

    ``model`` is a registered name, ``"hf-hub:org/repo@rev"``, a folder, or a loaded ZooModel.
    Runs on every process ``accelerate launch`` started (one when run plainly).
    """
    from tqdm.auto import tqdm

    import zoo

    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    state = process_state(cpu=device is not None and torch.device(device).type == "cpu")
    name, revision = model_identity(model, revision)
    if not isinstance(model, ZooModel):
        model = zoo.load(model, device=device or state.device, dtype=dtype, revision=None)
    elif device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    model.eval()

    out = Path(out_dir)
    paths = resolve_inputs(inputs)
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
    shards = [list(enumerate(paths))[i : i + shard_size] for i in range(0, len(paths), shard_size)]
    _check_out_dir(out, plan, resume, overwrite)  # every process checks; only the main one writes
    state.wait_for_everyone()
    if state.is_main_process:
        if overwrite and out.exists():
            shutil.rmtree(out)
        for stale in out.glob(".*.tmp"):  # left by a process killed while writing; never a finished file
            stale.unlink(missing_ok=True)
        plan_text = json.dumps(plan, indent=1) + "\n"
        atomic_write(out / PLAN_NAME, lambda tmp: tmp.write_text(plan_text, encoding="utf-8"))
    state.wait_for_everyone()

    todo = [i for i in range(len(shards)) if not (out / shard_name(i)).is_file()]
    if resume and len(todo) < len(shards):
        logger.info("resuming: %d of %d shards already written", len(shards) - len(todo), len(shards))
    job = _Job(model, name, revision, batch_size, max_batch_units, dict(encode_kwargs or {}))
    with state.split_between_processes(todo) as mine:
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
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    p.add_argument("--revision", default=None, help="revision to stamp on rows (default: pinned or weights hash)")
    p.add_argument("--device", default=None, help="default: the device accelerate assigns this process")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    manifest = run(
        args.model,
        args.inputs,
        args.out,
        batch_size=args.batch_size,
        max_batch_units=args.max_batch_units,
        shard_size=args.shard_size,
        resume=args.resume,
        overwrite=args.overwrite,
        revision=args.revision,
        device=args.device,
        dtype=_DTYPES.get(args.dtype),
        progress=not args.no_progress,
    )
    if process_state().is_main_process:
        print(
            f"{manifest['rows']} of {manifest['inputs']} inputs tokenized into {len(manifest['shards'])} shards "
            f"in {args.out}; {manifest['errors']} errors"
            + (f" (see {Path(args.out) / ERRORS_NAME})" if manifest["errors"] else "")
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.batch ...`` (what ``accelerate launch -m zoo.batch`` runs)."""
    from zoo.cli import module_main

    return module_main("batch", add_cli, argv)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "batch_key",
    "codebook_size",
    "collate",
    "evaluate",
    "input_units",
    "load_item",
    "model_identity",
    "read_shards",
    "reconstruct",
    "reconstruction_quality",
    "resolve_inputs",
    "run",
    "sample_inputs",
    "token_rows",
    "training_batch",
]
