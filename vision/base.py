"""The image modality's base class: what every image tokenizer in the zoo shares.

Shape letters: B batch, C channels (3), H W pixels.

``ImageTokenizer`` reads images the way the released tokenizers were trained on them (RGB, shorter side
resized to ``config.image_size`` with antialiased bilinear filtering, centre crop, values in [-1, 1]),
checks image batches, turns decoded batches back into PIL images, and gives the tools' hooks their
image defaults: the bundled sample pictures, reconstructions as tensors in [-1, 1], and their PSNR
against the preprocessed input. A family subclass needs ``config.image_size`` and its encode/decode.

Beside it live the image helpers the vision families share instead of importing each other: reading
one raw image, PIL conversion, per-sample noise generators and picture grids.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from zoo.api import Tokens, ZooModel, check_float_tensor, check_input_file
from zoo.errors import InputError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def resize_center_crop(image, size: int) -> Tensor:
    """PIL RGB -> (3, size, size) in [-1, 1]: shorter side to ``size`` (bilinear, antialias), centre crop."""
    import torchvision.transforms.functional as TF

    image = TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    image = TF.center_crop(image, [size, size])
    return TF.to_tensor(image) * 2 - 1


def read_image(item: Any):
    """One raw image -> PIL RGB.

    Accepts a path, a PIL image or a uint8 numpy array HxW, HxWx1, HxWx3 or HxWx4. Grayscale is
    repeated over the three channels and an alpha channel is dropped, as PIL's ``convert("RGB")``
    does (no compositing onto a background); any other array shape or dtype is refused.
    """
    import numpy as np
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        path = check_input_file(item, "image file")
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


def check_image_batch(images: Tensor, multiple: tuple[int, int]) -> Tensor:
    """Raise InputError unless ``images`` is a finite (B, 3, H, W) float batch in [-1, 1] whose H and W
    are positive multiples of ``multiple``."""
    check_float_tensor(images, "images", dims=4)
    _, c, h, w = images.shape
    if c != 3:
        raise InputError(f"images must have 3 channels (B, 3, H, W), got {c} (shape {tuple(images.shape)})")
    mh, mw = multiple
    if h < mh or w < mw or h % mh or w % mw:
        raise InputError(f"image size {h}x{w} must be a positive multiple of {mh}x{mw}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.001 or hi > 1.001:
        raise InputError(
            f"images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] (use preprocess() for 0..255 data)"
        )
    return images


class ImageTokenizer(ZooModel):
    """Base of the image tokenizers: preprocessing, postprocessing and the image defaults of the hooks."""

    modality: ClassVar[str] = "image"

    def preprocess(self, raw: Any) -> Tensor:
        """Paths, PIL images or HWC uint8 arrays (one or a sequence) -> (B, 3, S, S) in [-1, 1], S =
        ``config.image_size``. A tensor passes through unchanged (it must already be a batch)."""
        if isinstance(raw, Tensor):
            return raw
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items:
            raise InputError("no images given")
        return torch.stack([resize_center_crop(read_image(item), self.config.image_size) for item in items])

    def postprocess(self, images: Tensor) -> list:
        """(B, 3, H, W) in [-1, 1] -> list of PIL images."""
        return to_pil(images)

    def sample_inputs(self) -> list[str]:
        """The bundled sample pictures (paths): two photographs and two synthetic scenes."""
        return [str(p) for p in sorted(SAMPLES_DIR.glob("*.png"))]

    def reconstruct(self, batch: Any, tokens: Tokens) -> list[Tensor]:
        """One decoded image per item, (3, H, W) in about [-1, 1] (``postprocess`` makes PIL images)."""
        return list(self.decode(tokens))

    def reconstruction_quality(self, items: list[Any], reconstructions: list[Any]) -> dict[str, Any] | None:
        """PSNR of the reconstructions against the preprocessed inputs (``collate(items)``), in [-1, 1]."""
        from zoo.metrics.image import psnr

        x = self.collate(items)
        if not isinstance(x, Tensor) or not all(isinstance(r, Tensor) for r in reconstructions):
            return None
        y = torch.stack([r.detach().float().cpu() for r in reconstructions])
        if tuple(y.shape) != tuple(x.shape):
            return None
        values = psnr(y.clamp(-1, 1), x.float().cpu(), data_range=2.0)
        return {
            "name": "PSNR dB",
            "value": float(values.mean()),
            "protocol": "PSNR of decode(encode(x)) vs the preprocessed input x (range [-1, 1], data_range 2), "
            "mean over images, default decode settings",
        }
