"""Synthetic human motion on the H3.6M-17 skeleton, seen by pinhole cameras: a stand-in for Human3.6M.

No pose data set can be downloaded here, so the tiny models train on motion we generate:

* Subjects: adult bone lengths (metres) scaled by a per-subject height factor and jittered per bone,
  left and right kept symmetric.
* Motions, by forward kinematics at 50 fps (H3.6M's rate): walking, running, walking in a circle
  (turning), arm swings and raises, sitting down and standing up. Speeds, amplitudes and phases vary.
* Cameras: H3.6M-like intrinsics (f ~ 1145 px, 1000 x 1000 images), 4.5-6.5 m away, 1.0-2.0 m high,
  looking at the subject from an azimuth. Test cameras use azimuth bands that training never sees.
* 2D keypoints: projected joints plus Gaussian pixel noise and occasional large jitter (detector-like),
  then screen-normalised. A confidence channel (for MotionBERT) falls as the jitter grows.
* 3D targets: camera-frame joints relative to the pelvis, in metres (VideoPose3D convention).

``make_split("train" | "test", ...)`` gives disjoint subjects (seeds) and disjoint viewpoints.
Everything is numpy, seeded, and takes well under a second for a few hundred clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from video_pose.skeleton import H36M_PARENTS, NUM_JOINTS

FPS = 50
IMAGE_SIZE = 1000
MOTIONS = ("walk", "run", "turn", "arms", "sit")
HELD_OUT_AZIMUTHS = ((60.0, 90.0), (240.0, 270.0))  # degrees; test cameras only

# Rest-pose bone offsets from each joint's parent, subject facing +y, z up, +x to the subject's right.
_REST = np.array(
    [
        [0, 0, 0],  # pelvis
        [0.13, 0, 0],  # R hip
        [0, 0, -0.44],  # R knee
        [0, 0, -0.44],  # R ankle
        [-0.13, 0, 0],  # L hip
        [0, 0, -0.44],  # L knee
        [0, 0, -0.44],  # L ankle
        [0, 0, 0.23],  # spine
        [0, 0, 0.25],  # thorax
        [0, 0.05, 0.11],  # neck / nose
        [0, 0, 0.11],  # head
        [-0.15, 0, 0],  # L shoulder
        [0, 0, -0.28],  # L elbow
        [0, 0, -0.25],  # L wrist
        [0.15, 0, 0],  # R shoulder
        [0, 0, -0.28],  # R elbow
        [0, 0, -0.25],  # R wrist
    ],
    dtype=np.float64,
)
_MIRROR = {1: 4, 2: 5, 3: 6, 14: 11, 15: 12, 16: 13}  # right joint -> left partner (same bone length)


@dataclass
class Clips:
    """A batch of synthetic clips: N clips of T frames."""

    kp2d: np.ndarray  # (N, T, 17, 2) screen-normalised, noisy
    confidence: np.ndarray  # (N, T, 17) in [0.3, 1]
    pose3d: np.ndarray  # (N, T, 17, 3) camera frame, pelvis-relative, metres
    pixels: np.ndarray  # (N, T, 17, 2) noisy pixel coordinates
    motion: list[str]
    azimuth_deg: np.ndarray  # (N,)

    def kp2d_with_confidence(self) -> np.ndarray:
        return np.concatenate([self.kp2d, self.confidence[..., None]], axis=-1)


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about a coordinate axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _bones(rng: np.random.Generator) -> np.ndarray:
    """A subject's rest offsets (17, 3): height factor 0.88-1.12, each bone +-8 %, left = right."""
    scale = rng.uniform(0.88, 1.12) * rng.uniform(0.92, 1.08, size=NUM_JOINTS)
    for right, left in _MIRROR.items():
        scale[left] = scale[right]
    return _REST * scale[:, None]


def _motion_angles(kind: str, t: np.ndarray, rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    """Joint angles {(joint, axis): (T,)}, root yaw (T,) and root position (T, 3) for one motion."""
    deg = np.pi / 180
    angles: dict[tuple[int, str], np.ndarray] = {}
    zero = np.zeros_like(t)
    yaw = zero + rng.uniform(-np.pi, np.pi)
    pos = np.zeros((len(t), 3))
    height = 0.0  # added to the standing pelvis height later

    if kind in ("walk", "run", "turn"):
        run = kind == "run"
        freq = rng.uniform(1.3, 1.7) if run else rng.uniform(0.8, 1.2)
        phase = 2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)
        hip_amp = (rng.uniform(35, 45) if run else rng.uniform(20, 30)) * deg
        knee_amp = (rng.uniform(70, 95) if run else rng.uniform(40, 60)) * deg
        arm_amp = (rng.uniform(30, 45) if run else rng.uniform(15, 25)) * deg
        elbow = (rng.uniform(70, 95) if run else rng.uniform(10, 30)) * deg
        for hip, knee, side_phase in ((1, 2, 0.0), (4, 5, np.pi)):
            p = phase + side_phase
            angles[(hip, "x")] = hip_amp * np.sin(p) + 5 * deg
            angles[(knee, "x")] = -(knee_amp * np.maximum(0, np.sin(p + np.pi / 3)) + 5 * deg)
        for shoulder, elbow_j, side_phase in ((14, 15, np.pi), (11, 12, 0.0)):  # arm swings against its leg
            angles[(shoulder, "x")] = arm_amp * np.sin(phase + side_phase)
            angles[(shoulder, "y")] = (8 * deg) * (1 if shoulder == 14 else -1) + zero
            angles[(elbow_j, "x")] = elbow + 0.3 * elbow * np.sin(phase + side_phase)
        angles[(7, "x")] = (rng.uniform(8, 15) if run else rng.uniform(0, 5)) * deg + zero
        angles[(8, "z")] = 6 * deg * np.sin(phase)  # shoulders counter-rotate
        speed = rng.uniform(2.0, 2.6) if run else rng.uniform(0.9, 1.4)
        height = 0.025 * np.sin(2 * phase) - (0.05 if run else 0.0)
        if kind == "turn":
            yaw_rate = rng.choice([-1, 1]) * rng.uniform(40, 70) * deg
            yaw = yaw + yaw_rate * t
        step = np.stack([-np.sin(yaw), np.cos(yaw), zero], axis=-1) * speed / FPS  # facing +y rotated by yaw
        pos = np.cumsum(step, axis=0)
    elif kind == "arms":
        freq = rng.uniform(0.3, 0.8)
        for shoulder, elbow_j, sign in ((14, 15, 1), (11, 12, -1)):
            p = 2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)
            angles[(shoulder, "x")] = rng.uniform(20, 80) * deg * (1 + np.sin(p)) / 2 * rng.choice([-1, 1]) + zero
            angles[(shoulder, "y")] = sign * rng.uniform(20, 150) * deg * (1 + np.sin(p + rng.uniform(0, 1))) / 2
            angles[(elbow_j, "x")] = rng.uniform(0, 90) * deg * (1 + np.sin(p + 1)) / 2
        for knee in (2, 5):
            angles[(knee, "x")] = -rng.uniform(0, 15) * deg + zero
        angles[(7, "y")] = 5 * deg * np.sin(2 * np.pi * freq * t / 2)
        yaw = yaw + rng.uniform(-20, 20) * deg * np.sin(2 * np.pi * 0.2 * t)
    elif kind == "sit":
        # Sit down and stand up again: a smooth transition in and out at random times.
        start, hold = rng.uniform(0.0, 0.4) * t[-1], rng.uniform(0.3, 0.5) * t[-1]
        dur = rng.uniform(0.6, 1.0)
        s = _smoothstep((t - start) / dur) - _smoothstep((t - start - hold) / dur)
        depth = rng.uniform(0.7, 1.0)
        for hip, knee in ((1, 2), (4, 5)):
            angles[(hip, "x")] = 90 * deg * depth * s
            angles[(knee, "x")] = -90 * deg * depth * s
        angles[(7, "x")] = 30 * deg * depth * np.sin(np.pi * s)  # lean forward while moving
        for shoulder, elbow_j in ((14, 15), (11, 12)):
            angles[(shoulder, "x")] = 40 * deg * s * rng.uniform(0.3, 1.0)
            angles[(elbow_j, "x")] = 30 * deg * s
        height = -0.42 * depth * s
        pos = np.stack([zero, -0.25 * depth * s, zero], axis=-1)
        pos = pos @ _rot("z", yaw[0]).T
    # A slow nod on every motion.
    angles[(9, "x")] = rng.uniform(-10, 10) * deg * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    pos = pos - pos.mean(axis=0, keepdims=True)  # centre the path in front of the camera
    pos[:, 2] += height
    return angles, yaw, pos


def forward_kinematics(bones: np.ndarray, angles: dict, yaw: np.ndarray, root: np.ndarray) -> np.ndarray:
    """World joint positions (T, 17, 3): each joint's rotation turns the bones below it."""
    frames = len(yaw)
    standing = -(bones[2, 2] + bones[3, 2])  # hip -> ankle length
    glob = [None] * NUM_JOINTS
    pos = np.zeros((frames, NUM_JOINTS, 3))
    pos[:, 0] = root + np.array([0.0, 0.0, standing + 0.05])
    for j in range(NUM_JOINTS):
        local = np.broadcast_to(np.eye(3), (frames, 3, 3))
        for axis in ("z", "y", "x"):
            if (j, axis) in angles:
                local = local @ _rot(axis, angles[(j, axis)])
        if j == 0:
            glob[0] = _rot("z", yaw) @ local
            continue
        parent = H36M_PARENTS[j]
        pos[:, j] = pos[:, parent] + glob[parent] @ bones[j]
        glob[j] = glob[parent] @ local
    return pos


def _camera(rng: np.random.Generator, azimuth: float) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Rotation (3, 3) world -> camera (x right, y down, z forward), centre (3,), focal, principal point."""
    distance, cam_height = rng.uniform(4.5, 6.5), rng.uniform(1.0, 2.0)
    a = np.deg2rad(azimuth)
    centre = np.array([distance * np.cos(a), distance * np.sin(a), cam_height])
    target = np.array([0.0, 0.0, 0.9]) + rng.normal(0, 0.15, 3)
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    focal = rng.uniform(1100, 1170)
    principal = np.array([500.0, 500.0]) + rng.normal(0, 8, 2)
    return np.stack([right, down, forward]), centre, focal, principal


def _sample_azimuth(rng: np.random.Generator, held_out: bool) -> float:
    if held_out:
        low, high = HELD_OUT_AZIMUTHS[rng.integers(len(HELD_OUT_AZIMUTHS))]
        return rng.uniform(low, high)
    while True:
        a = rng.uniform(0, 360)
        if not any(low <= a <= high for low, high in HELD_OUT_AZIMUTHS):
            return a


def make_clips(
    num_clips: int,
    frames: int,
    seed: int,
    held_out_views: bool = False,
    motions: tuple[str, ...] = MOTIONS,
    noise_px: tuple[float, float] = (1.0, 4.0),
    jitter_prob: float = 0.005,
) -> Clips:
    """``num_clips`` clips of ``frames`` frames, each a new subject, motion and camera drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    kp2d, conf, pose3d, pixels, kinds, azimuths = [], [], [], [], [], []
    for _ in range(num_clips):
        kind = motions[rng.integers(len(motions))]
        world = forward_kinematics(_bones(rng), *_motion_angles(kind, t, rng))  # (T, 17, 3)
        azimuth = _sample_azimuth(rng, held_out_views)
        rotation, centre, focal, principal = _camera(rng, azimuth)
        cam = (world - centre) @ rotation.T  # (T, 17, 3)
        uv = focal * cam[..., :2] / cam[..., 2:3] + principal
        sigma = rng.uniform(*noise_px)
        noise = rng.normal(0, sigma, uv.shape)
        jitter = rng.random(uv.shape[:2]) < jitter_prob
        noise[jitter] += rng.normal(0, 25, (int(jitter.sum()), 2))
        uv = uv + noise
        err = np.linalg.norm(noise, axis=-1)
        conf.append(np.clip(1.0 - err / 40.0 + rng.normal(0, 0.03, err.shape), 0.3, 1.0))
        pixels.append(uv)
        kp2d.append(np.concatenate([uv[..., :1] / IMAGE_SIZE * 2 - 1, uv[..., 1:2] / IMAGE_SIZE * 2 - 1], -1))
        pose3d.append(cam - cam[:, :1])
        kinds.append(kind)
        azimuths.append(azimuth)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    return Clips(f32(kp2d), f32(conf), f32(pose3d), f32(pixels), kinds, f32(azimuths))


SPLIT_SEEDS = {"train": 1_000, "test": 9_000_000}


def make_split(split: str, num_clips: int, frames: int, seed: int = 0) -> Clips:
    """Training clips (seen viewpoints) or test clips (held-out subjects and held-out viewpoints)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return make_clips(num_clips, frames, SPLIT_SEEDS[split] + seed, held_out_views=split == "test")


def write_sample_files(folder, num_clips: int = 2, frames: int = 27) -> list:
    """Held-out clips as ``.npz`` files (kp2d (F, 17, 2) and pose3d (F, 17, 3), float32): the bundled samples.

    ``video_pose/samples/`` was written by ``python -c "from video_pose.synth import write_sample_files;
    write_sample_files('video_pose/samples')"``; the pose models' ``sample_inputs`` return these paths.
    """
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = make_split("test", num_clips, frames, seed=0)
    paths = []
    for i in range(num_clips):
        path = folder / f"heldout{i}_{clips.motion[i]}.npz"
        np.savez(path, kp2d=clips.kp2d[i].astype(np.float32), pose3d=clips.pose3d[i].astype(np.float32))
        paths.append(path)
    return paths
