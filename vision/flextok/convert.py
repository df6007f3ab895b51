"""Upstream FlexTok checkpoints -> tokenzoo model folders (``tokenzoo convert flextok SRC --out DIR``).

Upstream (apple/ml-flextok) describes a model as a nested Hydra config of ``_target_`` dicts; we never
instantiate anything from it. ``vision.flextok.upstream`` reads and checks it against an allowlist and
maps the weight names; ``FlexTok.from_upstream`` builds our model from it; this module writes the
result as a zoo folder with its card.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vision.flextok.config import LICENSE_NOTE
from vision.flextok.model import FlexTok
from vision.flextok.upstream import parse_upstream_config, upstream_config_from_folder
from zoo.errors import ConfigError

__all__ = ["convert_checkpoint", "load_upstream", "load_upstream_folder", "parse_upstream_config"]

# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1


def load_upstream(
    weights: Path, config: Mapping[str, Any] | None = None, source: str | None = None, revision: str | None = None
) -> FlexTok:
    """Our model from an upstream safetensors file (config from ``config`` or the file's metadata)."""
    return FlexTok.from_upstream(weights, config, source=source, revision=revision)


def load_upstream_folder(folder: Path, source: str | None = None, revision: str | None = None) -> FlexTok:
    """Our model from an upstream Hub folder (config.json + model.safetensors)."""
    folder = Path(folder)
    return load_upstream(folder / "model.safetensors", upstream_config_from_folder(folder), source, revision)


def convert_checkpoint(arch: str, src: Path, out: Path, **options: Any) -> Path:
    """Upstream folder (config.json + model.safetensors) or bare safetensors file -> zoo model folder.

    Options: ``name`` (card title), ``hub_repo``/``revision`` (recorded in the card).
    """
    from zoo.cards import make_card

    if arch != "flextok":
        raise ConfigError(f"vision.flextok.convert handles arch 'flextok', not {arch!r}")
    src = Path(src)
    model = load_upstream_folder(src) if src.is_dir() else load_upstream(src)
    name = options.get("name", src.stem if src.is_file() else src.name)
    card = make_card(
        name=name,
        arch="flextok",
        modality="image",
        license="apple-amlr",
        summary=f"FlexTok converted from an upstream checkpoint. {LICENSE_NOTE}",
        upstream_repo="apple/ml-flextok",
        hub_repo=options.get("hub_repo"),
        revision=options.get("revision"),
        weights=f"converted by vision/flextok/convert.py from {src.name}",
    )
    model.save_pretrained(out, card=card)
    return Path(out)
