"""Image helpers the vision families share: reading one raw image, drawing a picture grid.

Kept minimal on purpose (the image base class of the house contract will grow here). Families use
these instead of importing each other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.errors import InputError


def open_rgb(item: Any):
    """One raw image -> PIL RGB.

    Accepts a path, a PIL image or a uint8 numpy array HxW, HxWx1, HxWx3 or HxWx4. Grayscale is
    repeated over the three channels and an alpha channel is dropped, as PIL's ``convert("RGB")``
    does (no compositing onto a background); any other array shape or dtype is refused.
    """
    import numpy as np
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except Exception as err:  # PIL raises several error types for unreadable files
            raise InputError(f"cannot read {path} as an image ({err})") from err
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise InputError(f"numpy images must be uint8, got {item.dtype} (scale to 0..255 first)")
        if item.ndim == 3 and item.shape[2] == 1:
            item = item[..., 0]
        if not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
            raise InputError(f"numpy images must be HxW, HxWx1, HxWx3 or HxWx4, got shape {item.shape}")
        if min(item.shape[:2]) < 1:
            raise InputError(f"numpy image is empty (shape {item.shape})")
        return Image.fromarray(np.ascontiguousarray(item)).convert("RGB")
    raise InputError(f"cannot read an image from {type(item).__name__} (give a path, a PIL image or a uint8 array)")


def to_pil(images: Tensor) -> list:
    """(B, 3, H, W) in [-1, 1] -> list of PIL RGB images (clamped, rounded to 8 bits)."""
    from PIL import Image

    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]


def content_generator(seed: int, content: Tensor) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the bytes of ``content`` (one sample's ids): the sample
    draws the same noise whatever batch it sits in, and on every device."""
    digest = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True) + content.cpu().numpy().tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def picture_grid(columns: list[Tensor], scale: int = 4, pad: int = 2):
    """Columns of images (each (B, 3, H, W) in [-1, 1], one per column) -> one PIL picture, a row per image."""
    from PIL import Image

    stacked = torch.stack([c.detach().float().cpu() for c in columns], dim=1)  # (B, columns, 3, H, W)
    b, c, _, h, w = stacked.shape
    canvas = torch.ones(3, b * (h + pad) + pad, c * (w + pad) + pad)
    for i in range(b):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y : y + h, x : x + w] = (stacked[i, j].clamp(-1, 1) + 1) / 2
    pixels = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
