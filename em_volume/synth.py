"""Synthetic EM-like volumes with neuron labels (no EM data set can be downloaded here).

A volume is built in four steps, all from one numpy ``Generator`` seed:
1. Cells: a 3-D Voronoi partition of seeds placed in physical space where z is stretched by the
   anisotropy (EM sections are ~5x thicker than the pixel size), so cells are elongated along z like
   neurites crossing sections; the in-plane coordinates are warped by a smooth random field so
   boundaries curve.
2. Membranes: voxels whose in-plane neighbour belongs to another cell (1-2 px thick).
3. Rendering: per-cell grey level and low-frequency texture, dark membranes, a few dark organelle blobs,
   anisotropic blur, intensity drift across sections, Gaussian noise.
4. Artefacts (optional): missing sections (flat grey) and misaligned sections (shifted in-plane).

Returns ``raw`` (D, H, W) float32 in [0, 1] and ``labels`` (D, H, W) int64 cell ids >= 1 (membranes are
not cut out of the labels; :func:`em_volume.segment.widen_border` does that for training, as upstream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, shift
from scipy.spatial import cKDTree

from zoo.errors import InputError


@dataclass(frozen=True)
class SynthConfig:
    shape: tuple[int, int, int] = (32, 160, 160)  # (D, H, W)
    cell_diameter: float = 22.0  # in-plane pixels
    anisotropy: float = 5.0  # z section thickness / pixel size
    z_elongation: float = 3.0  # cells are this much longer along z (physical) than across
    warp: float = 4.0  # pixels of in-plane boundary warping
    membrane_width: int = 1
    noise: float = 0.06
    blur: tuple[float, float, float] = (0.3, 1.0, 1.0)
    drift: float = 0.06  # per-section contrast drift (relative)
    missing_section_prob: float = 0.0
    misaligned_section_prob: float = 0.0


def make_volume(seed: int, config: SynthConfig = SynthConfig()) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic volume: (raw float32 in [0, 1], labels int64 >= 1), both (D, H, W)."""
    d, h, w = config.shape
    if min(config.shape) <= 0:
        raise InputError(f"SynthConfig.shape must be positive, got {config.shape}")
    rng = np.random.default_rng(seed)
    # 1. anisotropic Voronoi cells: physical z = z * anisotropy / z_elongation
    z_scale = config.anisotropy / config.z_elongation
    n_cells = max(2, int(h * w * d * z_scale / (config.cell_diameter**3 * 0.5)))
    seeds = rng.uniform(0, 1, (n_cells, 3)) * np.array([d * z_scale, h, w])
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    warp_y = gaussian_filter(rng.standard_normal((d, h, w)), sigma=(2, 8, 8))
    warp_x = gaussian_filter(rng.standard_normal((d, h, w)), sigma=(2, 8, 8))
    warp_y *= config.warp / (warp_y.std() + 1e-8)
    warp_x *= config.warp / (warp_x.std() + 1e-8)
    points = np.stack([zz * z_scale, yy + warp_y, xx + warp_x], axis=-1).reshape(-1, 3)
    _, nearest = cKDTree(seeds).query(points, workers=1)
    labels = (nearest.reshape(d, h, w) + 1).astype(np.int64)
    # 2. membranes: an in-plane neighbour with another label
    membrane = np.zeros(labels.shape, dtype=bool)
    membrane[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    membrane[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
    for _ in range(config.membrane_width - 1):
        grown = membrane.copy()
        grown[:, 1:] |= membrane[:, :-1]
        grown[:, :, 1:] |= membrane[:, :, :-1]
        membrane = grown
    # 3. rendering
    cell_grey = rng.uniform(0.55, 0.85, n_cells + 1)
    raw = cell_grey[labels]
    raw += 0.08 * gaussian_filter(rng.standard_normal((d, h, w)), sigma=(1, 3, 3)) / 0.1
    n_blobs = max(1, n_cells // 3)
    centers = rng.uniform(0, 1, (n_blobs, 3)) * np.array([d, h, w])
    radii = rng.uniform(2, 5, n_blobs)
    for c, r in zip(centers, radii):
        inside = ((zz - c[0]) * config.anisotropy / 3) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r**2
        raw[inside] = 0.35
    raw[membrane] = rng.uniform(0.08, 0.2)
    raw = gaussian_filter(raw, sigma=config.blur)
    raw *= 1 + config.drift * np.cumsum(rng.standard_normal(d))[:, None, None] / np.sqrt(d)
    raw += config.noise * rng.standard_normal(raw.shape)
    # 4. artefacts
    for z in range(d):
        if rng.random() < config.misaligned_section_prob:
            raw[z] = shift(raw[z], rng.integers(-4, 5, 2), mode="nearest", order=0)
        if rng.random() < config.missing_section_prob:
            raw[z] = raw.mean()
    raw = np.clip(raw, 0, 1).astype(np.float32)
    return raw, labels


def make_dataset(seeds, config: SynthConfig = SynthConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Stack of volumes: raw (V, D, H, W) float32 and labels (V, D, H, W) int64."""
    pairs = [make_volume(int(s), config) for s in seeds]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_sample_files(folder, shape: tuple[int, int, int] = (16, 32, 80), seeds=(999, 998)) -> list:
    """Synthetic volumes with their labels as ``.npz`` files (``volume`` float32 in [0, 1], ``labels`` int32).

    ``em_volume/samples/`` was written by ``python -c "from em_volume.synth import write_sample_files;
    write_sample_files('em_volume/samples')"`` (seeds outside the tiny model's training and evaluation seeds);
    ``TokenUnify.sample_inputs`` returns these paths when the model's crop is their shape.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        raw, labels = make_volume(seed, SynthConfig(shape=tuple(shape)))
        path = folder / f"synthetic_seed{seed}.npz"
        np.savez_compressed(path, volume=raw.astype(np.float32), labels=labels.astype(np.int32))
        paths.append(path)
    return paths
