"""Image reconstruction metrics: PSNR and SSIM over batches (B, C, H, W).

Both take a ``data_range`` (the span of valid values: 2.0 for images in [-1, 1], 1.0 for [0, 1],
255 for bytes) and return one value per image (B,), float64, so callers average as they see fit.
SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
"valid" filtering (no padding), averaged over channels; this matches skimage's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import InputError


def _check_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    for name, x in (("prediction", a), ("target", b)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise InputError(f"{name} must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if a.shape != b.shape:
        raise InputError(f"prediction {tuple(a.shape)} and target {tuple(b.shape)} differ in shape")
    return a.double(), b.double()


def psnr(prediction: Tensor, target: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE); inf for identical images."""
    a, b = _check_pair(prediction, target)
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(prediction: Tensor, target: Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity per image (B,); images must be at least ``window`` pixels a side."""
    a, b = _check_pair(prediction, target)
    _, c, h, w = a.shape
    if h < window or w < window:
        raise InputError(f"SSIM with an {window}x{window} window needs images at least that large, got {h}x{w}")
    kernel = _gaussian_window(window, sigma, a.device, a.dtype).expand(c, 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)
