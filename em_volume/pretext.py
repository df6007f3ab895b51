"""TokenUnify's pre-training tasks on raw voxel tokens (paper arXiv 2405.16847, "mixture token prediction").

A volume is cut into non-overlapping tokens of 4 x 16 x 16 voxels (z, y, x), numbered z-major with x
fastest: token p = iz * (ny * nx) + iy * nx + ix. Tokens are raw voxels (no embedding, no codebook)
and targets are voxels, compared with MSE after a sigmoid.

- Random token prediction (MAE-like): a fraction of the tokens is replaced by zeros or N(0, 1) noise;
  the network reconstructs the whole clean volume.
- Next-token prediction: a prefix of k tokens is kept and the rest blanked; a small head on the
  network's logits predicts token k.
- Next-all prediction: same prefix input; the network predicts the whole clean volume (all future
  tokens at once).

Two implementations of the masking live here: torch versions with a ``torch.Generator`` (used for
training) and numpy versions that replay upstream's data providers draw for draw on the legacy
``np.random`` stream (used to check against the parity fixtures).

Shape letters: B batch, D H W volume size, N tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import InputError

TOKEN_SIZE = (4, 16, 16)
TASKS = ("random", "next_token", "next_all")


def token_grid(shape, token_size=TOKEN_SIZE) -> tuple[int, int, int]:
    """Tokens along (z, y, x) for a (D, H, W) volume; each side must divide by the token size."""
    shape = tuple(int(s) for s in shape[-3:])
    if any(s % t for s, t in zip(shape, token_size)):
        raise InputError(f"volume size {shape} is not divisible by the token size {tuple(token_size)} (z, y, x)")
    return tuple(s // t for s, t in zip(shape, token_size))


def patchify(volume: Tensor, token_size=TOKEN_SIZE) -> Tensor:
    """(B, 1, D, H, W) -> (B, N, tz, ty, tx) in z-major token order."""
    b = volume.shape[0]
    gz, gy, gx = token_grid(volume.shape, token_size)
    tz, ty, tx = token_size
    v = volume.reshape(b, gz, tz, gy, ty, gx, tx).permute(0, 1, 3, 5, 2, 4, 6)  # (B, gz, gy, gx, tz, ty, tx)
    return v.reshape(b, gz * gy * gx, tz, ty, tx)


def unpatchify(tokens: Tensor, shape, token_size=TOKEN_SIZE) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, tz, ty, tx) -> (B, 1, D, H, W)."""
    b = tokens.shape[0]
    gz, gy, gx = token_grid(shape, token_size)
    tz, ty, tx = token_size
    v = tokens.reshape(b, gz, gy, gx, tz, ty, tx).permute(0, 1, 4, 2, 5, 3, 6)
    return v.reshape(b, 1, gz * tz, gy * ty, gx * tx)


def _fill(shape, fill: str, like: Tensor, generator: torch.Generator | None) -> Tensor:
    if fill == "zero":
        return like.new_zeros(shape)
    if fill == "noise":
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    raise InputError(f"fill={fill!r}; choose 'zero' or 'noise'")


# ---- torch masking (training) ---------------------------------------------------------------------
def random_token_mask(volume: Tensor, ratio: float | None, fill: str = "noise", generator=None, token_size=TOKEN_SIZE):
    """Blank ``int(N * ratio)`` distinct tokens per sample. ``ratio=None`` draws it from U(0.2, 0.8) per
    sample (upstream's rule for any ratio other than 0.4). Returns (masked volume, mask (B, N) bool)."""
    tokens = patchify(volume, token_size)
    b, n = tokens.shape[:2]
    device = volume.device
    if ratio is None:
        ratios = torch.rand(b, generator=generator, device=device) * 0.6 + 0.2
    else:
        ratios = torch.full((b,), float(ratio), device=device)
    counts = (ratios * n).long()  # int() truncation as upstream
    ranks = torch.rand(b, n, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    mask = ranks < counts[:, None]  # a uniformly random subset of size counts[b]
    filler = _fill(tokens.shape, fill, tokens, generator)
    tokens = torch.where(mask[:, :, None, None, None], filler, tokens)
    return unpatchify(tokens, volume.shape, token_size), mask


def next_token_prefix(
    volume: Tensor, k: Tensor | None = None, fill: str = "noise", generator=None, token_size=TOKEN_SIZE
):
    """Keep tokens [0, k) and blank [k, N); k ~ U{1..N-1} per sample unless given.
    Returns (masked volume, next token (B, 1, tz, ty, tx) = clean token k, k (B,))."""
    tokens = patchify(volume, token_size)
    b, n = tokens.shape[:2]
    if n < 2:
        raise InputError(f"next-token prediction needs at least 2 tokens per volume, got {n}")
    if k is None:
        k = torch.randint(1, n, (b,), generator=generator, device=volume.device)
    target = tokens[torch.arange(b, device=volume.device), k].unsqueeze(1)
    blank = torch.arange(n, device=volume.device)[None, :] >= k[:, None]
    filler = _fill(tokens.shape, fill, tokens, generator)
    tokens = torch.where(blank[:, :, None, None, None], filler, tokens)
    return unpatchify(tokens, volume.shape, token_size), target, k


# ---- numpy replays of upstream's data providers (parity) -------------------------------------------
def minmax_scale(volume: np.ndarray) -> np.ndarray:
    """Upstream's scaler: (v - min) / (max - min + 1e-8) in float64, as float32."""
    v = np.asarray(volume, dtype=np.float64)
    return ((v - v.min()) / (v.max() - v.min() + 1e-8)).astype(np.float32)


def _numpy_tokens(crop: np.ndarray, token_size=TOKEN_SIZE) -> tuple[int, int, int]:
    return token_grid(crop.shape, token_size)


def _token_slices(p: int, grid, token_size=TOKEN_SIZE):
    gz, gy, gx = grid
    iz, iy, ix = p // (gy * gx), (p // gx) % gy, p % gx
    tz, ty, tx = token_size
    return slice(iz * tz, (iz + 1) * tz), slice(iy * ty, (iy + 1) * ty), slice(ix * tx, (ix + 1) * tx)


def cover_tokens_numpy(crop: np.ndarray, mask_ratio: float, fill_noise: bool, rng: np.random.RandomState):
    """Random-token masking as upstream draws it: ratio 0.4 kept, any other ratio redrawn as U(0.2, 0.8);
    ``rng.choice(N, int(N * ratio), replace=False)``; noise is one N(0, 1) token per covered index, in
    the order drawn. Returns (masked crop, indices, ratio used)."""
    grid = _numpy_tokens(crop)
    n = int(np.prod(grid))
    ratio = mask_ratio if mask_ratio == 0.4 else rng.uniform(0.2, 0.8)
    indices = rng.choice(n, int(n * ratio), replace=False)
    out = crop.copy()
    for p in indices:
        out[_token_slices(int(p), grid)] = rng.normal(0, 1, TOKEN_SIZE) if fill_noise else 0
    return out, indices.astype(np.int64), float(ratio)


def prefix_tokens_numpy(crop: np.ndarray, fill_noise: bool, rng: np.random.RandomState):
    """Next-token prefix as upstream draws it: ``k = rng.randint(1, N)``; tokens [k, N) become zero or one
    ``rng.normal(0, 1, (N - k, 4, 16, 16))`` block. Returns (masked crop, next token, k)."""
    grid = _numpy_tokens(crop)
    n = int(np.prod(grid))
    k = int(rng.randint(1, n))
    target = crop[_token_slices(k, grid)].copy()
    noise = rng.normal(0, 1, (n - k, *TOKEN_SIZE)) if fill_noise else None
    out = crop.copy()
    for j, p in enumerate(range(k, n)):
        out[_token_slices(p, grid)] = noise[j] if fill_noise else 0
    return out, target, k


# ---- losses ---------------------------------------------------------------------------------------
def reconstruction_loss(prediction: Tensor, clean: Tensor) -> Tensor:
    """MSE over every voxel (masked or not), as upstream's random-token and next-all losses."""
    return F.mse_loss(prediction, clean)


def task_for_step(step: int, block: int = 1) -> str:
    """The mixture schedule: random -> next-token -> next-all, ``block`` steps each, round and round."""
    return TASKS[(step // max(1, block)) % len(TASKS)]
