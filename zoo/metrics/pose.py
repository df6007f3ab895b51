"""3D pose errors, with the definitions of the Human3.6M protocols as HoT and VideoPose3D compute them.

Shape letters: ... any leading dims (batch, frames), J joints. Poses are (..., J, 3) in one unit (metres for
H3.6M-style targets; multiply by 1000 for the millimetres papers report).

- ``mpjpe`` (protocol 1): mean Euclidean distance between predicted and true joints.
- ``p_mpjpe`` (protocol 2): MPJPE after aligning each predicted pose to its target by the best similarity
  transform (rotation without reflection, uniform scale, translation), per pose.
- ``mean_velocity_error`` (MPJVE): mean distance between predicted and true first differences along frames.

All three accept tensors and return a 0-dim tensor (differentiable, except ``p_mpjpe``'s alignment, which
runs under no_grad in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError


def _check_pair(pred: Tensor, target: Tensor, min_dims: int = 2) -> None:
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise InputError("pose metrics take torch tensors")
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() < min_dims or pred.shape[-1] != 3:
        raise InputError(f"poses must be (..., J, 3), got {tuple(pred.shape)}")
    if pred.numel() == 0:
        raise InputError("poses are empty")


def mpjpe(pred: Tensor, target: Tensor) -> Tensor:
    """Mean per-joint position error (protocol 1)."""
    _check_pair(pred, target)
    return (pred - target).norm(dim=-1).mean()


def p_mpjpe(pred: Tensor, target: Tensor) -> Tensor:
    """Procrustes-aligned MPJPE (protocol 2): each pose (J, 3) is aligned to its target before measuring."""
    _check_pair(pred, target)
    with torch.no_grad():
        p = pred.reshape(-1, pred.shape[-2], 3).double()
        t = target.reshape(-1, target.shape[-2], 3).double()
        mu_p, mu_t = p.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
        p0, t0 = p - mu_p, t - mu_t
        norm_p = p0.pow(2).sum(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        norm_t = t0.pow(2).sum(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        p0, t0 = p0 / norm_p, t0 / norm_t
        u, s, vh = torch.linalg.svd(t0.transpose(1, 2) @ p0)  # (N, 3, 3)
        v = vh.transpose(1, 2)
        rotation = v @ u.transpose(1, 2)
        # No reflections: flip the last singular vector where det(R) < 0.
        sign = torch.sign(torch.linalg.det(rotation))[:, None]
        v = torch.cat([v[..., :2], v[..., 2:] * sign[:, None]], dim=-1)
        s = torch.cat([s[:, :2], s[:, 2:] * sign], dim=-1)
        rotation = v @ u.transpose(1, 2)
        scale = s.sum(dim=1)[:, None, None] * norm_t / norm_p
        aligned = scale * (p - mu_p) @ rotation + mu_t
        return (aligned - t).norm(dim=-1).mean().to(pred.dtype)


def mean_velocity_error(pred: Tensor, target: Tensor, frame_dim: int = -3) -> Tensor:
    """Mean per-joint velocity error (MPJVE): MPJPE of the first differences along ``frame_dim``."""
    _check_pair(pred, target, min_dims=3)
    if pred.shape[frame_dim] < 2:
        raise InputError(f"velocity needs at least 2 frames along dim {frame_dim}, got {pred.shape[frame_dim]}")
    return (pred.diff(dim=frame_dim) - target.diff(dim=frame_dim)).norm(dim=-1).mean()
