"""The contract every tokenizer in the zoo keeps: ``encode(x) -> Tokens`` and ``decode(Tokens) -> x``.

Shape letters: B batch, N token positions, D embedding width.

``Tokens`` is one dataclass for every modality. It holds discrete ``ids`` (B, N) int64, or continuous
``embeddings`` (B, N, D), or both; a ``mask`` (B, N) bool marks the valid positions of each sample
(FlexTok's k, audio lengths, HoT's kept frames); ``meta`` carries the rest. A tensor in ``meta`` is
per-sample and has a leading B dimension, so slicing a batch slices it too; any other value
(numbers, strings, lists) describes the whole batch and must be JSON-serialisable so that
``Tokens.save`` can store it.

``ZooModel`` is the ``nn.Module`` base of every model: it knows its ``arch`` and ``modality``,
carries a frozen config dataclass, and saves and loads itself as a model folder
(README.md card + config.json + model.safetensors) through :mod:`zoo.hub`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.errors import ConfigError, CorruptFileError, InputError, ModelFileNotFoundError, NotSupportedError

MODALITIES = ("text", "image", "audio", "pose", "em_volume")


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

        path = Path(path)
        if not path.is_file():
            raise ModelFileNotFoundError(str(path.parent), path.name)
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


def _process_umask() -> int:
    mask = os.umask(0o022)  # os.umask can only be read by setting it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or an error in ``write`` leaves the old file (or none) and no temporary file behind.
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    """Run a public encode/decode under ``torch.no_grad``: no autograd bookkeeping, and unlike
    ``inference_mode`` its outputs can feed later computations that do track gradients."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return method(*args, **kwargs)

    return wrapper


class ZooModel(nn.Module):
    """Base of every model in the zoo.

    A subclass sets ``arch`` (the registry name of its architecture), ``modality`` (one of
    ``MODALITIES``) and ``config_class`` (a frozen dataclass), builds itself from ``config`` in
    ``__init__``, and implements ``encode`` and, where the family has one, ``decode``.
    ``preprocess`` turns raw inputs (paths, PIL images, arrays, strings) into the batch tensor
    ``encode`` takes; ``postprocess`` turns ``decode``'s output back into raw outputs.
    """

    arch: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    # The files a model folder or Hub repo of this arch must hold (README.md is always fetched too).
    hub_files: ClassVar[tuple[str, ...]] = ("config.json", "model.safetensors")

    def __init__(self, config: Any):
        super().__init__()
        if self.config_class is not None and not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    # ---- the contract ---------------------------------------------------------------------------
    def encode(self, x: Any, **kwargs) -> Tokens:
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def decode(self, tokens: Tokens, **kwargs) -> Any:
        raise NotSupportedError(f"{self.arch} has no decoder: its tokens cannot be turned back into {self.modality}")

    def preprocess(self, raw: Any) -> Any:
        """Raw inputs (files, PIL images, numpy arrays, strings) -> the batch ``encode`` takes."""
        return raw

    def postprocess(self, output: Any) -> Any:
        """``decode``'s output -> raw outputs (PIL images, waveforms, ...)."""
        return output

    # Hooks for zoo.finetune and zoo.batch; families that train or batch specially override them.
    def training_loss(self, batch: Any) -> Tensor:
        raise NotSupportedError(f"{self.arch} does not define a training loss, so it cannot be fine-tuned")

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
    def from_config_dict(cls, data: Mapping[str, Any], where: str = "config.json") -> ZooModel:
        """Build an untrained model from config.json's content (the ``arch`` key is checked, not passed)."""
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ConfigError(f"{where} is for arch {arch!r}, not {cls.arch!r}")
        if cls.config_class is None:
            raise ConfigError(f"{cls.__name__} has no config_class; override from_config_dict")
        return cls(config_from_dict(cls.config_class, data, where))

    @classmethod
    def from_folder(cls, folder: Path, source: str | None = None, revision: str | None = None) -> ZooModel:
        """Build from a model folder's config.json and load model.safetensors strictly.

        Families whose upstream Hub layout differs (FlexTok's config with ``_target_`` entries)
        override this and translate through their convert.py.
        """
        from zoo.hub import load_weights

        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelFileNotFoundError(source or str(folder), "config.json", revision)
        model = cls.from_config_dict(json.loads(config_path.read_text()), where=str(config_path))
        load_weights(model, folder / "model.safetensors", source=source, revision=revision)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike, card: Any = None) -> Path:
        from zoo.hub import save_model_folder

        return save_model_folder(self, Path(folder), card=card)

    def push_to_hub(self, repo_id: str, card: Any = None, **kwargs) -> str:
        from zoo.hub import push_model

        return push_model(self, repo_id, card=card, **kwargs)


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
