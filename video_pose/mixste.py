"""MixSTE (Zhang et al., CVPR 2022) as HoT's repository implements it, and the blocks HoT builds on.

Shape letters: B batch, F frames, n kept frames, J joints, K input channels, C channels, H heads, d = C / H.

MixSTE alternates a spatial transformer block (attention across the J joints of one frame) and a
temporal one (attention across the F frames of one joint), ``depth`` times. One ``Spatial_norm`` and one
``Temporal_norm`` LayerNorm are shared by every depth, and the temporal position embedding is added once,
before the first temporal block. Parameter names are upstream's, so an upstream state_dict loads as is.

Upstream requires F == num_frames (its temporal embedding is not sliced). Here a clip of F <= num_frames
frames uses the first F rows of the temporal embedding, as the official MotionBERT does; models trained
at a fixed length are still best fed that length (``lift`` slides full windows over long clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from video_pose.lifter import PoseLifter
from zoo.errors import ConfigError


# ---- blocks ---------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: in training, drop the whole residual branch of a sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form, as upstream
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """(..., H, N, d) x (..., H, M, d) -> (..., H, N, d): softmax(q k^T * scale) v, written out as upstream does."""
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Self-attention over the middle axis of (B', N, C) with a fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"channels {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)  # (3,B',H,N,d)
        out = multi_head_attention(qkv[0], qkv[1], qkv[2], self.scale)  # (B', H, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ---- config ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixSTEConfig:
    """MixSTE. Defaults match HoT's released 243-frame Human3.6M MixSTE (33.78 M parameters)."""

    num_frames: int = 243  # the temporal position embedding has exactly this many rows
    num_joints: int = 17
    in_channels: int = 2  # x, y in screen-normalised coordinates
    dim: int = 512
    mlp_hidden_dim: int = 1024  # upstream's d_hid
    depth: int = 8  # spatial/temporal block pairs; upstream hard-codes 8
    num_heads: int = 8
    drop_path_rate: float = 0.1  # linspace(0, rate, depth); inactive in eval

    def __post_init__(self):
        name = type(self).__name__
        for field in ("num_frames", "num_joints", "in_channels", "dim", "mlp_hidden_dim", "depth", "num_heads"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{name}.{field}={getattr(self, field)} must be positive")
        if self.dim % self.num_heads:
            raise ConfigError(f"{name}.dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"{name}.drop_path_rate={self.drop_path_rate} must be in [0, 1)")


# ---- model ----------------------------------------------------------------------------------------
class MixSTEBase(PoseLifter):
    """The MixSTE trunk shared by MixSTE, HoT-MixSTE and TPC-MixSTE.

    Subclasses that prune set ``prune_before_block`` and implement ``prune``; those that recover the
    full length implement ``recover``.
    """

    prune_before_block: int | None = None

    def __init__(self, config, *, device=None, dtype=None):
        super().__init__(config)
        c = config
        with self.building(device, dtype):
            self.Spatial_patch_to_embedding = nn.Linear(c.in_channels, c.dim)
            self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, c.num_joints, c.dim))
            self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, c.num_frames, c.dim))
            rates = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # linspace(0, rate, depth)
            self.STEblocks = nn.ModuleList(Block(c.dim, c.num_heads, c.mlp_hidden_dim, r) for r in rates)
            self.TTEblocks = nn.ModuleList(Block(c.dim, c.num_heads, c.mlp_hidden_dim, r) for r in rates)
            self.Spatial_norm = nn.LayerNorm(c.dim, eps=1e-6)
            self.Temporal_norm = nn.LayerNorm(c.dim, eps=1e-6)
            self.head = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, 3))  # eps 1e-5 here, as upstream
            self._init_weights()

    def _init_weights(self):
        # Upstream leaves PyTorch's defaults for Linear and zeros for the embeddings; small random
        # embeddings train as well and make an untrained model's frames distinguishable.
        for p in (self.Spatial_pos_embed, self.Temporal_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def _depth(self, x: Tensor, i: int, trace: dict | None) -> Tensor:
        """One spatial + temporal block pair on (B, F, J, C)."""
        b, f, j, c = x.shape
        x = x.reshape(b * f, j, c)  # (B F) J C
        x = self.Spatial_norm(self.STEblocks[i](x))
        x = x.reshape(b, f, j, c).transpose(1, 2).reshape(b * j, f, c)  # (B J) F C
        if i == 0:
            x = x + self.Temporal_pos_embed[:, :f]
        x = self.Temporal_norm(self.TTEblocks[i](x))
        x = x.reshape(b, j, f, c).transpose(1, 2)  # B F J C
        if trace is not None:
            trace[f"depth_out.{i}"] = x
        return x

    def forward_features(self, x, noise=None, generator=None, index=None, trace=None):
        b, f, j, _ = x.shape
        x = self.Spatial_patch_to_embedding(x) + self.Spatial_pos_embed  # (B, F, J, C)
        kept = torch.arange(f, device=x.device).expand(b, f)
        for i in range(self.config.depth):
            if i > 0 and i == self.prune_before_block:
                x, kept = self.prune(x, noise=noise, generator=generator, index=index, trace=trace)
            x = self._depth(x, i, trace)
        return x, kept

    def recover(self, tokens: Tensor, num_frames: int, trace: dict | None = None) -> Tensor:
        """Pose tokens -> the tokens the head reads; the identity unless a subclass recovers pruned frames."""
        return tokens

    def forward_head(self, tokens, kept_index, num_frames, trace=None):
        return self.head(self.recover(tokens, num_frames, trace))  # (B, F or n, J, 3)


class MixSTE(MixSTEBase):
    """Plain MixSTE: every frame stays a token to the end (seq2seq)."""

    arch: ClassVar[str] = "mixste"
    config_class: ClassVar[type] = MixSTEConfig
