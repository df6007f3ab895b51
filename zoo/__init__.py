"""tokenzoo: one registry and one contract over image, pose, speech, EM-volume and text tokenizers.

    import zoo
    zoo.list_models("*", modality="text")
    model = zoo.load("bpe-tiny")
    tokens = model.encode(["hello"])
    text = model.decode(tokens)

Importing ``zoo`` imports no model family: architectures load lazily, by name, when needed. Nor does it
import torch: the public names below resolve on first use (PEP 562), so a submodule that needs no torch
(``zoo.cli`` building its parser, ``zoo.files``, ``zoo.errors``) starts in milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.api import Tokens, ZooModel
    from zoo.errors import ZooError
    from zoo.registry import get_arch, list_archs, list_models, load, register_arch

# public name -> the submodule that defines it
_EXPORTS = {
    "Tokens": "zoo.api",
    "ZooModel": "zoo.api",
    "ZooError": "zoo.errors",
    "get_arch": "zoo.registry",
    "list_archs": "zoo.registry",
    "list_models": "zoo.registry",
    "load": "zoo.registry",
    "register_arch": "zoo.registry",
}

__all__ = ["Tokens", "ZooModel", "ZooError", "get_arch", "list_archs", "list_models", "load", "register_arch"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
