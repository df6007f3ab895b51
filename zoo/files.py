"""Leaf helpers of the core: file names, the modality names, where bundled models live, atomic writes, hashes.

This module imports nothing from ``zoo`` (nor torch), so every other module of the core may use it
without an import circle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# A model folder (and a Hub repo) holds these three files; families may add their own (tokenizer files).
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
# Pickle checkpoints are refused by name and by their first bytes, never opened outside convert.py.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# First bytes of torch.save files: a zip archive (torch >= 1.6) or a raw pickle (protocol 2..5).
PICKLE_MAGICS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

MODALITIES = ("text", "image", "audio", "pose", "em_volume")


def cards_dir() -> Path:
    """Where the bundled model folders live: $TOKENZOO_CARDS_DIR, else ``hub_cards/`` beside the packages.

    In a source checkout that is the repository's ``hub_cards/``; an installed wheel ships it as
    ``<site-packages>/hub_cards`` (see pyproject's package data), so both resolve the same way.
    """
    env = os.environ.get("TOKENZOO_CARDS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "hub_cards"


def _process_umask() -> int:
    mask = os.umask(0o022)  # os.umask can only be read by setting it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or an error in ``write`` leaves the old file (or none) and no temporary file behind.
    """
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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob id of a file (what the Hub's ETag is for files not stored in LFS)."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
