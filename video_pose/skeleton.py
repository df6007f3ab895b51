"""The Human3.6M 17-joint skeleton and the input helpers every lifter shares.

Shape letters: B batch, F frames, J joints (17), K coordinates (2 for x, y; 3 adds a confidence or z).

Joint order is VideoPose3D's H3.6M-17 order (the one HoT, MixSTE and MotionBERT train on):

    0 pelvis (root)  1 R hip   2 R knee   3 R ankle   4 L hip    5 L knee   6 L ankle
    7 spine          8 thorax  9 neck/nose 10 head    11 L shoulder 12 L elbow 13 L wrist
    14 R shoulder    15 R elbow 16 R wrist

2D inputs are screen-normalised: ``x / w * 2 - 1`` and ``y / w * 2 - h / w`` (the width sets the scale for
both axes, so the aspect ratio is kept). 3D outputs are camera-frame, root-relative, in the units of the
training targets (metres for the VideoPose3D convention).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError

H36M_JOINT_NAMES = (
    "pelvis",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "spine",
    "thorax",
    "neck",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_LEFT = (4, 5, 6, 11, 12, 13)
H36M_RIGHT = (1, 2, 3, 14, 15, 16)
NUM_JOINTS = 17

COCO_JOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


def flip_permutation() -> list[int]:
    """Joint order after a left/right mirror: each left joint takes its right partner's slot and back."""
    order = list(range(NUM_JOINTS))
    for left, right in zip(H36M_LEFT, H36M_RIGHT):
        order[left], order[right] = right, left
    return order


def flip_pose(pose: Tensor) -> Tensor:
    """Mirror poses (..., J, K) about the vertical axis: negate x and swap left and right joints.

    Applying it twice gives the input back. Works for 2D (x, y[, conf]) and 3D (x, y, z) poses whose x axis
    is centred at 0, which screen-normalised 2D and root-relative 3D poses are.
    """
    flipped = pose[..., flip_permutation(), :].clone()
    flipped[..., 0] = -flipped[..., 0]
    return flipped


def normalize_screen_coordinates(pixels: Tensor, width: float, height: float) -> Tensor:
    """Pixel coordinates (..., 2 or more) -> screen-normalised x in [-1, 1], y scaled by the same factor.

    Extra channels after x, y (a confidence) pass through unchanged.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got width={width}, height={height}")
    if pixels.shape[-1] < 2:
        raise InputError(f"pixel coordinates need x and y in the last dimension, got shape {tuple(pixels.shape)}")
    out = pixels.clone().to(torch.float32) if not pixels.is_floating_point() else pixels.clone()
    out[..., 0] = pixels[..., 0] / width * 2 - 1
    out[..., 1] = pixels[..., 1] / width * 2 - height / width
    return out


def image_coordinates(normalized: Tensor, width: float, height: float) -> Tensor:
    """Inverse of :func:`normalize_screen_coordinates`."""
    out = normalized.clone()
    out[..., 0] = (normalized[..., 0] + 1) * width / 2
    out[..., 1] = (normalized[..., 1] + height / width) * width / 2
    return out


def coco_to_h36m(coco: Tensor) -> Tensor:
    """COCO-17 keypoints (..., 17, K) from a 2D detector -> H3.6M-17 order (..., 17, K).

    COCO has no pelvis, spine, thorax or head top; they are made from the joints it has, as HoT's
    in-the-wild demo does: pelvis = mid-hips, thorax = mid-shoulders, spine = midway between them,
    neck/nose = the nose, head = the nose pushed away from the thorax by half the thorax->nose
    vector. A confidence channel (K = 3) of a made joint is the smallest confidence of its sources.
    """
    if coco.dim() < 2 or coco.shape[-2] != 17 or coco.shape[-1] < 2:
        raise InputError(f"COCO keypoints must be (..., 17, 2 or 3), got shape {tuple(coco.shape)}")
    c = {name: coco[..., i, :] for i, name in enumerate(COCO_JOINT_NAMES)}

    def mid(a: Tensor, b: Tensor) -> Tensor:
        out = (a + b) / 2
        if out.shape[-1] > 2:
            out[..., 2:] = torch.minimum(a[..., 2:], b[..., 2:])
        return out

    pelvis = mid(c["left_hip"], c["right_hip"])
    thorax = mid(c["left_shoulder"], c["right_shoulder"])
    spine = mid(pelvis, thorax)
    head = c["nose"].clone()
    head[..., :2] = c["nose"][..., :2] + (c["nose"][..., :2] - thorax[..., :2]) * 0.5
    joints = [
        pelvis,
        c["right_hip"],
        c["right_knee"],
        c["right_ankle"],
        c["left_hip"],
        c["left_knee"],
        c["left_ankle"],
        spine,
        thorax,
        c["nose"],
        head,
        c["left_shoulder"],
        c["left_elbow"],
        c["left_wrist"],
        c["right_shoulder"],
        c["right_elbow"],
        c["right_wrist"],
    ]
    return torch.stack(joints, dim=-2)


def sliding_windows(num_frames: int, window: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Start/stop pairs of windows of ``window`` frames covering ``range(num_frames)``.

    Windows step by ``stride`` (default: half a window) and the last one is moved back to end exactly at
    ``num_frames``, so every window is full length and every frame is covered. A clip no longer than
    the window is one window of its own length.
    """
    if num_frames <= 0 or window <= 0:
        raise InputError(f"need positive frame counts, got num_frames={num_frames}, window={window}")
    if num_frames <= window:
        return [(0, num_frames)]
    stride = stride or max(1, window // 2)
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]
