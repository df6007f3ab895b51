"""Ray Data for tokenzoo: any registered model as a ``Dataset.map_batches`` stage, and the Ray engine of
``tokenzoo batch`` (``--engine ray [--address ADDR]``). Also importable as ``zoo.ray``. Needs the
``ray`` extra (``pip install 'tokenzoo[ray]'``).

    import ray
    import zoo.ray

    ds = ray.data.read_parquet("clips.parquet")          # a column of paths, bytes or arrays
    tokens = ds.map_batches(
        zoo.ray.Tokenize,
        fn_constructor_kwargs={"model": "s3tokenizer-tiny", "column": "audio"},
        compute=ray.data.ActorPoolStrategy(size=4),
        batch_size=64,
        num_gpus=0.25,                                    # four actors share a GPU; num_cpus=1 for CPU actors
    )
    tokens.filter(expr=...)                               # "error" is null for tokenized rows
    tokens.write_parquet("tokens/")

``Tokenize`` loads the model once per actor (on the GPU Ray assigned it, else the CPU) and returns, for
each input row, the row ``tokenzoo batch`` writes (``ROW_COLUMNS``: source, index, ids or embeddings,
length, meta, model, resolved revision) plus ``error``: null for a tokenized row, else
``"load: ..."`` or ``"encode: ..."`` for a bad input, whose token columns are then null. A value of the
input column is a path or a container source (``zoo.tools.inputs``), bytes (written to a scratch file
named by their magic number, then ``load_item``), a ``{bytes, path}`` struct (🤗 datasets' Audio and
Image features), a PIL image (written as PNG) or an array (written as ``.npy``: a 16 kHz waveform,
(F, J, 2) keypoints); every value thus reaches the family as a file its ``load_item`` reads.
Within a call, items are bucketed and batched exactly as ``tokenzoo batch`` does it
(``zoo.tools.batch.plan_batches``), and a failing batch is retried item by item.

``run`` is ``tokenzoo batch --engine ray``: the same inputs and options as ``zoo.tools.batch.run``, the
rows written with Ray's Parquet writer into ``out_dir`` (in input order), the bad inputs into
``out_dir/errors/`` (source, index, stage, error) and ``errors.jsonl``, and a ``manifest.json``. Ray
restarts an actor whose process dies and retries its task (``max_restarts``/``max_task_retries``,
unlimited by default), so every input appears exactly once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.api import ZooModel
from zoo.errors import ConfigError, InputError
from zoo.files import atomic_write
from zoo.tools.batch import ERRORS_NAME, FORMAT, MANIFEST_NAME, _schema, model_identity, plan_batches, token_rows
from zoo.tools.inputs import InputReader, resolve_sources, sniff_suffix

logger = logging.getLogger(__name__)

ERRORS_DIR = "errors"
ROW_COLUMNS = ("source", "index", "ids", "embeddings", "length", "meta", "model", "revision")


def row_schema():
    """The rows ``Tokenize`` returns: ``tokenzoo batch``'s schema plus ``error`` (null when tokenized)."""
    import pyarrow as pa

    return _schema().append(pa.field("error", pa.string()))


def error_schema():
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("index", pa.int64()), ("stage", pa.string()), ("error", pa.string())])


class Tokenize:
    """A Ray Data stage: ``ds.map_batches(Tokenize, fn_constructor_kwargs={"model": NAME, ...})``.

    Args:
        model: a registered name, ``"hf-hub:org/repo@rev"``, a folder, or a ZooModel (sent to each actor).
        column: the input column: paths/sources, bytes, ``{bytes, path}`` structs or arrays.
        device: where the model runs; default the GPU Ray gave this actor, else the CPU.
        dtype, revision, local_files_only: ``zoo.load``'s.
        batch_size, max_batch_units: ``tokenzoo batch``'s bucketing within one call.
        encode_kwargs: passed to ``encode``.
        strings_are_text: strings in ``column`` are the text itself, not paths; by default when the
            column is named ``text`` (the rule ``zoo.tools.inputs`` follows for tables).

    An ``index`` column, where the input has one, is carried into the rows; so is a ``source`` column
    when ``column`` holds bytes or arrays (else such rows have a null source, or the struct's path).
    """

    def __init__(
        self,
        model: str | os.PathLike | ZooModel,
        *,
        column: str = "source",
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        batch_size: int = 16,
        max_batch_units: int | None = None,
        encode_kwargs: dict[str, Any] | None = None,
        strings_are_text: bool | None = None,
    ):
        import zoo

        if device is None:
            device = "cuda" if _actor_has_gpu() else "cpu"
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if isinstance(model, ZooModel):
            model = model.to(device=device, dtype=dtype)
        else:
            model = zoo.load(model, device=device, dtype=dtype, revision=revision, local_files_only=local_files_only)
        self.model = model.eval()
        self.name, self.revision = model_identity(self.model)
        self.column = column
        self.strings_are_text = column == "text" if strings_are_text is None else strings_are_text
        self.batch_size = batch_size
        self.max_batch_units = max_batch_units
        self.encode_kwargs = dict(encode_kwargs or {})
        self.reader = InputReader()

    def __call__(self, batch: dict[str, Any]):
        """One Ray batch (numpy format: a dict of columns) -> a pyarrow Table of ``row_schema()``."""
        import pyarrow as pa

        if self.column not in batch:
            raise InputError(f"the dataset has no column {self.column!r}; it has {sorted(batch)}")
        values = batch[self.column]
        count = len(values)
        indices = _column(batch, "index", count)
        names = _column(batch, "source", count) if self.column != "source" else [None] * count
        rows: dict[int, dict[str, Any]] = {}
        loaded: list[tuple[int, Any]] = []
        try:
            for i in range(count):
                source, item_or_error = self._load(values[i], names[i])
                base = {"source": source, "index": None if indices[i] is None else int(indices[i])}
                if isinstance(item_or_error, Exception):
                    rows[i] = {**base, "error": f"load: {type(item_or_error).__name__}: {item_or_error}"}
                else:
                    rows[i] = base
                    loaded.append((i, item_or_error))
            self._encode(loaded, rows)
        finally:
            self.reader.clear()
        table = [{**rows[i], "model": self.name, "revision": self.revision} for i in range(count)]
        return pa.Table.from_pylist(table, schema=row_schema())

    def _load(self, value: Any, name: Any) -> tuple[str | None, Any]:
        """(source, item) for one value of the input column; the item is the exception when it fails."""
        source = None if name is None else str(name)
        try:
            if isinstance(value, (str, np.str_)) and self.strings_are_text:
                return source, self.model.load_item(self._scratch(str(value).encode("utf-8"), ".txt"))
            if isinstance(value, (str, np.str_, os.PathLike)):
                source = os.fspath(value)
                return source, self.model.load_item(self.reader.local_path(source))
            if isinstance(value, dict):  # {bytes, path}: the 🤗 datasets Audio / Image layout
                data, path = value.get("bytes"), value.get("path")
                source = source or path
                if data is None:
                    if not path:
                        raise InputError("the value holds neither bytes nor a path")
                    return source, self.model.load_item(self.reader.local_path(path))
                suffix = Path(path).suffix if path and Path(path).suffix else sniff_suffix(data)
                return source, self.model.load_item(self._scratch(data, suffix))
            if isinstance(value, (bytes, bytearray, np.bytes_)):
                data = bytes(value)
                return source, self.model.load_item(self._scratch(data, sniff_suffix(data)))
            if value is None:
                raise InputError("the value is null")
            if _is_pil_image(value):
                buffer = io.BytesIO()
                value.save(buffer, format="PNG")
                return source, self.model.load_item(self._scratch(buffer.getvalue(), ".png"))
            buffer = io.BytesIO()
            np.save(buffer, _as_array(value), allow_pickle=False)
            return source, self.model.load_item(self._scratch(buffer.getvalue(), ".npy"))
        except Exception as err:  # a bad input becomes an error row; the job goes on
            return source, err

    def _scratch(self, data: bytes, suffix: str) -> str:
        return self.reader.write(hashlib.sha256(data).hexdigest()[:16] + suffix, data)

    def _encode(self, loaded: list[tuple[int, Any]], rows: dict[int, dict[str, Any]]) -> None:
        keys = [int(self.model.batch_key(item)) for _, item in loaded]
        for positions in plan_batches(keys, self.batch_size, self.max_batch_units):
            members = [loaded[p] for p in positions]
            try:
                results = list(zip(members, self._encode_items([item for _, item in members])))
            except Exception:
                results = []
                for member in members:  # find the bad one(s); the rest still get their tokens
                    try:
                        results.append((member, self._encode_items([member[1]])[0]))
                    except Exception as err:
                        rows[member[0]]["error"] = f"encode: {type(err).__name__}: {err}"
            for (i, _), row in results:
                rows[i].update(row)

    def _encode_items(self, items: list[Any]) -> list[dict[str, Any]]:
        tokens = self.model.encode(self.model.collate(items), **self.encode_kwargs)
        rows = token_rows(tokens)
        if len(rows) != len(items):
            raise InputError(f"{self.model.arch} returned {len(rows)} token rows for {len(items)} inputs")
        return rows


def _ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigError("the Ray engine needs Ray Data: pip install 'tokenzoo[ray]'") from err
    return ray


def _actor_has_gpu() -> bool:
    """True inside a Ray actor that was given a GPU (outside Ray, e.g. under ``datasets.map``: False)."""
    import sys

    ray = sys.modules.get("ray")  # an actor has imported ray; without it there is no actor
    return bool(ray is not None and ray.is_initialized() and ray.get_gpu_ids()) and torch.cuda.is_available()


def _column(batch: dict[str, Any], name: str, count: int) -> list[Any]:
    if name not in batch:
        return [None] * count
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in batch[name]]


def _is_pil_image(value: Any) -> bool:
    import sys

    image = sys.modules.get("PIL.Image")  # a PIL image implies PIL is imported
    return image is not None and isinstance(value, image.Image)


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:  # a ragged nested list (Ray hands list columns over as arrays of arrays)
        array = np.stack([_as_array(v) for v in value])
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"an array input must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


# ---- the engine of `tokenzoo batch --engine ray` ----------------------------------------------------
def _keep_rows(table):
    import pyarrow.compute as pc

    return table.filter(pc.is_null(table["error"])).drop_columns(["error"])


def _keep_errors(table):
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = table.filter(pc.is_valid(table["error"]))
    stage, _, message = zip(*(e.partition(": ") for e in bad["error"].to_pylist())) if bad.num_rows else ((), (), ())
    columns = [bad["source"], bad["index"], pa.array(stage, pa.string()), pa.array(message, pa.string())]
    return pa.Table.from_arrays(columns, schema=error_schema())


def actor_pool_size(num_cpus: float, num_gpus: float) -> int:
    """How many actors the cluster holds at ``num_cpus``/``num_gpus`` each (at least one)."""
    ray = _ray()
    resources = ray.cluster_resources()
    if num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // max(num_cpus, 1e-6)))


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
    address: str | None = None,
    actors: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_restarts: int = -1,
    max_task_retries: int = -1,
) -> dict[str, Any]:
    """``tokenzoo batch --engine ray``: tokenize ``inputs`` on a Ray cluster into Parquet under ``out_dir``.

    The options are ``zoo.tools.batch.run``'s, plus: ``address`` (a Ray cluster; default the one this
    process is connected to, else ``RAY_ADDRESS``, else a new local instance), ``actors`` (the actor pool
    size; default as many as the cluster's CPUs or GPUs hold), ``num_cpus``/``num_gpus`` per actor
    (fractional GPUs share one), and Ray's ``max_restarts``/``max_task_retries`` for actors that die.
    One Ray task holds at most ``shard_size`` inputs (fewer, so that each actor gets about four tasks).
    ``resume`` is not offered: Ray retries failed tasks itself. Returns the manifest.
    """
    import zoo

    ray = _ray()
    if resume:
        raise ConfigError("--resume is the accelerate engine's; the Ray engine retries failed tasks itself")
    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if num_cpus < 0 or num_gpus < 0 or (actors is not None and actors < 1):
        raise ConfigError(f"actors must be >= 1 and num_cpus, num_gpus >= 0; got {actors}, {num_cpus}, {num_gpus}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; pass --overwrite to replace what is there, or choose a new --out")
        shutil.rmtree(out)

    # The driver loads the model once: it fails fast on a bad name, pins the revision every actor
    # loads, and names the modality the inputs are read for.
    if isinstance(model, ZooModel):
        loaded = model
    else:
        loaded = zoo.load(model, device="cpu", dtype=dtype, revision=revision, local_files_only=local_files_only)
    name, resolved = model_identity(loaded)
    sources = resolve_sources(inputs, field=field, modality=loaded.modality)

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    elif address is not None:
        logger.info("already connected to a Ray cluster; ignoring address=%s", address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.execution_options.preserve_order = True  # blocks, and so the Parquet files, follow the inputs
    pool = actors or actor_pool_size(num_cpus, num_gpus)
    per_task = max(1, min(shard_size, math.ceil(len(sources) / (4 * pool))))
    items = [{"index": i, "source": s} for i, s in enumerate(sources)]
    dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_task))
    constructor = {
        "model": model if isinstance(model, ZooModel) else os.fspath(model),
        "column": "source",
        "device": None if device is None else str(device),
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "revision": loaded.revision or revision,
        "local_files_only": local_files_only,
        "batch_size": batch_size,
        "max_batch_units": max_batch_units,
        "encode_kwargs": encode_kwargs,
    }
    # Ray Data already restarts dead actors and retries their tasks without limit (-1); only other
    # limits are passed on (as Ray remote arguments, which Ray 2.60 warns it will rename).
    restarts = {k: v for k, v in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries)) if v != -1}
    tokens = dataset.map_batches(
        Tokenize,
        fn_constructor_kwargs=constructor,
        batch_size=per_task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        **restarts,
    ).materialize()
    out.mkdir(parents=True, exist_ok=True)
    # Splitting the rows is light Arrow work: it asks for no CPU, so it need not wait for the actor
    # pool, which may still hold the cluster's CPUs while it shuts down.
    light = {"batch_format": "pyarrow", "batch_size": None, "num_cpus": 0}
    tokens.map_batches(_keep_rows, **light).write_parquet(str(out), ray_remote_args={"num_cpus": 0})
    errors = tokens.map_batches(_keep_errors, **light)
    if errors.count():
        errors.write_parquet(str(out / ERRORS_DIR), ray_remote_args={"num_cpus": 0})
    return _write_manifest(out, name, resolved, loaded, len(sources), pool)


def _write_manifest(out: Path, name, revision, model, num_inputs, actors) -> dict[str, Any]:
    import pyarrow.parquet as pq

    error_files = sorted((out / ERRORS_DIR).glob("*.parquet"))
    errors = [row for path in error_files for row in pq.read_table(path).to_pylist()]
    error_rows = sorted(errors, key=lambda e: (e["index"] is None, e["index"]))
    entries = []
    for path in sorted(out.glob("*.parquet")):
        index = pq.read_table(path, columns=["index"])["index"]
        first = index[0].as_py() if len(index) else -1
        entries.append((first, {"file": path.name, "rows": len(index), "errors": 0}))
    entries = [entry for _, entry in sorted(entries, key=lambda e: e[0])]
    text = "".join(json.dumps(dict(sorted(e.items())), sort_keys=True) + "\n" for e in error_rows)
    atomic_write(out / ERRORS_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    manifest = {
        "format": FORMAT,
        "engine": "ray",
        "actors": actors,
        "model": name,
        "revision": revision,
        "arch": model.arch,
        "modality": model.modality,
        "inputs": num_inputs,
        "rows": sum(e["rows"] for e in entries),
        "errors": len(error_rows),
        "errors_file": ERRORS_NAME,
        "shards": entries,
    }
    manifest_text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(out / MANIFEST_NAME, lambda tmp: tmp.write_text(manifest_text, encoding="utf-8"))
    return manifest


__all__ = ["ROW_COLUMNS", "Tokenize", "actor_pool_size", "error_schema", "row_schema", "run"]
