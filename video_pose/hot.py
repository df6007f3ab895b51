"""HoT, the Hourglass Tokenizer (Li et al., CVPR 2024): prune pose tokens mid-network, recover them at the end.

Shape letters: B batch, F frames, n kept frames, J joints, C channels, H heads, d = C / H.

Two pieces, each usable on any video pose transformer whose features are (B, F, J, C):

* ``token_pruning_cluster`` (TPC): average each frame's J joint tokens, cluster the frames with DPC-kNN
  (density peaks over k nearest neighbours) and keep the n cluster centres, in temporal order. The
  blocks after the pruning point see n frames instead of F, which is where the FLOPs go.
* ``TokenRecoveringAttention`` (TRA): F learnable queries (``x_token``) attend to the n kept tokens and
  restore a full-length sequence, so the model stays seq2seq.

On MixSTE: ``HoTMixSTE`` (TPC + TRA) and ``TPCMixSTE`` (TPC only, seq2frame: the centre frame is always
kept and the output has one row per kept frame). HoT on MotionBERT lives in ``video_pose.motionbert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from video_pose.mixste import MixSTEBase, MixSTEConfig, multi_head_attention
from zoo.errors import ConfigError, InputError

NOISE_SCALE = 1e-6  # upstream's tie-break noise: density += U[0, 1) * 1e-6


# ---- token pruning cluster ------------------------------------------------------------------------
@dataclass
class ClusterResult:
    """Everything DPC-kNN computes; ``index`` is what the model uses."""

    index: Tensor  # (B, n) int64 kept frames, ascending
    index_topk: Tensor  # (B, n) or (B, n - 1) with a forced centre: the top-score frames in score order
    idx_cluster: Tensor  # (B, F) cluster of every frame (upstream computes it; HoT does not use it)
    dist_matrix: Tensor  # (B, F, F) cdist / sqrt(C)
    dist_nearest: Tensor  # (B, F, k) the k smallest distances per row, self included
    density_raw: Tensor  # (B, F) exp(-mean(dist_nearest^2))
    noise: Tensor  # (B, F) the U[0, 1) tie-break draw
    density: Tensor  # (B, F) density_raw + noise * 1e-6
    delta: Tensor  # (B, F) distance to the nearest frame of strictly higher density
    score: Tensor  # (B, F) delta * density (-inf at a forced centre)


def pool_over_joints(x: Tensor) -> Tensor:
    """(B, F, J, C) -> (B, F, C): the per-frame mean over joints that TPC clusters (upstream's AdaptiveAvgPool1d)."""
    b, f, j, c = x.shape
    pooled = F.adaptive_avg_pool1d(x.permute(0, 1, 3, 2).reshape(b, f * c, j), 1)  # (B, F*C, 1)
    return pooled.reshape(b, f, c)


# The stages of token_pruning_cluster, each a function of the one before, so that parity tests can feed
# each one upstream's own values and demand upstream's decisions exactly.
def knn_density(dist_matrix: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(B, F, F) -> the k smallest distances of every row, self included (B, F, k), and the density
    exp(-mean of their squares) (B, F)."""
    dist_nearest = torch.topk(dist_matrix, k=k, dim=-1, largest=False).values  # (B, F, k)
    return dist_nearest, (-(dist_nearest**2).mean(dim=-1)).exp()


def distance_to_denser(dist_matrix: Tensor, density: Tensor) -> Tensor:
    """(B, F): each frame's distance to the nearest frame of strictly higher density; the densest frame of
    a sample gets the largest distance in that sample."""
    higher = (density[:, None, :] > density[:, :, None]).to(dist_matrix.dtype)  # [b, i, j] = rho_j > rho_i
    dist_max = dist_matrix.flatten(1).max(dim=-1).values[:, None, None]  # (B, 1, 1)
    return (dist_matrix * higher + dist_max * (1 - higher)).min(dim=-1).values


def choose_centres(score: Tensor, chosen: int, center: int | None = None) -> tuple[Tensor, Tensor]:
    """The ``chosen`` frames of highest score (B, chosen), in score order, and the kept frames in temporal
    order (B, n): those plus ``center`` when one is forced (its score must be -inf)."""
    index_topk = torch.topk(score, k=chosen, dim=-1).indices  # (B, chosen)
    index = index_topk
    if center is not None:
        centre = torch.full((score.shape[0], 1), center, device=score.device, dtype=index.dtype)
        index = torch.cat([index, centre], dim=-1)
    return index_topk, torch.sort(index, dim=-1).values


def nearest_centre(dist_matrix: Tensor, index_topk: Tensor) -> Tensor:
    """(B, F): the position in ``index_topk`` of every frame's nearest centre; a centre is its own."""
    b, chosen = index_topk.shape
    batch = torch.arange(b, device=dist_matrix.device)[:, None]
    to_centres = dist_matrix[batch, index_topk]  # (B, chosen, F)
    idx_cluster = to_centres.argmin(dim=1)  # (B, F)
    idx_cluster[batch.expand(b, chosen), index_topk] = torch.arange(chosen, device=dist_matrix.device).expand(b, chosen)
    return idx_cluster


@torch.no_grad()
def token_pruning_cluster(
    features: Tensor,
    kept: int,
    k: int = 2,
    center: int | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise_scale: float = NOISE_SCALE,
) -> ClusterResult:
    """Choose ``kept`` representative frames of ``features`` (B, F, C) by density-peak clustering (DPC-kNN).

    density_i = exp(-mean of the squared distances to the k nearest frames, self included), plus a tiny
    uniform noise that breaks the exact ties k=2 produces (both frames of a mutual nearest pair have the
    same density). delta_i = distance to the nearest frame of strictly higher density (the densest frame
    gets the largest distance in its sample). The ``kept`` frames of highest density * delta are the
    cluster centres, returned in temporal order.

    The noise is ``torch.rand((B, F))`` drawn right after the density, once per call, from ``generator``
    or (None) the global RNG, exactly where upstream draws it; pass ``noise`` (B, F) to inject it.
    With ``center`` (TPC-MixSTE), that frame is always kept and ``kept - 1`` others are chosen.

    The selection runs in fp32 (its ties are decided at the 1e-7 level) and without gradients.
    """
    if features.dim() != 3:
        raise InputError(f"token_pruning_cluster takes features (B, F, C), got shape {tuple(features.shape)}")
    x = features.float()
    b, f, c = x.shape
    chosen = kept - 1 if center is not None else kept
    if not 1 <= chosen <= f - (center is not None):
        low = 2 if center is not None else 1
        raise InputError(f"cannot keep {kept} of {f} frames; kept frames must be in {low}..{f}")
    if center is not None and not 0 <= center < f:
        raise InputError(f"centre frame {center} is outside 0..{f - 1}")

    dist_matrix = torch.cdist(x, x) / (c**0.5)  # (B, F, F)
    dist_nearest, density_raw = knn_density(dist_matrix, k)
    if noise is None:
        noise = torch.rand(density_raw.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif tuple(noise.shape) != (b, f):
        raise InputError(f"noise must be (B, F) = {(b, f)}, got {tuple(noise.shape)}")
    noise = noise.to(device=x.device, dtype=x.dtype)
    density = density_raw + noise * noise_scale
    delta = distance_to_denser(dist_matrix, density)
    score = delta * density
    if center is not None:
        score[:, center] = -torch.inf
    index_topk, index = choose_centres(score, chosen, center)
    idx_cluster = nearest_centre(dist_matrix, index_topk)
    return ClusterResult(
        index=index,
        index_topk=index_topk,
        idx_cluster=idx_cluster,
        dist_matrix=dist_matrix,
        dist_nearest=dist_nearest,
        density_raw=density_raw,
        noise=noise,
        density=density,
        delta=delta,
        score=score,
    )


def gather_frames(x: Tensor, index: Tensor) -> Tensor:
    """x (B, F, ...) and index (B, n) -> (B, n, ...): differentiable with respect to x."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


# ---- token recovering attention -------------------------------------------------------------------
class TokenRecoveringAttention(nn.Module):
    """Cross-attention from full-length queries (B', F, C) to kept tokens (B', n, C); upstream's Cross_Attention."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"channels {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        b, f, c = queries.shape
        n, h = tokens.shape[1], self.num_heads
        q = self.linear_q(queries).reshape(b, f, h, c // h).transpose(1, 2)  # (B', H, F, d)
        k = self.linear_k(tokens).reshape(b, n, h, c // h).transpose(1, 2)  # (B', H, n, d)
        v = self.linear_v(tokens).reshape(b, n, h, c // h).transpose(1, 2)
        out = multi_head_attention(q, k, v, self.scale)  # (B', H, F, d)
        return self.proj(out.transpose(1, 2).reshape(b, f, c))


def recover_tokens(x_token: Tensor, attention: TokenRecoveringAttention, tokens: Tensor, num_frames: int, trace=None):
    """Kept tokens (B, n, J, C) -> full length (B, F, J, C): x_token[:F] + TRA(x_token[:F], tokens), per joint."""
    b, n, j, c = tokens.shape
    kv = tokens.transpose(1, 2).reshape(b * j, n, c)  # (B J) n C
    queries = x_token[:, :num_frames].expand(b * j, -1, -1)  # (B J) F C
    attn = attention(queries, kv)
    out = (queries + attn).reshape(b, j, num_frames, c).transpose(1, 2)  # B F J C
    if trace is not None:
        trace["tra_kv_in"] = tokens
        trace["tra_attn_out"] = attn.reshape(b, j, num_frames, c).transpose(1, 2)
        trace["tra_out"] = out
    return out


def trace_cluster(trace: dict | None, features: Tensor, pooled: Tensor, result: ClusterResult) -> None:
    if trace is None:
        return
    trace["tpc_features_in"], trace["tpc_pooled"] = features, pooled
    for name in ("noise", "dist_matrix", "dist_nearest", "density_raw", "density", "delta", "score"):
        trace[f"tpc_{name}"] = getattr(result, name)
    trace["tpc_index"], trace["tpc_index_topk"], trace["tpc_idx_cluster"] = (
        result.index,
        result.index_topk,
        result.idx_cluster,
    )


def check_pruning_config(config) -> None:
    """The HoT fields of a lifter config: 0 < kept_frames < num_frames, a block after the first to prune
    before, and k >= 1 neighbours for the density."""
    name = type(config).__name__
    if not 0 < config.kept_frames < config.num_frames:
        raise ConfigError(f"{name}.kept_frames={config.kept_frames} must be in (0, {config.num_frames})")
    if not 0 < config.prune_before_block < config.depth:
        raise ConfigError(f"{name}.prune_before_block={config.prune_before_block} must be in 1..{config.depth - 1}")
    if config.knn_k < 1:
        raise ConfigError(f"{name}.knn_k={config.knn_k} must be positive")


class PruneAndRecover:
    """TPC before block ``prune_before_block`` and TRA before the head, for any lifter whose trunk calls
    ``prune`` and ``recover`` (MixSTE, DSTformer). The config needs kept_frames, knn_k, prune_before_block,
    num_frames, dim and num_heads."""

    def add_prune_and_recover(self, config) -> None:
        # Registered after the trunk; state_dict order differs from upstream's, names do not.
        self.prune_before_block = config.prune_before_block
        self.pos_embed_token = nn.Parameter(torch.zeros(1, config.kept_frames, config.dim))
        self.x_token = nn.Parameter(torch.zeros(1, config.num_frames, config.dim))
        self.cross_attention = TokenRecoveringAttention(config.dim, config.num_heads)

    def centre(self, num_frames: int) -> int | None:
        """A frame always kept (TPC's seq2frame centre), or None."""
        return None

    def prune(self, x: Tensor, noise=None, generator=None, index=None, trace=None) -> tuple[Tensor, Tensor]:
        """(B, F, J, C) -> kept tokens (B, n, J, C) and their frames (B, n)."""
        if index is None:
            pooled = pool_over_joints(x)
            result = token_pruning_cluster(
                pooled,
                self.config.kept_frames,
                k=self.config.knn_k,
                center=self.centre(x.shape[1]),
                noise=noise,
                generator=generator,
            )
            trace_cluster(trace, x, pooled, result)
            index = result.index
        x = self.add_token_position(gather_frames(x, index))
        if trace is not None:
            trace["tpc_gathered"] = x
        return x, index

    def add_token_position(self, x: Tensor) -> Tensor:
        return x + self.pos_embed_token[:, :, None, :]  # (1, n, 1, C) over B and J

    def recover(self, tokens: Tensor, num_frames: int, trace=None) -> Tensor:
        return recover_tokens(self.x_token, self.cross_attention, tokens, num_frames, trace)


# ---- HoT on MixSTE --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HoTMixSTEConfig(MixSTEConfig):
    """HoT on a MixSTE backbone. Defaults match the released 243-frame Human3.6M model (35.00 M parameters)."""

    kept_frames: int = 81  # representatives chosen by token_pruning_cluster
    prune_before_block: int = 3  # blocks 0..2 still see every frame
    knn_k: int = 2
    # upstream's HoT/TPC MixSTE ignore d_hid and use 2 * dim; 1024 = 2 * 512 for the release.
    mlp_hidden_dim: int = 1024

    def __post_init__(self):
        super().__post_init__()
        check_pruning_config(self)


@dataclass(frozen=True)
class TPCMixSTEConfig(HoTMixSTEConfig):
    """TPC on MixSTE (seq2frame, no recovery). Defaults match the released 243-frame model."""

    kept_frames: int = 61  # including the centre frame, which is always kept
    prune_before_block: int = 7


class HoTMixSTE(PruneAndRecover, MixSTEBase):
    """MixSTE with token pruning before block ``prune_before_block`` and token recovery before the head."""

    arch: ClassVar[str] = "hot-mixste"
    config_class: ClassVar[type] = HoTMixSTEConfig

    def __init__(self, config: HoTMixSTEConfig):
        super().__init__(config)
        self.add_prune_and_recover(config)
        nn.init.trunc_normal_(self.pos_embed_token, std=0.02)
        nn.init.trunc_normal_(self.x_token, std=0.02)


class TPCMixSTE(HoTMixSTE):
    """MixSTE with token pruning only; the centre frame is always kept and the head reads the kept frames."""

    arch: ClassVar[str] = "tpc-mixste"
    config_class: ClassVar[type] = TPCMixSTEConfig
    outputs_kept_frames_only: ClassVar[bool] = True

    def __init__(self, config: TPCMixSTEConfig):
        MixSTEBase.__init__(self, config)
        self.prune_before_block = config.prune_before_block

    def centre(self, num_frames: int) -> int:
        return (num_frames - 1) // 2

    def add_token_position(self, x: Tensor) -> Tensor:
        return x

    def recover(self, tokens, num_frames, trace=None):
        return tokens
