"""Offline images for the tiny FlexTok: procedural scenes plus augmented scikit-image samples.

Everything is generated from a seed, so the training set, the held-out set and the bundled demo
images can be rebuilt exactly. Images come back as (N, 3, S, S) float32 in [-1, 1].
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw

# scikit-image ships these with the package (no download); the held-out ones never enter training.
SKIMAGE_TRAIN = ("astronaut", "brick", "camera", "cat", "coins", "colorwheel", "grass", "gravel", "hubble_deep_field")
SKIMAGE_TRAIN += ("immunohistochemistry", "moon", "page", "rocket", "text", "checkerboard", "clock")
SKIMAGE_HELD_OUT = ("coffee", "chelsea", "retina")


def _rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def procedural_scene(rng: np.random.Generator, size: int) -> Image.Image:
    """A background (flat, gradient or stripes) with 1-4 shapes of random colours, drawn at 4x then
    downsampled so edges are antialiased."""
    big = size * 4
    kind = rng.integers(0, 3)
    if kind == 0:
        image = Image.new("RGB", (big, big), _rgb(rng))
    else:
        a, b = np.array(_rgb(rng), np.float32), np.array(_rgb(rng), np.float32)
        ramp = np.linspace(0, 1, big, dtype=np.float32)
        if kind == 2:  # stripes at a random frequency and angle
            freq, angle = rng.uniform(2, 8), rng.uniform(0, np.pi)
            yy, xx = np.mgrid[0:big, 0:big] / big
            ramp2d = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        else:
            ramp2d = ramp[None, :] if rng.random() < 0.5 else ramp[:, None]
            ramp2d = np.broadcast_to(ramp2d, (big, big))
        pixels = a + (b - a) * ramp2d[..., None]
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0.1, 0.9, 2) * big
        r = rng.uniform(0.08, 0.35) * big
        shape = rng.integers(0, 3)
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == 0:
            draw.ellipse(box, fill=_rgb(rng))
        elif shape == 1:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r * rng.uniform(0.4, 1)], fill=_rgb(rng))
        else:
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])
            draw.polygon([(cx + r * np.cos(t), cy + r * np.sin(t)) for t in angles], fill=_rgb(rng))
    return image.resize((size, size), Image.BILINEAR)


@functools.lru_cache(maxsize=32)
def skimage_rgb(name: str) -> np.ndarray:
    """A scikit-image sample as HxWx3 uint8 (grey repeated, alpha dropped)."""
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def skimage_crop(name: str, rng: np.random.Generator, size: int) -> Image.Image:
    """A random square crop (25-100% of the shorter side) of a scikit-image sample, maybe flipped."""
    array = skimage_rgb(name)
    h, w = array.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    image = Image.fromarray(np.ascontiguousarray(array[y : y + side, x : x + side]))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image.resize((size, size), Image.BILINEAR)


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arrays = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (N, S, S, 3)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1


def make_images(n: int, size: int, seed: int, held_out: bool = False, skimage_share: float = 0.4) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: procedural scenes and scikit-image crops (train or held-out sources)."""
    rng = np.random.default_rng(seed)
    names = SKIMAGE_HELD_OUT if held_out else SKIMAGE_TRAIN
    images = []
    for _ in range(n):
        if rng.random() < skimage_share:
            images.append(skimage_crop(names[int(rng.integers(0, len(names)))], rng, size))
        else:
            images.append(procedural_scene(rng, size))
    return to_tensor(images)


def write_samples(folder, size: int = 32, seed: int = 2024) -> list:
    """The demo's bundled images: two procedural scenes and two crops of held-out scikit-image samples.

    python -c "from vision.flextok.data import write_samples; write_samples('vision/samples')"
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = {
        "scene_a.png": procedural_scene(rng, size),
        "scene_b.png": procedural_scene(rng, size),
        "coffee.png": skimage_crop("coffee", rng, size),
        "chelsea.png": skimage_crop("chelsea", rng, size),
    }
    for name, image in images.items():
        image.save(folder / name)
    return sorted(folder / name for name in images)
