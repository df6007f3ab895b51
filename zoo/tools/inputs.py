"""Input readers for the tools: where the items of a run come from, and how one item's file is read.

Two steps, so that a run's plan is a list of plain strings (JSON, resumable) and the bytes are read
only by the process that encodes them:

``resolve_inputs`` turns files, folders, globs and ``@list`` files into an ordered list of paths.
``resolve_sources`` does the same and then lets each corpus container stand for its items:

- a **Parquet** file (``.parquet``) or **Arrow** file (``.arrow``, ``.feather``; IPC file or stream, as
  🤗 datasets caches them) stands for the rows of one column (``field``). A string column holds paths
  (relative ones are read from the container's folder), which become inputs as they are; a column
  named ``text`` holds the text itself. A binary column, a ``{bytes, path}`` struct (🤗 datasets'
  ``Audio`` and ``Image`` features) and a numeric list column (arrays: waveforms, keypoints) become
  sources ``FILE#COLUMN/ROW``. Without ``field``, the column named after the model's modality
  (``audio``, ``image``, ``text``) is taken, else the only usable one.
- a **WebDataset** shard (``.tar``) stands for its samples: members grouped by key the way the
  ``webdataset`` package groups them (``webdataset.tariterators.base_plus_ext``: the key is the name
  up to the first dot of its base name, the rest is the extension, lower-cased; ``__meta__`` members
  skipped). Each sample gives one source ``SHARD#KEY.EXT``, EXT being the first of ``field``'s
  extensions (``"flac;wav"``) the sample holds, by default the first of the modality's
  (``MODALITY_KEYS``). A sample holding none of them gives ``SHARD#KEY`` and becomes an error record
  of the run, not a crash.

``InputReader.local_path(source)`` gives a file the family's ``load_item`` reads unchanged: a path is
itself; a container item is written to a scratch file named with its extension (the member's, the
``path`` field's, or one sniffed from the bytes' magic numbers; arrays become ``.npy``, text ``.txt``).
Shards are read by member offset (``tarfile``), so a corpus is not re-read per item.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.errors import InputError

PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow", ".feather")
TAR_SUFFIXES = (".tar",)

# WebDataset member extensions tried, in order, for a model of each modality (``field`` overrides).
MODALITY_KEYS: dict[str, tuple[str, ...]] = {
    "audio": ("flac", "wav", "mp3", "ogg", "opus", "npy"),
    "image": ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "npy"),
    "text": ("txt", "text"),
    "pose": ("npz", "npy"),
    "em_volume": ("npz", "npy", "h5", "hdf5", "tif", "tiff"),
}

# File signatures -> extension, for bytes that come without a name.
_MAGIC = (
    (b"RIFF", 8, b"WAVE", ".wav"),
    (b"RIFF", 8, b"WEBP", ".webp"),
    (b"fLaC", 0, b"", ".flac"),
    (b"OggS", 0, b"", ".ogg"),
    (b"ID3", 0, b"", ".mp3"),
    (b"\x89PNG\r\n\x1a\n", 0, b"", ".png"),
    (b"\xff\xd8\xff", 0, b"", ".jpg"),
    (b"GIF8", 0, b"", ".gif"),
    (b"BM", 0, b"", ".bmp"),
    (b"\x93NUMPY", 0, b"", ".npy"),
    (b"PK\x03\x04", 0, b"", ".npz"),
    (b"\x89HDF\r\n\x1a\n", 0, b"", ".h5"),
    (b"II*\x00", 0, b"", ".tif"),
    (b"MM\x00*", 0, b"", ".tif"),
)


def sniff_suffix(data: bytes) -> str:
    """The file extension the bytes' magic number names (``.wav``, ``.png``, ``.npy``...), else ``.bin``."""
    for head, offset, tail, suffix in _MAGIC:
        if data.startswith(head) and (not tail or data[offset : offset + len(tail)] == tail):
            return suffix
    return ".bin"


# ---- paths -------------------------------------------------------------------------------------------
def resolve_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[str]:
    """Files, folders (every file inside, recursively), globs and ``@list`` files -> paths, in order.

    A path that does not exist is kept (it becomes an error record of the run, not a crash); a glob
    that matches nothing is an InputError, as it is almost always a typo. Duplicates are dropped, the
    first mention wins.
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
                # a dangling symlink or a symlink loop is kept: it becomes an error row, not a silent gap
                if (p.is_file() or (p.is_symlink() and not p.exists()))
                and not any(part.startswith(".") for part in p.relative_to(text).parts)
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


def container_kind(path: str | os.PathLike) -> str | None:
    """ "parquet", "arrow" or "tar" for a corpus container file, else None."""
    name = os.fspath(path).lower()
    for kind, suffixes in (("parquet", PARQUET_SUFFIXES), ("arrow", ARROW_SUFFIXES), ("tar", TAR_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def resolve_sources(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    field: str | None = None,
    modality: str | None = None,
) -> list[str]:
    """``resolve_inputs``, then every Parquet/Arrow file and WebDataset shard replaced by its items (see
    the module docstring): ``field`` names the column, or the shard member extensions (``"flac;wav"``);
    ``modality`` picks the default extensions (``MODALITY_KEYS``)."""
    sources: list[str] = []
    for path in resolve_inputs(inputs):
        kind = container_kind(path)
        if kind is None or not Path(path).is_file():
            sources.append(path)
        elif kind == "tar":
            sources.extend(_shard_sources(path, field, modality))
        else:
            sources.extend(_table_sources(path, kind, field, modality))
    unique = list(dict.fromkeys(sources))
    if not unique:
        raise InputError(f"no inputs: the containers in {list(map(os.fspath, inputs))} hold no items")
    return unique


def split_source(source: str) -> tuple[str, str | None]:
    """``"corpus.tar#utt1.wav"`` -> ``("corpus.tar", "utt1.wav")``; a plain path -> ``(path, None)``."""
    container, sep, item = source.rpartition("#")
    if sep and container_kind(container) is not None:
        return container, item
    return source, None


# ---- Parquet and Arrow ------------------------------------------------------------------------------
def _open_arrow(path: str):
    """An Arrow IPC file or stream (🤗 datasets caches streams) -> a pyarrow Table, memory-mapped."""
    import pyarrow as pa

    source = pa.memory_map(path, "r")
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid as err:
            raise InputError(f"{path}: not an Arrow IPC file or stream ({err})") from err


def _table_schema(path: str, kind: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            return pq.read_schema(path), pq.read_metadata(path).num_rows
        table = _open_arrow(path)
        return table.schema, table.num_rows
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: cannot read it as {kind} ({err})") from err


def _column_kind(arrow_type, name: str) -> str | None:
    """How a column's values become items: "path", "text", "bytes", "struct" ({bytes, path}), "array"."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return "text" if name == "text" else "path"
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type) or t.is_fixed_size_binary(arrow_type):
        return "bytes"
    if t.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0:
        return "struct"
    value = arrow_type
    while isinstance(value, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
        value = value.value_type
    if value is not arrow_type and (t.is_floating(value) or t.is_integer(value)):
        return "array"
    return None


def _pick_column(path: str, schema, field: str | None, modality: str | None) -> tuple[str, str]:
    usable = {f.name: kind for f in schema if (kind := _column_kind(f.type, f.name)) is not None}
    if field is not None:
        if field not in schema.names:
            raise InputError(f"{path} has no column {field!r}; its columns are {schema.names}")
        if field not in usable:
            raise InputError(
                f"{path}: column {field!r} ({schema.field(field).type}) holds neither paths, text, bytes nor arrays"
            )
        return field, usable[field]
    if modality in usable:  # a column named after the modality: "audio", "image", "text" (🤗 datasets' names)
        return modality, usable[modality]
    if len(usable) != 1:
        raise InputError(
            f"{path}: choose the column to tokenize with --field (one of {sorted(usable) or schema.names})"
        )
    return next(iter(usable.items()))


def _table_sources(path: str, kind: str, field: str | None, modality: str | None) -> list[str]:
    import pyarrow.parquet as pq

    schema, num_rows = _table_schema(path, kind)
    column, column_kind = _pick_column(path, schema, field, modality)
    if column_kind != "path":
        return [f"{path}#{column}/{row}" for row in range(num_rows)]
    values = (pq.read_table(path, columns=[column]) if kind == "parquet" else _open_arrow(path)).column(column)
    folder = Path(path).parent
    return [
        f"{path}#{column}/{row}" if value is None else os.fspath(value if Path(value).is_absolute() else folder / value)
        for row, value in enumerate(values.to_pylist())
    ]


# ---- WebDataset shards ------------------------------------------------------------------------------
def _base_plus_ext(name: str) -> tuple[str | None, str | None]:
    """webdataset's own split of a member name into (key, extension), so our samples are the ones it yields."""
    try:
        from webdataset.tariterators import base_plus_ext
    except ImportError as err:
        raise InputError("WebDataset shards need the webdataset package: pip install 'tokenzoo[ray]'") from err
    return base_plus_ext(name)


def _shard_members(path: str) -> OrderedDict[str, dict[str, tarfile.TarInfo]]:
    """A shard's samples in order: key -> {extension: member}, grouped as ``webdataset`` groups them."""
    samples: OrderedDict[str, dict[str, tarfile.TarInfo]] = OrderedDict()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isreg() or re.match(r"__[^/]*__($|/)", member.name):
                    continue
                key, ext = _base_plus_ext(member.name)
                if key is None:
                    continue
                samples.setdefault(key, {})[ext.lower()] = member
    except (tarfile.TarError, OSError) as err:
        raise InputError(f"{path}: not a readable tar shard ({err})") from err
    return samples


def _shard_sources(path: str, field: str | None, modality: str | None) -> list[str]:
    keys = tuple(field.split(";")) if field else MODALITY_KEYS.get(modality or "", ())
    if not keys:
        raise InputError(f"{path}: name the sample member to tokenize with --field (an extension: wav, jpg, ...)")
    sources = []
    for key, members in _shard_members(path).items():
        ext = next((k for k in keys if k in members), None)
        sources.append(f"{path}#{key}" if ext is None else f"{path}#{key}.{ext}")
    return sources


# ---- reading one item ---------------------------------------------------------------------------------
class InputReader:
    """Turns sources into files ``load_item`` reads: a path is itself, a container item a scratch file.

    Open containers are cached (a shard's member index, a Parquet row group, an Arrow table). Use it as
    a context manager, or call ``close``: scratch files are removed then; ``clear`` removes them
    earlier (once the items they hold have been encoded).
    """

    def __init__(self, scratch_dir: str | os.PathLike | None = None):
        self._scratch_parent = scratch_dir
        self._scratch: Path | None = None
        self._count = 0
        self._shards: dict[str, OrderedDict[str, dict[str, tarfile.TarInfo]]] = {}
        self._row_groups: dict[tuple[str, str], tuple[int, int, Any]] = {}
        self._arrow: dict[str, Any] = {}
        self._schemas: dict[str, tuple[Any, int]] = {}

    def __enter__(self) -> InputReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.clear()
        self._shards.clear()
        self._row_groups.clear()
        self._arrow.clear()
        self._schemas.clear()

    def clear(self) -> None:
        """Remove the scratch files written so far."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def local_path(self, source: str) -> str:
        """A file holding ``source``'s item: the path itself, or a scratch file for a container item."""
        container, item = split_source(source)
        if item is None:
            return source
        if not Path(container).is_file():
            raise InputError(f"{source}: the container {container} does not exist")
        if container_kind(container) == "tar":
            data, name = self._shard_item(container, item), item
        else:
            data, name = self._table_item(container, item)
        return self.write(name, data)

    def write(self, name: str, data: bytes) -> str:
        """A scratch file named ``...-name`` holding ``data`` (removed by ``clear``)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="tokenzoo-inputs-", dir=self._scratch_parent))
        self._count += 1
        path = self._scratch / f"{self._count:08d}-{Path(name).name}"
        path.write_bytes(data)
        return os.fspath(path)

    def _shard_item(self, container: str, item: str) -> bytes:
        if container not in self._shards:
            self._shards[container] = _shard_members(container)
        key, ext = _base_plus_ext(item) if "." in Path(item).name else (item, None)
        members = self._shards[container].get(key)
        if members is None:
            raise InputError(f"{container} holds no sample with key {key!r}")
        if ext is None or ext not in members:
            raise InputError(
                f"{container}#{key}: the sample has no {ext or 'usable'} member (it holds {sorted(members)})"
            )
        with tarfile.open(container, "r:*") as tar:
            handle = tar.extractfile(members[ext])
            if handle is None:
                raise InputError(f"{container}#{item} is not a regular file")
            return handle.read()

    def _table_item(self, container: str, item: str) -> tuple[bytes, str]:
        import numpy as np

        column, _, row_text = item.rpartition("/")
        if not row_text.isdigit():
            raise InputError(f"{container}#{item}: an item of a table is COLUMN/ROW")
        row = int(row_text)
        kind = container_kind(container)
        if container not in self._schemas:
            self._schemas[container] = _table_schema(container, kind)
        schema, num_rows = self._schemas[container]
        if column not in schema.names or row >= num_rows:
            raise InputError(f"{container} has no row {row} in a column {column!r}")
        value = self._table_value(container, kind, column, row)
        stem = f"{Path(container).stem}-{column}-{row}"
        if value is None:
            raise InputError(f"{container}#{item}: the value is null")
        column_kind = _column_kind(schema.field(column).type, column)
        if column_kind == "text":
            return value.encode("utf-8"), stem + ".txt"
        if column_kind == "struct":
            data, name = value.get("bytes"), value.get("path")
            if data is None:
                if name and Path(name).is_file():
                    return Path(name).read_bytes(), Path(name).name
                raise InputError(f"{container}#{item}: the struct holds no bytes and no readable path")
            return data, stem + (Path(name).suffix if name and Path(name).suffix else sniff_suffix(data))
        if column_kind == "array":
            from io import BytesIO

            array = np.asarray(value, dtype=np.float32)
            buffer = BytesIO()
            np.save(buffer, array, allow_pickle=False)
            return buffer.getvalue(), stem + ".npy"
        return value, stem + sniff_suffix(value)

    def _table_value(self, container: str, kind: str, column: str, row: int) -> Any:
        if kind != "parquet":
            if container not in self._arrow:
                self._arrow[container] = _open_arrow(container)
            return self._arrow[container].column(column)[row].as_py()
        import pyarrow.parquet as pq

        cached = self._row_groups.get((container, column))
        if cached is None or not cached[0] <= row < cached[1]:
            parquet = pq.ParquetFile(container)
            start = 0
            for group in range(parquet.num_row_groups):
                stop = start + parquet.metadata.row_group(group).num_rows
                if start <= row < stop:
                    values = parquet.read_row_group(group, columns=[column]).column(column)
                    cached = (start, stop, values)
                    self._row_groups[(container, column)] = cached
                    break
                start = stop
        start, _, values = cached
        return values[row - start].as_py()


__all__ = [
    "MODALITY_KEYS",
    "InputReader",
    "container_kind",
    "resolve_inputs",
    "resolve_sources",
    "sniff_suffix",
    "split_source",
]
