"""Metrics for any discrete tokenizer: how much of the codebook is used, and how many bits a unit costs.

Shape letters: B batch, N token positions, K codebook size.

Every function takes ids (B, N) int64 and an optional mask (B, N) bool (True = a real token), or a
``zoo.Tokens`` holding both, so padded batches count only their real tokens.

Invariants (tests/test_metrics.py checks each):
- ``codebook_usage`` is in (0, 1]; it is 1 exactly when every one of the K ids occurs.
- ``codebook_perplexity`` = exp(entropy of the empirical id distribution), in [1, K]: 1 when one id is
  used throughout, K when all K ids occur equally often. It is the "effective number of codes".
- ``bits_per_unit`` = tokens * log2(K) / units: the cost of storing the ids with a fixed-width code,
  per byte of text, pixel, second of audio, frame of pose, or voxel of volume. Entropy coding could do
  better; this is the number every family reports the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo.api import Tokens
from zoo.errors import InputError

UNITS = ("byte", "character", "pixel", "second", "frame", "voxel")


def _ids_and_mask(ids: Tensor | Tokens, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if isinstance(ids, Tokens):
        if ids.ids is None:
            raise InputError("codebook metrics need discrete Tokens.ids; these Tokens hold only embeddings")
        ids, mask = ids.ids, ids.mask if mask is None else mask
    if not isinstance(ids, Tensor):
        raise InputError(f"ids must be a torch.Tensor or zoo.Tokens, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise InputError(f"ids must be an integer tensor, got {ids.dtype}")
    if mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    if mask.shape != ids.shape or mask.dtype != torch.bool:
        raise InputError(
            f"mask must be bool of the ids' shape {tuple(ids.shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return ids, mask


def _check_codebook_size(codebook_size: int) -> int:
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
        raise InputError(f"codebook_size must be a positive int, got {codebook_size!r}")
    return codebook_size


def code_counts(ids: Tensor | Tokens, codebook_size: int, mask: Tensor | None = None) -> Tensor:
    """(K,) int64 number of times each id occurs among the real (masked-in) positions."""
    codebook_size = _check_codebook_size(codebook_size)
    ids, mask = _ids_and_mask(ids, mask)
    valid = ids[mask]
    if valid.numel() == 0:
        raise InputError("no valid tokens: the mask is all False (or the batch is empty)")
    if valid.min() < 0 or valid.max() >= codebook_size:
        raise InputError(
            f"ids must lie in [0, {codebook_size}), got [{int(valid.min())}, {int(valid.max())}] among valid positions"
        )
    return torch.bincount(valid.reshape(-1).to(torch.int64), minlength=codebook_size)


def codebook_usage(ids: Tensor | Tokens, codebook_size: int, mask: Tensor | None = None) -> float:
    """Fraction of the K codes that occur at least once among the valid positions, in (0, 1]."""
    counts = code_counts(ids, codebook_size, mask)
    return float((counts > 0).sum()) / codebook_size


def codebook_perplexity(ids: Tensor | Tokens, codebook_size: int, mask: Tensor | None = None) -> float:
    """exp(entropy) of the empirical id distribution: the effective number of codes, in [1, K]."""
    counts = code_counts(ids, codebook_size, mask).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def count_tokens(tokens: Tokens | Tensor | int) -> int:
    """Real tokens in a batch: the mask's True count for Tokens, the element count for a tensor."""
    if isinstance(tokens, Tokens):
        return int(tokens.mask.sum())
    if isinstance(tokens, Tensor):
        return tokens.numel()
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise InputError(f"a token count must be a non-negative int, Tensor or Tokens, got {tokens!r}")
    return tokens


def bits_per_unit(tokens: Tokens | Tensor | int, codebook_size: int, units: float, unit: str = "unit") -> float:
    """tokens * log2(codebook_size) / units, where ``units`` is the size of the input in ``unit``s.

    ``tokens`` is a Tokens batch (its real tokens are counted), an ids tensor, or a count; ``units`` is
    the input size in the same batch (bytes of text, pixels, seconds, frames, voxels). For a
    tokenizer whose ids come from several codebooks (FSQ levels), pass the product of their sizes.
    """
    codebook_size = _check_codebook_size(codebook_size)
    if not isinstance(units, (int, float)) or isinstance(units, bool) or not math.isfinite(units) or units <= 0:
        raise InputError(f"the input size in {unit}s must be a positive number, got {units!r}")
    return count_tokens(tokens) * math.log2(codebook_size) / units


def bits_per_byte(tokens: Tokens | Tensor | int, codebook_size: int, num_bytes: int) -> float:
    """Bits per byte of UTF-8 text (or any byte stream)."""
    return bits_per_unit(tokens, codebook_size, num_bytes, unit="byte")


def bits_per_character(tokens: Tokens | Tensor | int, codebook_size: int, num_characters: int) -> float:
    """Bits per Unicode code point of text."""
    return bits_per_unit(tokens, codebook_size, num_characters, unit="character")


def bits_per_pixel(tokens: Tokens | Tensor | int, codebook_size: int, num_pixels: int) -> float:
    """Bits per pixel (H * W per image summed over the batch; channels are not counted)."""
    return bits_per_unit(tokens, codebook_size, num_pixels, unit="pixel")


def bits_per_second(tokens: Tokens | Tensor | int, codebook_size: int, seconds: float) -> float:
    """Bits per second of audio (the bitrate)."""
    return bits_per_unit(tokens, codebook_size, seconds, unit="second")


def bits_per_frame(tokens: Tokens | Tensor | int, codebook_size: int, num_frames: int) -> float:
    """Bits per frame of a pose (or video) sequence."""
    return bits_per_unit(tokens, codebook_size, num_frames, unit="frame")


def bits_per_voxel(tokens: Tokens | Tensor | int, codebook_size: int, num_voxels: int) -> float:
    """Bits per voxel of a volume (D * H * W summed over the batch)."""
    return bits_per_unit(tokens, codebook_size, num_voxels, unit="voxel")
