"""Building blocks of FlexTok's encoder and rectified-flow decoder.

Shape letters: B batch, N sequence positions, P patch tokens, R registers, D width, H heads,
K head width (head_dim), C latent channels, h/w latent height/width.

Every LayerNorm here is parameter-free and computed in float32 (the released models carry no norm
weights); attention uses QK-norm and the muP scale 8 / head_dim instead of 1 / sqrt(head_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def plain_layer_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim with no weight or bias, in float32, cast back to x's dtype."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def patchify(latents: Tensor, patch: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> (B, h/ph * w/pw, ph*pw*C), patches row-major, each vector ordered (dy, dx, c)."""
    b, c, h, w = latents.shape
    ph, pw = patch
    x = latents.reshape(b, c, h // ph, ph, w // pw, pw)  # (B, C, n0, dy, n1, dx)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch: tuple[int, int], channels: int) -> Tensor:
    """Inverse of ``patchify``: (B, n0*n1, ph*pw*C) -> (B, C, n0*ph, n1*pw)."""
    b = patches.shape[0]
    (n0, n1), (ph, pw) = grid, patch
    x = patches.reshape(b, n0, n1, ph, pw, channels)  # (B, n0, n1, dy, dx, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, n0 * ph, n1 * pw)


def sincos_table_2d(dim: int, rows: int, cols: int, temperature: float = 10000.0) -> Tensor:
    """(1, D, rows, cols) fixed table; channel blocks of D/4: sin(row w), cos(row w), sin(col w), cos(col w)."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    r = torch.arange(rows, dtype=torch.float64)[:, None] * omega  # (rows, D/4)
    c = torch.arange(cols, dtype=torch.float64)[:, None] * omega  # (cols, D/4)
    table = torch.cat(
        [
            r.sin()[:, None, :].expand(rows, cols, quarter),
            r.cos()[:, None, :].expand(rows, cols, quarter),
            c.sin()[None, :, :].expand(rows, cols, quarter),
            c.cos()[None, :, :].expand(rows, cols, quarter),
        ],
        dim=-1,
    )  # (rows, cols, D)
    return table.permute(2, 0, 1).unsqueeze(0).float()


class Attention(nn.Module):
    """Multi-head self-attention with bias-free projections, QK-norm and the muP scale 8 / head_dim."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not a multiple of head_dim {head_dim}")
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        heads = (b, n, self.num_heads, self.head_dim)
        q = plain_layer_norm(self.wq(x).view(heads)).transpose(1, 2)  # (B, H, N, K)
        k = plain_layer_norm(self.wk(x).view(heads)).transpose(1, 2)
        v = self.wv(x).view(heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=8.0 / self.head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    """fc2(silu(fc1 x) * fc3 x), no biases; hidden width int(2 * mlp_ratio * D / 3)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(2 * (mlp_ratio * dim) / 3)
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc3 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class Block(nn.Module):
    """Pre-norm transformer block: x += attn(LN x); x += mlp(LN x)."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = Attention(dim, head_dim)
        self.mlp = SwiGLU(dim, mlp_ratio)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(plain_layer_norm(x), mask)
        return x + self.mlp(plain_layer_norm(x))


class AdaLNBlock(Block):
    """Block with adaLN-zero time conditioning, one 6D modulation chunk per token group.

    ``adaLN_modulation`` maps the time embedding (B, D) to ``groups`` chunks of 6D. Chunk g modulates
    the tokens whose group index is g (patches 0, registers 1). Inside a chunk the order is
    gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp (upstream's order, not DiT's).
    """

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float = 4.0, groups: int = 2):
        super().__init__(dim, head_dim, mlp_ratio)
        self.groups = groups
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, groups * 6 * dim, bias=True))

    def forward(self, x: Tensor, temb: Tensor, group_sizes: tuple[int, ...], mask: Tensor | None = None) -> Tensor:
        b, _, d = x.shape
        mod = self.adaLN_modulation(temb).view(b, self.groups, 6, d)  # (B, G, 6, D)
        gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = range(6)

        def per_group(y: Tensor, fn) -> Tensor:
            # each token group gets its own (B, 1, D) vectors; no (B, N, 6D) tensor is built
            parts = y.split(list(group_sizes), dim=1)
            return torch.cat([fn(part, mod[:, g, :, None, :]) for g, part in enumerate(parts)], dim=1)

        def modulate(y: Tensor, shift: int, scale: int) -> Tensor:
            return per_group(plain_layer_norm(y), lambda p, m: p * (1 + m[:, scale]) + m[:, shift])

        def gated(y: Tensor, gate: int) -> Tensor:
            return per_group(y, lambda p, m: p * m[:, gate])

        x = x + gated(self.attn(modulate(x, shift_msa, scale_msa), mask), gate_msa)
        return x + gated(self.mlp(modulate(x, shift_mlp, scale_mlp)), gate_mlp)


class TimestepEmbedder(nn.Module):
    """t in [0, max_timestep] -> (B, D): [cos(t f), sin(t f)] features, then Linear-SiLU-Linear.

    f_j = (1000 / max_timestep) * max_period^(-j / half), j = 0..half-1, half = frequency_dim / 2.
    """

    def __init__(self, dim: int, frequency_dim: int = 256, max_period: float = 256.0, max_timestep: float = 1.0):
        super().__init__()
        self.frequency_dim, self.max_period, self.max_timestep = frequency_dim, max_period, max_timestep
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def frequency_features(self, t: Tensor) -> Tensor:
        half = self.frequency_dim // 2
        j = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * j / half)
        args = (t.float() * (1000.0 / self.max_timestep))[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        features = self.frequency_features(t)
        return self.mlp(features.to(self.mlp[0].weight.dtype))
