"""Upstream pickle checkpoints, for converters only: ``torch.load(weights_only=True)`` plus exactly the extra
globals a release needs.

Training scripts pickle more than tensors: MotionBERT's ``best_epoch.bin`` holds ``min_loss`` as a numpy
float64 (``numpy._core.multiarray.scalar`` and ``numpy.dtype``; files written under numpy 1.x spell it
``numpy.core.multiarray.scalar``), TokenUnify's ``checkpoint-*.pth`` holds its ``argparse.Namespace``. A
converter names the extras its releases need; anything else is refused as "not a weights-only file"
(:class:`~zoo.errors.NotWeightsOnlyError`, naming the globals), and a file torch cannot read at all is
corrupt (:class:`~zoo.errors.CorruptFileError`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from zoo.errors import CorruptFileError, NotWeightsOnlyError

# (object, the name a pickle may call it by). numpy 2 moved numpy.core to numpy._core; pickles keep the
# spelling of the numpy that wrote them, so both names map to the one function.
NUMPY_SCALARS = "numpy scalars"
ARGPARSE_NAMESPACE = "argparse.Namespace"


def extra_globals(names: tuple[str, ...]) -> list[Any]:
    """The ``torch.serialization.safe_globals`` entries for the named groups of extras."""
    out: list[Any] = []
    for name in names:
        if name == NUMPY_SCALARS:
            import numpy as np

            scalar = np._core.multiarray.scalar
            out += [
                (scalar, "numpy._core.multiarray.scalar"),
                (scalar, "numpy.core.multiarray.scalar"),
                np.dtype,
                np.dtypes.Float64DType,
                np.dtypes.Float32DType,
                np.dtypes.Int64DType,
            ]
        elif name == ARGPARSE_NAMESPACE:
            import argparse

            out.append(argparse.Namespace)
        else:
            raise ValueError(f"unknown group of pickle globals {name!r}")
    return out


def _global_names(entries: list[Any]) -> list[str]:
    return [e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}" for e in entries]


def _needed_globals(path: Path, err: Exception) -> list[str]:
    """The globals a refused pickle asks for: every one where torch can list them (zip files), else the
    first one its error names (legacy files)."""
    import torch

    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # the listing only sharpens the message
            pass
    return re.findall(r"GLOBAL (\S+) was not an allowed global", str(err))


def load_weights_only(path: str | Path, extras: tuple[str, ...] = (), source: str | None = None) -> Any:
    """Unpickle ``path`` with ``torch.load(weights_only=True)`` on the CPU, allowing only ``extras``
    (``NUMPY_SCALARS``, ``ARGPARSE_NAMESPACE``) beyond tensors and containers."""
    import pickle

    import torch

    path = Path(path)
    allowed = extra_globals(extras)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needed = [g for g in _needed_globals(path, err) if g not in _global_names(allowed)]
        if needed:
            raise NotWeightsOnlyError(path.name, needed, _global_names(allowed), source=source) from err
        detail = re.search(r"WeightsUnpickler error: (.+?)\n\n", str(err), re.S)
        reason = detail[1].strip() if detail else type(err).__name__
        raise CorruptFileError(path.name, f"torch.load could not unpickle it ({reason})", source=source) from err
    except Exception as err:  # zip, EOF and storage errors: the bytes are not a torch checkpoint
        raise CorruptFileError(
            path.name, f"torch.load could not read it ({type(err).__name__}: {err})", source=source
        ) from err
