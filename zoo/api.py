"""The zoo's contract, and the whole extension API a family implements: read this module to add one.

Shape letters: B batch, N token positions, D embedding width.

Tokens
------
``Tokens`` is one dataclass for every modality. It holds discrete ``ids`` (B, N) int64, or continuous
``embeddings`` (B, N, D), or both; a ``mask`` (B, N) bool marks the valid positions of each sample
(FlexTok's k, audio lengths, HoT's kept frames); ``meta`` carries the rest. A tensor in ``meta`` is
per-sample and has a leading B dimension, so slicing a batch slices it too; any other value
(numbers, strings, lists) describes the whole batch and must be JSON-serialisable so that
``Tokens.save`` can store it. Meta keys the tools read when a family provides them:
``image_size`` [H, W] and ``num_samples`` (B,) + ``sample_rate`` (input size for bits per pixel or
second), ``kept_frame_indices`` (B, n) (the pose tab), ``grid_size`` [h, w] or [d, h, w] (id grids).

ZooModel
--------
``ZooModel`` is the ``nn.Module`` base of every model. A family subclasses it (usually through its
modality's base: ``zoo.text.TextTokenizer``, ``vision.base.ImageTokenizer``, ``audio.base.SpeechTokenizer``,
``video_pose.lifter.PoseLifter``) and declares, as class attributes:

- ``arch``: its registry name (``zoo.registry.FAMILIES`` maps it to "module:Class"),
  ``modality`` (one of ``MODALITIES``) and ``config_class`` (a frozen dataclass; config.json is it).
- capabilities: ``supports_decode`` (``decode`` turns tokens back into the modality),
  ``supports_training`` (``training_loss`` is defined, so ``tokenzoo finetune`` works) and
  ``tasks``, the task verbs it implements out of ``TASKS`` (``lift``, ``segment``, ``synthesize``).
  Tools read these flags; they never probe a model with ``hasattr``. The behaviour test over every
  bundled model (tests/test_models.py) checks that the flags tell the truth.
- ``hub_files``: the files a model folder or Hub repo of this arch holds (README.md always comes too).
- ``license``: the license of weights this class makes, for cards of models saved without one.

Its constructor is ``__init__(self, config, *, device=None, dtype=None)``: modules are built
``with self.building(device, dtype):``, so they are created on ``device`` and cast to ``dtype``.
``zoo.load`` builds the model on the meta device instead (no random init of weights that are
overwritten at once) and loads the checkpoint with ``load_state_dict(..., assign=True)``; buffers stay
real, so non-persistent buffers computed in ``__init__`` (FSQ bases, rotary tables, masks) are what a
normal build gives. Do not compute anything from parameter *values* in ``__init__``.

The contract: ``encode(x) -> Tokens`` and, where ``supports_decode``, ``decode(tokens)``. Both run
under ``torch.no_grad`` (decorate them with ``@inference``; not ``inference_mode``, so continuous
tokens can enter autograd afterwards) and are deterministic: the same input gives the same tokens
on every call, alone or in a batch, unless the caller asks for sampling. ``preprocess(raw)`` turns
raw inputs (paths, PIL images, arrays, strings) into the batch ``encode`` takes; ``postprocess``
turns ``decode``'s output into raw outputs.

The hooks the tools (``zoo.tools``: batch, finetune, compare, the demo table, the Gradio tabs) call.
Each has a default that does not depend on the modality; a modality's base class overrides what is
common to its modality (text reads UTF-8 files, images score PSNR), a family what is its own.

======================================  ===========================================================
``load_item(path) -> item``             one input file -> one raw item ``collate`` understands.
                                        Default: ``.npy`` -> numpy array (never a pickle), else the path.
``batch_key(item) -> int``              size for bucketing similar items into a batch.
                                        Default: a path's file size, else ``len(item)``, else 0.
``collate(items) -> batch``             raw items -> the batch ``encode`` takes. Default: arrays of one
                                        shape stacked to (B, ...), then ``preprocess``.
``training_batch(items) -> batch``      raw items -> the batch ``training_loss`` takes. Default: ``collate``.
``training_loss(batch) -> Tensor``      scalar loss with gradients; set ``supports_training``.
                                        Default: NotSupportedError.
``evaluate(batch) -> dict[str, float]`` held-out metrics, lower-is-better first.
                                        Default: ``{"loss": training_loss(batch)}``.
``input_units(item) -> (n, unit)``      an item's size in its natural unit ("byte", "pixel", "second",
                                        "frame", "voxel") for bits per unit. Default: None (then the
                                        tools read ``image_size`` / ``num_samples`` from Tokens.meta).
``reconstruct(batch, tokens) -> list``  decode back, one reconstruction per item.
                                        Default: ``postprocess(decode(tokens))``.
``save_output(output, path) -> Path``   write one reconstruction to ``path`` + the family's suffix
                                        (``tokenzoo batch --write-outputs``). Default: a tensor or array
                                        as ``.npy``, a PIL image as ``.png``; TouchTTS writes ``.wav``.
``reconstruction_quality(items, recs)`` ``{"name", "value", "protocol"}`` scoring reconstructions
                                        against the raw items, or None (the default).
``compare_metrics(items, batches)``    extra columns for ``tokenzoo compare`` from the items and their
                                        Tokens batches. Default: none.
``sample_inputs() -> list``             a few raw items (paths of bundled files are best: batch and
                                        fine-tuning need files). Default: none.
``decodes_tokens_of`` (class attribute) archs besides its own whose tokens ``decode`` takes (TouchTTS:
                                        S3Tokenizer ids). Default: none.
``codebook_size`` (property)            K for bits per token; None for continuous tokens. Default: the
                                        size of the model's one ``zoo.quant`` quantizer, else None.
``skeleton_parents`` (class attribute)  pose models: the parent joint of each joint (-1 at the root),
                                        for drawing bones. Default: None.
``lift`` / ``segment`` / ``synthesize`` the task verbs named in ``tasks``. Default: NotSupportedError.
======================================  ===========================================================

Tokens record the model that made them: every family's ``encode`` is wrapped (``__init_subclass__``) so
its Tokens get the batch-wide meta ``arch``, ``model`` (the name, when loaded by ``zoo.load``) and, for ids,
``codebook_size`` (``ZooModel.stamp``). Every ``decode`` is wrapped to refuse Tokens of another arch (outside
``decodes_tokens_of``), another model or another codebook size with a TokensMismatchError
(``ZooModel.check_origin``), unless it is called with ``allow_other_model=True``.

Provenance: ``zoo.load`` sets ``name`` (the registered name, or the source it was given),
``source`` (a folder or ``hf-hub:org/repo``) and ``revision`` (the resolved Hub commit sha; None
for a local folder). Batch rows and fine-tuned cards record them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.errors import (
    ConfigError,
    CorruptFileError,
    InputError,
    InputFileError,
    ModelFileNotFoundError,
    NotSupportedError,
    TokensMismatchError,
)
from zoo.files import CONFIG_NAME, MODALITIES, WEIGHTS_NAME, atomic_write

__all__ = [
    "MODALITIES",
    "TASKS",
    "Tokens",
    "ZooModel",
    "check_device",
    "check_float_tensor",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
    "config_from_dict",
    "config_to_dict",
    "inference",
    "is_tokens_file",
]

# The task verbs a family may declare in ``ZooModel.tasks`` beside encode/decode.
TASKS = ("lift", "segment", "synthesize")


@dataclass
class Tokens:
    """A batch of token sequences.

    Args:
        ids: (B, N) int64 discrete token ids, or None for continuous tokens.
        embeddings: (B, N, D) floating token vectors, or None for discrete tokens.
        mask: (B, N) bool, True where a position holds a real token. Defaults to all True.
        meta: per-sample tensors (leading dim B) and batch-wide JSON-able facts.
    """

    ids: Tensor | None = None
    embeddings: Tensor | None = None
    mask: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.ids is None and self.embeddings is None:
            raise InputError("Tokens needs ids (B, N) or embeddings (B, N, D); both are None")
        if self.ids is not None:
            if self.ids.dim() != 2:
                raise InputError(f"Tokens.ids must be (B, N), got shape {tuple(self.ids.shape)}")
            if self.ids.dtype != torch.int64:
                raise InputError(f"Tokens.ids must be int64, got {self.ids.dtype}")
        if self.embeddings is not None:
            if self.embeddings.dim() != 3:
                raise InputError(f"Tokens.embeddings must be (B, N, D), got shape {tuple(self.embeddings.shape)}")
            if not self.embeddings.is_floating_point():
                raise InputError(f"Tokens.embeddings must be floating point, got {self.embeddings.dtype}")
        if self.ids is not None and self.embeddings is not None and self.ids.shape != self.embeddings.shape[:2]:
            raise InputError(
                f"Tokens.ids {tuple(self.ids.shape)} and embeddings {tuple(self.embeddings.shape)} disagree on (B, N)"
            )
        reference = self.ids if self.ids is not None else self.embeddings
        if self.mask is None:
            self.mask = torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)
        elif self.mask.dtype != torch.bool or tuple(self.mask.shape) != tuple(reference.shape[:2]):
            raise InputError(
                f"Tokens.mask must be bool {tuple(reference.shape[:2])}, got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        for key, value in self.meta.items():
            if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != self.batch_size):
                raise InputError(
                    f"Tokens.meta[{key!r}] is a tensor of shape {tuple(value.shape)}; tensors in meta are "
                    f"per-sample and need a leading batch dimension of {self.batch_size}"
                )

    # ---- shape ----------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return (self.ids if self.ids is not None else self.embeddings).shape[0]

    @property
    def num_positions(self) -> int:
        """N, the padded length of every sequence in the batch."""
        return (self.ids if self.ids is not None else self.embeddings).shape[1]

    @property
    def lengths(self) -> Tensor:
        """(B,) int64 count of valid tokens per sample."""
        return self.mask.sum(dim=1)

    @property
    def device(self) -> torch.device:
        return self.mask.device

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        """Shapes, dtypes, lengths and meta keys, never whole tensors (as transformers' BatchEncoding)."""

        def show(value: Any) -> str:
            if isinstance(value, Tensor):
                return f"{str(value.dtype).removeprefix('torch.')}{tuple(value.shape)}"
            text = repr(value)
            if len(text) <= 40:
                return text
            if isinstance(value, (list, tuple, dict, str)):
                return f"{type(value).__name__}(len={len(value)})"
            return text[:37] + "..."

        lengths = self.lengths.tolist()
        shown = ", ".join(map(str, lengths[:8])) + (f", ... ({len(lengths)} in all)" if len(lengths) > 8 else "")
        meta = ", ".join(f"{k}: {show(v)}" for k, v in sorted(self.meta.items()))
        return (
            f"Tokens(batch_size={self.batch_size}, positions={self.num_positions}, "
            f"ids={show(self.ids)}, embeddings={show(self.embeddings)}, mask={show(self.mask)}, "
            f"lengths=[{shown}], device={self.device}, meta={{{meta}}})"
        )

    # ---- moving and slicing ---------------------------------------------------------------------
    def _map(self, fn: Callable[[Tensor], Tensor], meta_fn: Callable[[Tensor], Tensor] | None = None) -> Tokens:
        meta_fn = meta_fn or fn
        return Tokens(
            ids=None if self.ids is None else fn(self.ids),
            embeddings=None if self.embeddings is None else fn(self.embeddings),
            mask=fn(self.mask),
            meta={k: meta_fn(v) if isinstance(v, Tensor) else v for k, v in self.meta.items()},
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tokens:
        """Move every tensor to ``device``; ``dtype`` applies to the embeddings only (meta keeps its dtypes)."""

        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return self._map(move, meta_fn=lambda t: t.to(device=device))

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> Tokens:
        """Select samples along the batch dimension (an int keeps the batch dimension)."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"sample {index} out of range for a batch of {self.batch_size}")
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def truncate(self, n: int) -> Tokens:
        """Keep the first ``n`` positions of every sequence (FlexTok's coarse-to-fine prefixes)."""
        if not 1 <= n <= self.num_positions:
            raise InputError(f"cannot keep {n} positions of {self.num_positions}; choose 1..{self.num_positions}")
        return Tokens(
            ids=None if self.ids is None else self.ids[:, :n],
            embeddings=None if self.embeddings is None else self.embeddings[:, :n],
            mask=self.mask[:, :n],
            meta=dict(self.meta),
        )

    @staticmethod
    def cat(items: list[Tokens]) -> Tokens:
        """Join batches of equal N along the batch dimension (meta of the first for batch-wide facts)."""
        if not items:
            raise InputError("Tokens.cat needs at least one Tokens")
        first = items[0]
        for i, t in enumerate(items[1:], start=1):
            if t.num_positions != first.num_positions:
                raise InputError(
                    f"Tokens.cat: item {i} has N={t.num_positions} positions, item 0 has {first.num_positions}; "
                    "pad or truncate them to one length first"
                )
            if (t.ids is None) != (first.ids is None) or (t.embeddings is None) != (first.embeddings is None):
                raise InputError(f"Tokens.cat: item {i} does not hold the same kinds (ids/embeddings) as item 0")
            if set(t.meta) != set(first.meta):
                raise InputError(
                    f"Tokens.cat: item {i} has meta keys {sorted(t.meta)}, item 0 has {sorted(first.meta)}"
                )
            for key, value in first.meta.items():
                if not isinstance(value, Tensor) and t.meta[key] != value:
                    raise InputError(
                        f"Tokens.cat: batch-wide meta[{key!r}] differs: {value!r} (item 0) "
                        f"vs {t.meta[key]!r} (item {i})"
                    )

        def join(name):
            parts = [getattr(t, name) for t in items]
            return None if parts[0] is None else torch.cat(parts)

        meta = {k: torch.cat([t.meta[k] for t in items]) if isinstance(v, Tensor) else v for k, v in first.meta.items()}
        return Tokens(ids=join("ids"), embeddings=join("embeddings"), mask=join("mask"), meta=meta)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write to a safetensors file atomically (a crash leaves the old file or none, never half of one)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"mask": self.mask}
        if self.ids is not None:
            tensors["ids"] = self.ids
        if self.embeddings is not None:
            tensors["embeddings"] = self.embeddings
        shared = {}
        for key, value in self.meta.items():
            if isinstance(value, Tensor):
                tensors[f"meta.{key}"] = value
            else:
                shared[key] = value
        try:
            meta_json = json.dumps(shared, sort_keys=True)
        except TypeError as err:
            raise InputError(f"Tokens.meta must hold tensors or JSON-serialisable values: {err}") from err
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(
            path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "tokenzoo.tokens", "meta": meta_json})
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Tokens:
        from safetensors import safe_open

        path = check_input_file(path, "tokens file")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise CorruptFileError(str(path), f"not a readable safetensors file ({err})") from err
        if header.get("format") != "tokenzoo.tokens" or "mask" not in tensors:
            raise CorruptFileError(str(path), "not a tokenzoo tokens file (no 'tokenzoo.tokens' format tag)")
        try:
            meta: dict[str, Any] = json.loads(header.get("meta", "{}"))
        except ValueError as err:
            raise CorruptFileError(str(path), f"its batch-wide meta is not valid JSON ({err})") from err
        meta.update({k[len("meta.") :]: v for k, v in tensors.items() if k.startswith("meta.")})
        try:
            return cls(ids=tensors.get("ids"), embeddings=tensors.get("embeddings"), mask=tensors["mask"], meta=meta)
        except InputError as err:
            raise CorruptFileError(str(path), f"its tensors do not form valid Tokens ({err})") from err


def is_tokens_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a tokens file ``Tokens.save`` wrote (read from its header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == "tokenzoo.tokens"
    except Exception:  # not safetensors at all
        return False


# ---- configs ------------------------------------------------------------------------------------
def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_class: type, data: Mapping[str, Any], where: str = "config.json") -> Any:
    """Build ``config_class`` from ``data``; an unknown or missing key is an error naming it."""
    names = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown keys for {config_class.__name__}: {', '.join(unknown)}")
    missing = [
        n
        for n, f in names.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing keys for {config_class.__name__}: {', '.join(missing)}")
    values = {}
    for key, value in data.items():
        default = names[key].default
        # JSON has no tuples: give tuple-typed fields their tuples back so frozen configs compare equal.
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[key] = value
    return config_class(**values)


# ---- models -------------------------------------------------------------------------------------
def inference(method: Callable) -> Callable:
    """Run a public encode/decode (or task verb) under ``torch.no_grad``.

    Not ``torch.inference_mode``: tensors made there can never enter autograd, and continuous tokens
    are meant to be used as inputs to other models (and differentiated through) afterwards.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return method(*args, **kwargs)

    return wrapper


def check_input_file(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as a Path if it is a readable file, else InputFileError saying which problem it has: it does
    not exist, is a directory, is a dangling symlink or a symlink loop."""
    path = Path(path)
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputFileError(str(path), "is a symlink loop (it points, directly or not, at itself)", what) from err
        if path.is_symlink():
            problem = f"is a dangling symlink (its target {os.readlink(path)} does not exist)"
            raise InputFileError(str(path), problem, what) from err
        if isinstance(err, FileNotFoundError):
            raise InputFileError(str(path), "not found (no such file)", what) from err
        raise InputFileError(str(path), f"cannot be read ({err.strerror or err})", what) from err
    if path.is_dir():
        raise InputFileError(str(path), "is a directory, not a file (give the files inside it)", what)
    if not path.is_file():
        raise InputFileError(str(path), "is not a regular file", what)
    if not os.access(path, os.R_OK):
        raise InputFileError(str(path), "cannot be read (permission denied)", what)
    return path


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, what: str) -> None:
    """Raise InputError unless ``path`` can be created: its nearest existing ancestor is a writable folder."""
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise InputError(f"{what} {path} cannot be created: {anchor} is a file, not a folder")
    _probe_writable(anchor, f"{what} {path} cannot be written")


def _probe_writable(folder: Path, prefix: str) -> None:
    """Create and remove a hidden file in ``folder`` (permission bits do not tell for root or read-only mounts)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".tokenzoo-probe-")
    except OSError as err:
        raise InputError(f"{prefix}: cannot create files in {folder} ({err.strerror or err})") from err
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a Path if a file can be written there (atomically, beside it), else InputError naming why:
    it is a directory, something in the way is a file, or the folder is not writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; give the name of a file to write inside it")
    if path.exists() and not path.is_file():
        raise InputError(f"{what} {path} exists and is not a regular file")
    _check_creatable(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a Path if a folder can be written there, else InputError naming why (an existing file,
    something in the way is a file, or no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is an existing file; give a folder (new or empty) to write into")
    if path.is_dir():
        _probe_writable(path, f"{what} {path} cannot be written")
    else:
        _check_creatable(path, what)
    return path


# The batch-wide meta keys every encode records about the model that made the tokens (``ZooModel.stamp``).
PROVENANCE_KEYS = ("model", "arch", "codebook_size")


def _stamping(encode: Callable) -> Callable:
    """Wrap a family's ``encode`` so the Tokens it returns record the model that made them."""

    @functools.wraps(encode)
    def wrapper(self, *args, **kwargs):
        tokens = encode(self, *args, **kwargs)
        return self.stamp(tokens) if isinstance(tokens, Tokens) else tokens

    wrapper._zoo_provenance = True
    return wrapper


def _checking(decode: Callable) -> Callable:
    """Wrap a family's ``decode``: Tokens made by another model are refused unless ``allow_other_model=True``."""

    @functools.wraps(decode)
    def wrapper(self, *args, allow_other_model: bool = False, **kwargs):
        tokens = args[0] if args else kwargs.get("tokens")
        if not allow_other_model and isinstance(tokens, Tokens):
            self.check_origin(tokens)
        return decode(self, *args, **kwargs)

    wrapper._zoo_provenance = True
    return wrapper


def _not_supported(model: ZooModel, what: str) -> NotSupportedError:
    return NotSupportedError(f"{model.arch} ({type(model).__name__}) does not support {what}")


class ZooModel(nn.Module):
    """Base of every model in the zoo; the module docstring is the whole extension API."""

    arch: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    # The files a model folder or Hub repo of this arch must hold (README.md is always fetched too).
    hub_files: ClassVar[tuple[str, ...]] = (CONFIG_NAME, WEIGHTS_NAME)
    # Capabilities, declared (tests/test_models.py checks them against what the model does).
    supports_decode: ClassVar[bool] = False
    supports_training: ClassVar[bool] = False
    tasks: ClassVar[frozenset[str]] = frozenset()
    skeleton_parents: ClassVar[tuple[int, ...] | None] = None
    # The license of weights this class makes when no card says otherwise (cards of saved models use it).
    license: ClassVar[str | None] = None
    # The archs, besides its own, whose tokens this model's decode takes (TouchTTS decodes S3Tokenizer ids).
    decodes_tokens_of: ClassVar[frozenset[str]] = frozenset()
    # Provenance, set by zoo.load on the instance.
    name: str | None = None
    source: str | None = None
    revision: str | None = None

    def __init_subclass__(cls, **kwargs):
        """Every family's ``encode`` stamps its Tokens with ``stamp`` and its ``decode`` checks them with
        ``check_origin``, so no family has to remember to (and ``allow_other_model=True`` is accepted by all)."""
        super().__init_subclass__(**kwargs)
        for name, wrap in (("encode", _stamping), ("decode", _checking)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_zoo_provenance", False):
                setattr(cls, name, wrap(method))

    def __init__(self, config: Any, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Subclasses take the same arguments and build their modules ``with self.building(device, dtype):``."""
        super().__init__()
        if self.config_class is not None and not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ConfigError(f"{type(self).__name__}.tasks names unknown verbs {sorted(unknown)}; see zoo.api.TASKS")
        self.config = config

    @contextlib.contextmanager
    def building(self, device: torch.device | str | None, dtype: torch.dtype | None):
        """Build modules inside this block: they are created on ``device`` (torch's default-device
        context) and cast to ``dtype`` at the end (floating tensors only)."""
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield
        if dtype is not None:
            self.to(dtype=dtype)

    # ---- the contract ---------------------------------------------------------------------------
    def encode(self, x: Any, **kwargs) -> Tokens:
        """Raw inputs or the batch ``preprocess`` returns -> Tokens (under ``@inference``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def decode(self, tokens: Tokens, **kwargs) -> Any:
        """Tokens -> the modality (under ``@inference``), where ``supports_decode``."""
        raise NotSupportedError(f"{self.arch} has no decoder: its tokens cannot be turned back into {self.modality}")

    def preprocess(self, raw: Any) -> Any:
        """Raw inputs (files, PIL images, numpy arrays, strings) -> the batch ``encode`` takes."""
        return raw

    def postprocess(self, output: Any) -> Any:
        """``decode``'s output -> raw outputs (PIL images, waveforms, ...)."""
        return output

    # ---- provenance of tokens ---------------------------------------------------------------------
    def stamp(self, tokens: Tokens) -> Tokens:
        """Record in ``tokens.meta`` (batch-wide, kept where already set) the model that made them: its
        ``model`` name (when loaded by ``zoo.load``), ``arch`` and ``codebook_size`` (discrete ids)."""
        if self.name:
            tokens.meta.setdefault("model", self.name)
        tokens.meta.setdefault("arch", self.arch)
        if tokens.ids is not None and self.codebook_size is not None:
            tokens.meta.setdefault("codebook_size", int(self.codebook_size))
        return tokens

    def check_origin(self, tokens: Tokens) -> None:
        """Raise TokensMismatchError if ``tokens`` record another arch (not in ``decodes_tokens_of``), another
        model name (both known), or another codebook size. Tokens that record nothing pass."""
        meta = tokens.meta
        differences = []
        arch = meta.get("arch")
        if arch is not None and arch != self.arch and arch not in self.decodes_tokens_of:
            differences.append(f"arch {arch} vs {self.arch}")
        made_by = meta.get("model")
        if arch in (None, self.arch) and made_by is not None and self.name and made_by != self.name:
            differences.append(f"model {made_by} vs {self.name}")
        size = meta.get("codebook_size")
        if tokens.ids is not None and size is not None and self.codebook_size is not None:
            if int(size) != int(self.codebook_size):
                differences.append(f"a {int(size)}-token codebook, not this model's {int(self.codebook_size)}")
        if differences:
            who = made_by or "another model"
            who = f"{who} (arch {arch})" if arch else who
            raise TokensMismatchError(who, f"{self.name or self.arch} (arch {self.arch})", differences)

    # ---- task verbs (declare the ones implemented in ``tasks``) ---------------------------------
    def lift(self, keypoints: Any, **kwargs) -> Tensor:
        """2D keypoint clips -> 3D poses (pose lifters)."""
        raise _not_supported(self, "lift (2D keypoints -> 3D poses)")

    def segment(self, volume: Any, **kwargs) -> Tensor:
        """A volume -> instance labels (EM segmentation)."""
        raise _not_supported(self, "segment (volume -> labels)")

    def synthesize(self, text: Any, **kwargs) -> Any:
        """Text -> speech (text-to-speech models)."""
        raise _not_supported(self, "synthesize (text -> speech)")

    # ---- hooks for the tools (see the table in the module docstring) ----------------------------
    def load_item(self, path: str | os.PathLike) -> Any:
        """One input file -> one raw item: a ``.npy`` file is read as a numpy array (never a pickle),
        any other file is handed on as its path for ``preprocess`` to read."""
        import numpy as np

        path = check_input_file(path)
        if path.suffix == ".npy":
            try:
                return np.load(path, allow_pickle=False)
            except (ValueError, EOFError, OSError) as err:
                raise InputError(f"{path}: not a plain numpy array file ({err})") from err
        return path

    def batch_key(self, item: Any) -> int:
        """The size items are bucketed by: a path's file size, ``len(item)``, or 0."""
        if isinstance(item, Path):
            return item.stat().st_size
        try:
            return len(item)
        except TypeError:
            return 0

    def collate(self, items: list[Any]) -> Any:
        """Raw items -> the batch ``encode`` takes: numpy arrays of one shape are stacked into one
        (B, ...) array first (every array-taking ``preprocess`` reads that as a batch)."""
        import numpy as np

        items = list(items)
        if items and all(isinstance(x, np.ndarray) for x in items) and len({x.shape for x in items}) == 1:
            return self.preprocess(np.stack(items))
        return self.preprocess(items)

    def training_batch(self, items: list[Any]) -> Any:
        """Raw items -> the batch ``training_loss`` takes."""
        return self.collate(items)

    def training_loss(self, batch: Any) -> Tensor:
        """A scalar loss with gradients (set ``supports_training`` when you define it)."""
        raise NotSupportedError(f"{self.arch} does not define a training loss, so it cannot be fine-tuned")

    def evaluate(self, batch: Any) -> dict[str, float]:
        """Held-out metrics of one batch, lower-is-better first."""
        return {"loss": float(self.training_loss(batch))}

    def input_units(self, item: Any) -> tuple[float, str] | None:
        """An item's size in its natural unit (count, unit), or None when the family does not say."""
        return None

    def reconstruct(self, batch: Any, tokens: Tokens) -> list[Any]:
        """Tokens -> one reconstruction per item."""
        return list(self.postprocess(self.decode(tokens)))

    def save_output(self, output: Any, path: str | os.PathLike) -> Path:
        """Write one reconstruction (an item of ``reconstruct``) to ``path`` with the suffix of its kind,
        atomically; returns the path written. A PIL image becomes ``.png``; a tensor or numpy array ``.npy``."""
        import numpy as np
        from PIL import Image

        path = Path(path)
        if isinstance(output, Image.Image):
            target = path.with_suffix(".png")
            atomic_write(target, lambda tmp: output.save(tmp, format="PNG"))
            return target
        if isinstance(output, Tensor):
            output = output.detach().float().cpu().numpy() if output.is_floating_point() else output.cpu().numpy()
        if not isinstance(output, np.ndarray):
            raise NotSupportedError(f"{self.arch} cannot save a {type(output).__name__} output; override save_output")
        target = path.with_suffix(".npy")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
                np.save(f, output, allow_pickle=False)

        atomic_write(target, write)
        return target

    def reconstruction_quality(self, items: list[Any], reconstructions: list[Any]) -> dict[str, Any] | None:
        """``{"name", "value", "protocol"}`` scoring ``reconstructions`` against the raw ``items``, or None."""
        return None

    def compare_metrics(self, items: list[Any], token_batches: list[Tokens]) -> dict[str, float]:
        """Extra, family-specific columns for ``tokenzoo compare``."""
        return {}

    def sample_inputs(self) -> list[Any]:
        """A few raw items to try the model on (paths of bundled files where there are some)."""
        return []

    @property
    def codebook_size(self) -> int | None:
        """K, the number of distinct ids: the size of the model's one ``zoo.quant`` quantizer, else None."""
        from zoo.quant import FSQ, VectorQuantizer

        sizes = {m.codebook_size for m in self.modules() if isinstance(m, (FSQ, VectorQuantizer))}
        return sizes.pop() if len(sizes) == 1 else None

    # ---- device and dtype -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    # ---- files ----------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """What config.json holds: the arch name and every config field."""
        data = config_to_dict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        return {"arch": self.arch, **data}

    @classmethod
    def config_from_json(cls, data: Mapping[str, Any], where: str = CONFIG_NAME) -> Any:
        """config.json's content -> a ``config_class`` instance (the ``arch`` key is checked, not passed)."""
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ConfigError(f"{where} is for arch {arch!r}, not {cls.arch!r}")
        if cls.config_class is None:
            raise ConfigError(f"{cls.__name__} has no config_class; override config_from_json")
        return config_from_dict(cls.config_class, data, where)

    @classmethod
    def from_config_dict(cls, data: Mapping[str, Any], where: str = CONFIG_NAME) -> ZooModel:
        """Build an untrained model from config.json's content."""
        return cls(cls.config_from_json(data, where))

    @classmethod
    def empty(cls, config: Any, **kwargs) -> ZooModel:
        """The model with its parameters on the meta device (no memory, no random init) and its
        buffers real; fill it with ``zoo.hub.load_state`` (``load_state_dict(..., assign=True)``)."""
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            return cls(config, **kwargs)

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        source: str | None = None,
        revision: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ZooModel:
        """Build from a model folder's config.json on the meta device and load model.safetensors strictly.

        Families whose upstream layout differs (FlexTok's ``_target_`` config, diffusers VAEs)
        override this and translate the folder first.
        """
        from zoo.hub import load_weights, read_config

        config_path = Path(folder) / CONFIG_NAME
        if not config_path.is_file():
            raise ModelFileNotFoundError(source or str(folder), CONFIG_NAME, revision)
        model = cls.empty(cls.config_from_json(read_config(config_path, source), where=str(config_path)))
        load_weights(model, Path(folder) / WEIGHTS_NAME, source=source, revision=revision, device=device, dtype=dtype)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike, card: Any = None) -> Path:
        from zoo.hub import save_model_folder

        return save_model_folder(self, Path(folder), card=card)

    def push_to_hub(self, repo_id: str, card: Any = None, **kwargs) -> str:
        from zoo.hub import push_model

        return push_model(self, repo_id, card=card, **kwargs)


# Dtypes a model may autocast to on an accelerator; "float32" means no autocast.
AUTOCAST_DTYPES = ("bfloat16", "float16", "float32")


def accelerator_autocast(device: torch.device, name: str):
    """``torch.autocast`` in ``name`` (one of ``AUTOCAST_DTYPES``) on an accelerator; off on CPU and for
    "float32". Families pass their config's precision field here (an explicit field, never a mutable flag)."""
    if name not in AUTOCAST_DTYPES:
        raise InputError(f"autocast_dtype={name!r} must be one of {', '.join(AUTOCAST_DTYPES)}")
    enabled = name != "float32" and device.type != "cpu"
    return torch.autocast(device_type=device.type, dtype=getattr(torch, name), enabled=enabled)


def check_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a torch.device (None stays None), or ConfigError if torch does not know the name or the
    machine does not have it (``cuda`` without a CUDA GPU, ``cuda:3`` on a two-GPU machine)."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps (torch says: {err})") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} asked for, but CUDA is not available here (no visible GPU, or torch "
                f"{torch.__version__} built without CUDA); use --device cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    return parsed


def check_float_tensor(x: Any, name: str, dims: tuple[int, ...] | int | None = None) -> Tensor:
    """Raise InputError unless ``x`` is a finite, non-empty floating tensor of the given rank(s)."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else dims
        if x.dim() not in allowed:
            raise InputError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}"
            )
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point, got {x.dtype} (scale integer data to floats first)")
    if x.numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return x
