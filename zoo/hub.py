"""Model folders and the Hugging Face Hub: strict safetensors load/save, download, push.

A model folder (and a Hub repo) holds README.md (the card), config.json and model.safetensors.
Downloads go through the real ``huggingface_hub`` client, so revisions, the cache and
``HF_HUB_OFFLINE=1`` behave as everywhere else in the ecosystem; its errors are translated into
tokenzoo's, which name the repo, the revision and the file.

What reaches a model is checked first:
- every file a download brings is hashed against the ETag its cache blob is named by (sha256 for
  LFS files, the git blob sha1 otherwise); a mismatch evicts the blob and its snapshot entry, so a
  corrupted transfer never stays in the cache. Files already cached were checked when they came.
- a safetensors file must be exactly as long as its header says (a truncated file is refused, and
  evicted from the cache), and a pickle is refused by its suffix or its first bytes, unopened.
- all files of one load come from one commit: the first download resolves the revision (a branch
  or tag may move while we fetch) and the rest are fetched at that commit sha.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.cards import card_for_model
from zoo.errors import (
    CheckpointMismatchError,
    CorruptFileError,
    ModelFileNotFoundError,
    OfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsafeFormatError,
)
from zoo.files import (
    CARD_NAME,
    CONFIG_NAME,
    PICKLE_MAGICS,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    atomic_write,
    git_blob_sha1,
    sha256_file,
)

logger = logging.getLogger(__name__)


# ---- weights ------------------------------------------------------------------------------------
def refuse_pickle(path: Path, source: str | None = None) -> None:
    """Raise UnsafeFormatError if ``path`` is a pickle by name or by its first bytes (it is not unpickled)."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeFormatError(path.name, source or str(path.parent))
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(PICKLE_MAGICS):
            raise UnsafeFormatError(path.name, source or str(path.parent))


def read_safetensors_header(path: Path, source: str | None = None) -> dict[str, Any]:
    """Parse a safetensors header and check that the file is exactly as long as the header says."""
    path = Path(path)
    refuse_pickle(path, source)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError(path.name, f"{size} bytes is shorter than a safetensors header", source=source)
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise CorruptFileError(
                path.name, f"its header claims {n} bytes but only {size - 8} follow (truncated?)", source=source
            )
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise CorruptFileError(
                path.name, f"its header is not valid safetensors JSON ({err})", source=source
            ) from err
    if 8 + n + end != size:
        raise CorruptFileError(
            path.name, f"holds {size} bytes but its header describes {8 + n + end} (truncated?)", source=source
        )
    return header


def read_safetensors(
    path: Path, source: str | None = None, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (onto ``device``, default CPU); a pickle or a broken file is
    refused by name."""
    from safetensors.torch import load_file

    path = Path(path)
    refuse_pickle(path, source)
    if not path.is_file():
        raise ModelFileNotFoundError(source or str(path.parent), path.name)
    read_safetensors_header(path, source)
    try:
        return load_file(str(path), device=_safetensors_device(device))
    except Exception as err:  # safetensors raises SafetensorError / OSError for bad headers and dtypes
        raise CorruptFileError(path.name, f"not a readable safetensors file ({err})", source=source) from err


def _safetensors_device(device: torch.device | str | None) -> str:
    """A device as safetensors names it: "cpu" for any CPU device (it refuses "cpu:0"), else "cuda:1" etc."""
    device = torch.device("cpu" if device is None else device)
    return "cpu" if device.type == "cpu" else str(device)


def read_config(path: Path, source: str | None = None) -> dict[str, Any]:
    """A config.json as a dict; a file that is not a JSON object is a CorruptFileError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptFileError(CONFIG_NAME, f"not valid JSON ({err})", source=source) from err
    if not isinstance(data, dict):
        raise CorruptFileError(CONFIG_NAME, f"holds a {type(data).__name__}, not a JSON object", source=source)
    return data


def load_state_dict_strict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    file: str,
    source: str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key raises, naming the keys.

    The tensors are assigned, not copied (``load_state_dict(..., assign=True)``), so a model built
    on the meta device (``ZooModel.empty``) gets real parameters without ever being initialised.
    Floating tensors are cast to ``dtype`` when one is given, else to the dtype the model declares for
    them. Buffers the checkpoint does not hold (non-persistent ones) are moved to the device of the
    loaded weights.

    CPU tensors that do not start on a 64-byte boundary are copied first: safetensors hands out views
    into the file's buffer at the offsets the header gives, and assigning those as parameters makes
    vectorised kernels (oneDNN, MKL) take their unaligned paths, which sum in another order, so the
    loaded model's outputs differ from the saved one's in the last bits.
    """
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            getattr(model, "arch", type(model).__name__), file, missing, unexpected, mismatched, source=source
        )
    # Floating tensors take the model's dtype (or ``dtype``), as a copying load would give them.
    state = {k: v.to(dtype or expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: _aligned(v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    devices = {t.device for t in state.values()}
    if len(devices) == 1 or dtype is not None:
        model.to(device=devices.pop() if len(devices) == 1 else None, dtype=dtype)


CPU_ALIGNMENT = 64  # bytes; what PyTorch's CPU allocator gives every fresh tensor


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself when its data starts on a ``CPU_ALIGNMENT`` boundary (or it is not on the CPU), else a copy."""
    if tensor.device.type != "cpu" or tensor.data_ptr() % CPU_ALIGNMENT == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def load_weights(
    model: nn.Module,
    path: Path,
    source: str | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Load ``path`` into ``model`` strictly, onto ``device`` in ``dtype`` (default: CPU, as stored).
    A folder with only a pickle checkpoint is refused by name."""
    path = Path(path)
    where = f"{source}@{revision}" if source and revision else source
    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeFormatError(pickles[0], where or str(path.parent))
        raise ModelFileNotFoundError(source or str(path.parent), path.name, revision)
    load_state_dict_strict(model, read_safetensors(path, where, device=device), path.name, where, dtype=dtype)


def save_model_folder(model: nn.Module, folder: Path, card: Any = None) -> Path:
    """Write README.md + config.json + model.safetensors; each file lands atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Tied or shared tensors would make safetensors refuse; families keep one owner per tensor.
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    config_text = json.dumps(model.config_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(config_text))
    card = card if card is not None else card_for_model(model)
    card_text = card if isinstance(card, str) else str(card)
    atomic_write(folder / CARD_NAME, lambda tmp: tmp.write_text(card_text))
    return folder


# ---- the Hub ------------------------------------------------------------------------------------
def offline_mode() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub itself reads it once, at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or flag.strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _translate(err: Exception, repo_id: str, revision: str | None, filename: str, offline: bool) -> Exception:
    """Map huggingface_hub's (and its HTTP layer's) exceptions onto ours; the nesting is most specific first."""
    import httpx2
    from huggingface_hub import errors as hf

    revision = revision or "main"
    if isinstance(err, hf.RevisionNotFoundError):
        return RevisionNotFoundError(repo_id, revision, _endpoint())
    if isinstance(err, hf.RepositoryNotFoundError):  # includes gated and disabled repos
        return RepoNotFoundError(repo_id, _endpoint())
    if isinstance(err, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        reason = "HF_HUB_OFFLINE=1 (or local_files_only) forbids downloading it" if offline else ""
        if not offline and err.__cause__ is not None:
            reason = f"the Hub at {_endpoint()} could not be used ({type(err.__cause__).__name__})"
        return OfflineError(repo_id, revision, filename, reason)
    if isinstance(err, hf.EntryNotFoundError):
        return ModelFileNotFoundError(f"hf-hub:{repo_id}", filename, revision)
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return CorruptFileError(filename, f"the download was cut short ({err})", source=f"hf-hub:{repo_id}@{revision}")
    if isinstance(err, httpx2.RemoteProtocolError):  # the connection closed mid-file, and resuming failed too
        return CorruptFileError(filename, f"the download was cut short ({err})", source=f"hf-hub:{repo_id}@{revision}")
    return err


def verify_cached_file(path: Path, repo_id: str, filename: str, revision: str | None = None) -> None:
    """Check a cached file against the ETag its blob is named by; evict it if it does not match.

    The huggingface_hub cache stores each file as ``blobs/<etag>`` with the snapshot entry linking
    to it. LFS files have the sha256 of their content as ETag, regular files the git blob sha1.
    A cache without symlinks (copies) cannot be checked this way and is left as it is.
    """
    path = Path(path)
    blob = path.resolve()
    etag = blob.name
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        actual, kind = sha256_file(blob), "sha256"
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        actual, kind = git_blob_sha1(blob), "git sha1"
    else:
        return
    if actual != etag:
        evict(path)
        raise CorruptFileError(
            filename,
            f"its content has {kind} {actual[:12]}... but the Hub's ETag is {etag[:12]}...; "
            "it was removed from the cache",
            source=f"hf-hub:{repo_id}@{revision or 'main'}",
        )


def evict(path: Path) -> None:
    """Remove a snapshot entry and the blob behind it from the Hub cache."""
    path = Path(path)
    blob = path.resolve()
    for p in (path, blob):
        if p.is_symlink() or p.exists():
            p.unlink()


def snapshot_of(path: Path, filename: str) -> Path:
    """The snapshot folder ``.../snapshots/<sha>`` that holds ``filename`` at ``path``."""
    return Path(path).parents[len(Path(filename).parts) - 1]


# The revision errors name while download_model fetches by a commit sha it resolved from a branch or tag.
_shown_revision: ContextVar[str | None] = ContextVar("tokenzoo_shown_revision", default=None)


def download_file(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Download (or take from the cache) one file of a Hub model repo; a fresh download is hash-checked.

    Pickle checkpoints are refused unopened unless ``allow_pickle`` (an official model's upstream file,
    fetched for its converter, which opens it with ``weights_only=True``).
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    shown = _shown_revision.get() or revision
    if Path(filename).suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UnsafeFormatError(filename, f"hf-hub:{repo_id}@{shown or 'main'}")
    offline = local_files_only or offline_mode()
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    try:
        path = Path(
            hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline)
        )
    except Exception as err:
        translated = _translate(err, repo_id, shown, filename, offline)
        if translated is err:
            raise
        raise translated from err
    if not isinstance(cached, str) or Path(cached) != path:  # new in the cache: check what came over the wire
        verify_cached_file(path, repo_id, filename, shown)
    return path


def download_model(
    repo_id: str,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    files: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME),
    shown_revision: str | None = None,
) -> Path:
    """Fetch ``files`` (config.json and model.safetensors unless told otherwise), all from the commit the
    first one resolves ``revision`` to, and README.md if the repo has one; return the snapshot folder.

    Every safetensors file is checked for truncation (and evicted from the cache if it is short).
    A repo that has a pickle checkpoint where the weights should be is refused by name.
    ``shown_revision`` is the revision errors name when ``revision`` is a sha resolved by the caller.
    """
    shown = shown_revision or revision or "main"
    token = _shown_revision.set(shown)
    try:
        first = download_file(repo_id, files[0], revision, local_files_only, cache_dir)
        snapshot = snapshot_of(first, files[0])
        commit = snapshot.name  # the cache names snapshots by commit sha
        paths = [first]
        for name in files[1:]:
            try:
                paths.append(download_file(repo_id, name, commit, local_files_only, cache_dir))
            except ModelFileNotFoundError:
                if name.endswith(".safetensors"):
                    _refuse_hub_pickles(repo_id, commit, shown, local_files_only)
                raise
        for name, path in zip(files, paths):
            if name.endswith(".safetensors"):
                try:
                    read_safetensors_header(path, source=f"hf-hub:{repo_id}@{shown}")
                except CorruptFileError:
                    evict(path)
                    raise
        try:
            download_file(repo_id, CARD_NAME, commit, local_files_only, cache_dir)
        except (ModelFileNotFoundError, OfflineError):
            pass  # a card is welcome but not needed to load
    finally:
        _shown_revision.reset(token)
    return snapshot


def _refuse_hub_pickles(repo_id: str, commit: str, shown: str, local_files_only: bool) -> None:
    """If the repo holds pickle checkpoints instead of safetensors, say so (without downloading them)."""
    if local_files_only or offline_mode():
        return
    from huggingface_hub import HfApi

    try:
        names = HfApi().list_repo_files(repo_id, revision=commit)
    except Exception:  # the listing only sharpens the message; the missing-file error stands without it
        logger.debug("could not list %s@%s", repo_id, commit, exc_info=True)
        return
    pickles = sorted(n for n in names if Path(n).suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeFormatError(pickles[0], f"hf-hub:{repo_id}@{shown}")


def push_model(
    model: nn.Module,
    repo_id: str,
    card: Any = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload tokenzoo model",
    token: str | None = None,
) -> str:
    """Create ``repo_id`` (and branch ``revision``) if needed and commit the model folder in one commit;
    returns the commit sha (the current head if nothing changed)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_model_folder(model, Path(tmp), card=card)
        return push_folder(Path(tmp), repo_id, private, revision, commit_message, token)


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload tokenzoo model",
    token: str | None = None,
) -> str:
    """Commit every file directly in ``folder`` to ``repo_id`` (created, with branch ``revision``, if needed)
    in one commit; returns the commit sha."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub import errors as hf

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
            for p in sorted(Path(folder).iterdir())
            if p.is_file()
        ]
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)
    except hf.HfHubHTTPError as err:
        translated = _translate(err, repo_id, revision, CONFIG_NAME, offline=False)
        if translated is err:
            raise
        raise translated from err
    return info.oid
