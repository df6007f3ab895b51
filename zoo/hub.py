"""Model folders and the Hugging Face Hub: strict safetensors load/save, download, push.

A model folder (and a Hub repo) holds README.md (the card), config.json and model.safetensors.
Downloads go through the real ``huggingface_hub`` client, so revisions, the cache and
``HF_HUB_OFFLINE=1`` behave as everywhere else in the ecosystem; its errors are translated into
tokenzoo's, which name the repo, the revision and the file. Every weight file is checked before it
is used: a cached blob whose content does not hash to its ETag (sha256 for LFS files, git sha1
otherwise) or whose safetensors header does not parse is deleted from the cache and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.api import atomic_write
from zoo.errors import (
    CheckpointMismatchError,
    CorruptFileError,
    ModelFileNotFoundError,
    OfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsafeFormatError,
)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---- weights ------------------------------------------------------------------------------------
def read_safetensors(path: Path, source: str | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file on CPU; a pickle or a broken file is refused by name."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeFormatError(str(path))
    if not path.is_file():
        raise ModelFileNotFoundError(source or str(path.parent), path.name)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises SafetensorError / OSError for truncation and bad headers
        raise CorruptFileError(path.name, f"not a readable safetensors file ({err})", source=source) from err


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], file: str, source: str | None = None):
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped key raises, naming the keys."""
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
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: Path, source: str | None = None, revision: str | None = None) -> None:
    path = Path(path)
    if not path.is_file():
        pickles = [p.name for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise UnsafeFormatError(str(path.parent / pickles[0]))
        raise ModelFileNotFoundError(source or str(path.parent), path.name, revision)
    load_state_dict_strict(model, read_safetensors(path, source), path.name, source)


def save_model_folder(model: nn.Module, folder: Path, card: Any = None) -> Path:
    """Write README.md + config.json + model.safetensors; each file lands atomically."""
    from safetensors.torch import save_file

    from zoo.cards import card_for_model

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
def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _translate(err: Exception, repo_id: str, revision: str | None, filename: str) -> Exception:
    """Map huggingface_hub's exceptions onto ours (most specific first: the hierarchy nests)."""
    from huggingface_hub import errors as hf

    if isinstance(err, hf.RevisionNotFoundError):
        return RevisionNotFoundError(repo_id, revision or "main")
    if isinstance(err, hf.RepositoryNotFoundError):
        return RepoNotFoundError(repo_id, _endpoint())
    if isinstance(err, hf.LocalEntryNotFoundError):
        return OfflineError(repo_id, revision, filename)
    if isinstance(err, hf.EntryNotFoundError):
        return ModelFileNotFoundError(f"hf-hub:{repo_id}", filename, revision or "main")
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return CorruptFileError(filename, f"download was cut short ({err})", source=f"hf-hub:{repo_id}")
    return err


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cached_file(path: Path, repo_id: str, filename: str) -> None:
    """Check a cached file against the ETag its blob is named by; delete it if it does not match.

    The huggingface_hub cache stores each file as ``blobs/<etag>`` with the snapshot entry linking
    to it. LFS files have the sha256 of their content as ETag, regular files the git blob sha1.
    """
    path = Path(path)
    blob = path.resolve()
    etag = blob.name
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        actual = _sha256(blob)
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        actual = _git_blob_sha1(blob)
    else:
        return
    if actual != etag:
        _evict(path)
        raise CorruptFileError(
            filename, f"its content hashes to {actual[:12]}..., the Hub says {etag[:12]}...", source=f"hf-hub:{repo_id}"
        )


def _evict(path: Path) -> None:
    """Remove a snapshot entry and the blob behind it from the cache."""
    blob = Path(path).resolve()
    for p in (Path(path), blob):
        if p.is_symlink() or p.exists():
            p.unlink()


def _clean_incomplete(repo_id: str, cache_dir: str | os.PathLike | None) -> None:
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "blobs"
    for partial in root.glob("*.incomplete"):
        partial.unlink(missing_ok=True)


def download_file(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download (or reuse from the cache) one file of a Hub model repo, verified."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(
            hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
            )
        )
    except Exception as err:
        _clean_incomplete(repo_id, cache_dir)
        raise _translate(err, repo_id, revision, filename) from err
    verify_cached_file(path, repo_id, filename)
    return path


def download_model(
    repo_id: str,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    files: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME),
) -> Path:
    """Fetch ``files`` (config.json and model.safetensors unless told otherwise) and, if present,
    README.md; return the snapshot folder that holds them."""
    paths = [download_file(repo_id, name, revision, local_files_only, cache_dir) for name in files]
    for path in paths:
        if path.suffix == ".safetensors":
            try:
                read_safetensors_header(path)
            except CorruptFileError:
                _evict(path)
                raise
    try:
        download_file(repo_id, CARD_NAME, revision, local_files_only, cache_dir)
    except (ModelFileNotFoundError, OfflineError):
        pass  # a card is welcome but not needed to load
    return paths[0].parent


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors header and check the file is as long as the header says."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError(path.name, "shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise CorruptFileError(path.name, f"header claims {n} bytes but the file has {size - 8} after it")
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            raise CorruptFileError(path.name, "header is not valid JSON") from err
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise CorruptFileError(path.name, f"holds {size} bytes, its header describes {8 + n + end}")
    return header


def push_model(
    model: nn.Module,
    repo_id: str,
    card: Any = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload tokenzoo model",
    token: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the model folder; returns the commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_model_folder(model, Path(tmp), card=card)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return info.oid
