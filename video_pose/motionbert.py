"""MotionBERT's DSTformer (Zhu et al., ICCV 2023) and HoT on it, as HoT's repository uses them.

Shape letters: B batch, F frames, n kept frames, J joints, C channels (dim_feat), H heads, d = C / H.

Each depth runs two streams on the same input and mixes them per token: ``blocks_st`` (spatial attention,
spatial MLP, temporal attention, temporal MLP) and ``blocks_ts`` (temporal first), weighted by
``softmax(ts_attn(cat[x_st, x_ts]))``. After the last depth: ``norm``, then ``pre_logits`` (Linear + Tanh)
and ``head``. Parameter names are upstream's (and the official Walter0807/MotionBERT's), so their
state_dicts load as is.

Inputs are (B, F, 17, 3): screen-normalised x, y and a detector confidence. A clip may have any
F <= num_frames; the temporal embedding (and HoT's recovery queries) use their first F rows, as the
official MotionBERT does (HoT's file hard-codes F = 243).

HoT-MotionBERT prunes to ``kept_frames`` before depth ``prune_before_block`` (upstream hard-codes 81 and
1; here they are config) and recovers the full length with token recovering attention after ``norm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from video_pose.hot import PruneAndRecover, check_pruning_config
from video_pose.lifter import PoseLifter
from video_pose.mixste import DropPath, Mlp, multi_head_attention
from zoo.errors import ConfigError


class STAttention(nn.Module):
    """Attention on (B F, J, C) tokens: across joints (``spatial``) or across each joint's F frames (``temporal``)."""

    def __init__(self, dim: int, num_heads: int, mode: str):
        super().__init__()
        self.num_heads, self.mode = num_heads, mode
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        bf, j, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        q, k, v = self.qkv(x).reshape(bf, j, 3, h, d).permute(2, 0, 3, 1, 4)  # each (B F, H, J, d)
        if self.mode == "spatial":
            out = multi_head_attention(q, k, v, self.scale).transpose(1, 2)  # (B F, J, H, d)
        else:
            q, k, v = (t.reshape(-1, num_frames, h, j, d).permute(0, 2, 3, 1, 4) for t in (q, k, v))  # (B,H,J,F,d)
            out = multi_head_attention(q, k, v, self.scale).permute(0, 3, 2, 1, 4)  # (B, F, J, H, d)
        return self.proj(out.reshape(bf, j, c))


class DualBlock(nn.Module):
    """A DSTformer block: spatial then temporal (``st``) or temporal then spatial (``ts``), each pre-norm."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, order: str, drop_path: float = 0.0):
        super().__init__()
        self.order = order
        self.norm1_s = nn.LayerNorm(dim, eps=1e-6)
        self.norm1_t = nn.LayerNorm(dim, eps=1e-6)
        self.attn_s = STAttention(dim, num_heads, "spatial")
        self.attn_t = STAttention(dim, num_heads, "temporal")
        self.drop_path = DropPath(drop_path)
        self.norm2_s = nn.LayerNorm(dim, eps=1e-6)
        self.norm2_t = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_s = Mlp(dim, mlp_hidden_dim)
        self.mlp_t = Mlp(dim, mlp_hidden_dim)

    def _spatial(self, x: Tensor, f: int) -> Tensor:
        x = x + self.drop_path(self.attn_s(self.norm1_s(x), f))
        return x + self.drop_path(self.mlp_s(self.norm2_s(x)))

    def _temporal(self, x: Tensor, f: int) -> Tensor:
        x = x + self.drop_path(self.attn_t(self.norm1_t(x), f))
        return x + self.drop_path(self.mlp_t(self.norm2_t(x)))

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        if self.order == "st":
            return self._temporal(self._spatial(x, num_frames), num_frames)
        return self._spatial(self._temporal(x, num_frames), num_frames)


@dataclass(frozen=True)
class MotionBERTConfig:
    """DSTformer. Defaults are the size HoT's repository uses (MotionBERT-Lite's: 16.00 M parameters).

    The full MotionBERT release is dim=512, mlp_hidden_dim=1024 (mlp_ratio 2); set them for its checkpoint.
    """

    num_frames: int = 243  # maxlen: rows of the temporal embedding; shorter clips use the first F
    num_joints: int = 17
    in_channels: int = 3  # x, y, confidence
    dim: int = 256  # dim_feat
    mlp_hidden_dim: int = 1024
    dim_rep: int = 512
    depth: int = 5
    num_heads: int = 8
    drop_path_rate: float = 0.0

    def __post_init__(self):
        name = type(self).__name__
        for field in ("num_frames", "num_joints", "in_channels", "dim", "mlp_hidden_dim", "dim_rep", "depth"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{name}.{field}={getattr(self, field)} must be positive")
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise ConfigError(f"{name}.dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"{name}.drop_path_rate={self.drop_path_rate} must be in [0, 1)")


@dataclass(frozen=True)
class HoTMotionBERTConfig(MotionBERTConfig):
    """HoT on DSTformer. Defaults are upstream's hard-coded values (16.35 M parameters)."""

    kept_frames: int = 81
    prune_before_block: int = 1  # depth 0 sees every frame
    knn_k: int = 2

    def __post_init__(self):
        super().__post_init__()
        check_pruning_config(self)


class MotionBERT(PoseLifter):
    """DSTformer lifting (B, F, 17, 3) keypoints with confidences to (B, F, 17, 3) poses."""

    arch: ClassVar[str] = "motionbert"
    config_class: ClassVar[type] = MotionBERTConfig
    prune_before_block: int | None = None

    def __init__(self, config: MotionBERTConfig, *, device=None, dtype=None):
        super().__init__(config)
        c = config
        with self.building(device, dtype):
            self.joints_embed = nn.Linear(c.in_channels, c.dim)
            rates = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # linspace(0, rate, depth)
            self.blocks_st = nn.ModuleList(DualBlock(c.dim, c.num_heads, c.mlp_hidden_dim, "st", r) for r in rates)
            self.blocks_ts = nn.ModuleList(DualBlock(c.dim, c.num_heads, c.mlp_hidden_dim, "ts", r) for r in rates)
            self.norm = nn.LayerNorm(c.dim, eps=1e-6)
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(c.dim, c.dim_rep))
            self.pre_logits.add_module("act", nn.Tanh())
            self.head = nn.Linear(c.dim_rep, 3)
            self.temp_embed = nn.Parameter(torch.zeros(1, c.num_frames, 1, c.dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, c.num_joints, c.dim))
            self.ts_attn = nn.ModuleList(nn.Linear(2 * c.dim, 2) for _ in range(c.depth))
            self._init_weights()

    def _init_weights(self):
        # As upstream: trunc-normal(0.02) embeddings and Linear weights, zero biases, and a stream
        # mixer that starts at an even split (weight 0, bias 0.5).
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for mixer in self.ts_attn:
            nn.init.zeros_(mixer.weight)
            nn.init.constant_(mixer.bias, 0.5)

    def prune(self, x, noise=None, generator=None, index=None, trace=None):
        raise NotImplementedError

    def forward_features(self, x, noise=None, generator=None, index=None, trace=None):
        b, f, j, _ = x.shape
        x = self.joints_embed(x) + self.pos_embed  # (B, F, J, C)
        x = x + self.temp_embed[:, :f]
        kept = torch.arange(f, device=x.device).expand(b, f)
        for i, (block_st, block_ts) in enumerate(zip(self.blocks_st, self.blocks_ts)):
            if i == self.prune_before_block:
                x, kept = self.prune(x, noise=noise, generator=generator, index=index, trace=trace)
            if trace is not None:
                trace[f"block_in.{i}"] = x
            b, f, j, c = x.shape
            flat = x.reshape(b * f, j, c)  # (B F) J C
            x_st, x_ts = block_st(flat, f), block_ts(flat, f)
            logits = self.ts_attn[i](torch.cat([x_st, x_ts], dim=-1))  # (B F, J, 2)
            if trace is not None:
                trace[f"ts_alpha_logits.{i}"] = logits.reshape(b, f, j, 2)
            alpha = logits.softmax(dim=-1)
            x = (x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]).reshape(b, f, j, c)
        if trace is not None:
            trace["norm_in"] = x
        x = self.norm(x)
        if trace is not None:
            trace["norm_out"] = x
        return x, kept

    def recover(self, tokens: Tensor, num_frames: int, trace=None) -> Tensor:
        return tokens

    def forward_head(self, tokens, kept_index, num_frames, trace=None):
        return self.head(self.pre_logits(self.recover(tokens, num_frames, trace)))


class HoTMotionBERT(PruneAndRecover, MotionBERT):
    """DSTformer with token pruning before depth ``prune_before_block`` and recovery after the final norm."""

    arch: ClassVar[str] = "hot-motionbert"
    config_class: ClassVar[type] = HoTMotionBERTConfig

    def __init__(self, config: HoTMotionBERTConfig, *, device=None, dtype=None):
        super().__init__(config, device=device, dtype=dtype)
        with self.building(device, dtype):
            self.add_prune_and_recover(config)
            for m in self.cross_attention.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
