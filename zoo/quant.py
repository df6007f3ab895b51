"""Shared quantizers: VQ (nearest codeword by L2) and FSQ (finite scalar quantization).

Shape letters: ... any leading dims, D code width, K codebook size.

Both quantizers round or take an argmin, so both compute in float32 with autocast off: a bf16
distance or tanh would move ids that sit near a decision boundary. Results are cast back to the
input dtype. Gradients pass straight through the rounding (``x + (q - x).detach()``).

FSQ (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") bounds each of the
D dimensions to ``levels[i]`` values and reads the digits as a mixed-radix number whose first
dimension is the least significant digit. FlexTok uses levels [8,8,8,5,5,5] (64,000 ids) with a
bound slightly above the grid (1 + 1e-3); S3Tokenizer v2/v3 use [3]*8 (6,561 ids) with a bound of
0.999, which is ``bound_scale = 1 - 1e-3``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import ConfigError, InputError


def straight_through(x: Tensor, quantized: Tensor) -> Tensor:
    """Forward value ``quantized``; gradient of the identity with respect to ``x``.

    Without autograd the value is ``quantized`` itself, bit for bit (``x + (q - x)`` can round).
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return quantized
    return x + (quantized - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantization over ``len(levels)`` dimensions.

    Args:
        levels: number of values per dimension; the codebook size is their product.
        bound_scale: the tanh bound is ``(L - 1) * bound_scale / 2``. Values above 1 keep the outer
            grid points reachable (FlexTok); 0.999 keeps tanh strictly inside the grid (S3Tokenizer).

    Invariants: ``codes_to_ids(ids_to_codes(ids)) == ids`` for every id, and
    ``ids_to_codes(quantize(z)[1]) == quantize(z)[0]`` exactly.
    """

    def __init__(self, levels: Sequence[int], bound_scale: float = 1 + 1e-3):
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ConfigError(f"FSQ levels must be integers >= 2, got {levels}")
        self.levels_list = levels
        self.bound_scale = bound_scale
        self.codebook_size = math.prod(levels)
        # Derived from levels only, so non-persistent: a checkpoint can never contradict the config.
        level_tensor = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), dim=0)
        self.register_buffer("_levels", level_tensor, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels_list)

    def _half_width(self) -> Tensor:
        return (self._levels // 2).to(torch.float32)

    def bound(self, z: Tensor) -> Tensor:
        """Squash ``z`` into (-(L-1)/2 .. (L-1)/2) per dimension, shifted by 1/2 for even L."""
        levels = self._levels.to(torch.float32)
        half_l = (levels - 1) * self.bound_scale / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(..., D) floats -> (codes in [-1, 1] with straight-through gradient, ids (...,) int64)."""
        if z.shape[-1] != self.dim:
            raise InputError(f"FSQ over {self.dim} dims got last dimension {z.shape[-1]} (shape {tuple(z.shape)})")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z32 = z.float()
            rounded = torch.round(self.bound(z32))  # half to even, as torch.round and upstream do
            codes = straight_through(z32, rounded) / self._half_width()
            ids = self._digits_to_ids(rounded.detach().to(torch.int64) + self._levels // 2)
        return codes.to(z.dtype), ids

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize(z)

    def _digits_to_ids(self, digits: Tensor) -> Tensor:
        return (digits * self._basis).sum(dim=-1)

    def codes_to_ids(self, codes: Tensor) -> Tensor:
        """(..., D) codes on the grid -> (...,) int64 ids. Inverse of ``ids_to_codes``."""
        half = self._half_width()
        digits = torch.round(codes.float() * half).to(torch.int64) + self._levels // 2
        return self._digits_to_ids(digits)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """(...,) int64 ids -> (..., D) float32 codes in [-1, 1]. Inverse of ``codes_to_ids``."""
        check_ids(ids, self.codebook_size)
        digits = (ids.unsqueeze(-1) // self._basis) % self._levels
        return (digits - self._levels // 2).to(torch.float32) / self._half_width()

    def extra_repr(self) -> str:
        return f"levels={self.levels_list}, codebook_size={self.codebook_size}, bound_scale={self.bound_scale}"


class VectorQuantizer(nn.Module):
    """Nearest-codeword vector quantization by Euclidean distance.

    Args:
        codebook_size: K codewords.
        dim: D, the codeword width.
        normalize_input: L2-normalise inputs before the search (S3Tokenizer v1; the codebook is
            used as stored, so rows that are not unit norm still matter).
        learnable: keep the codebook as a Parameter (trainable) instead of a buffer.

    The codebook lives in ``embed`` (K, D).
    """

    def __init__(self, codebook_size: int, dim: int, normalize_input: bool = False, learnable: bool = False):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ConfigError(f"VectorQuantizer needs codebook_size >= 1 and dim >= 1, got {codebook_size}, {dim}")
        self.codebook_size, self.dim, self.normalize_input = codebook_size, dim, normalize_input
        embed = torch.randn(codebook_size, dim) / math.sqrt(dim)
        if learnable:
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)

    def nearest(self, x: Tensor) -> Tensor:
        """(..., D) -> (...,) int64 id of the nearest codeword."""
        if x.shape[-1] != self.dim:
            raise InputError(f"VQ over {self.dim} dims got last dimension {x.shape[-1]} (shape {tuple(x.shape)})")
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.detach().float().reshape(-1, self.dim)
            if self.normalize_input:
                flat = F.normalize(flat, p=2, dim=-1)
            embed = self.embed.detach().float()
            # |x|^2 - 2 x.E + |E|^2, the expansion upstream tokenizers use; argmin is the nearest code.
            distance = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ embed.t() + embed.pow(2).sum(-1)[None]
            ids = distance.argmin(dim=-1)
        return ids.reshape(x.shape[:-1])

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(..., D) -> (nearest codewords with straight-through gradient, ids (...,) int64)."""
        ids = self.nearest(x)
        codes = self.ids_to_codes(ids).to(x.dtype)
        return straight_through(x, codes), ids

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize(x)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        """(...,) int64 ids -> (..., D) codewords."""
        check_ids(ids, self.codebook_size)
        return F.embedding(ids, self.embed)

    def loss(self, x: Tensor, ids: Tensor, beta: float = 0.25, legacy: bool = False) -> Tensor:
        """VQ-VAE training loss of inputs ``x`` (..., D) assigned to ``ids``: codebook + beta x commitment.

        codebook term ``mean((e - sg(x))^2)`` moves the chosen codewords e toward their inputs; the
        commitment term ``mean((sg(e) - x)^2)`` keeps the inputs near their codewords. ``legacy=True``
        is taming-transformers' form (SEED's quantizer), which puts beta on the codebook term instead:
        ``mean((sg(e) - x)^2) + beta * mean((e - sg(x))^2)``.
        """
        codewords = self.ids_to_codes(ids).to(x.dtype)
        codebook = torch.mean((codewords - x.detach()) ** 2)
        commitment = torch.mean((codewords.detach() - x) ** 2)
        return commitment + beta * codebook if legacy else codebook + beta * commitment

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, normalize_input={self.normalize_input}"


def check_ids(ids: Tensor, codebook_size: int) -> Tensor:
    """Raise InputError unless ``ids`` are integers in [0, codebook_size)."""
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise InputError(f"token ids must be integers, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codebook_size):
        raise InputError(
            f"token ids must lie in [0, {codebook_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids
