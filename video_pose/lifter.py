"""What every 2D-to-3D pose lifter in the zoo shares: input checks, encode/decode/lift, flip and windows.

Shape letters: B batch, F frames, n kept frames (pose tokens), J joints, K input channels, C channels.

A lifter turns a clip of 2D keypoints (B, F, J, K) into 3D poses (B, F, J, 3). Its *tokens* are the
per-frame pose tokens at the end of the backbone: for a HoT model the n frames kept by token pruning
(``meta["kept_frame_indices"]``), for a plain model every frame. ``encode`` returns them as
``Tokens(embeddings=(B, n, J*C))``; ``decode`` turns them back into 3D (recovering the full length
for HoT); ``lift`` does both, with optional flip augmentation and sliding windows for long clips.

Subclasses implement ``forward_features`` and ``forward_head``.

Determinism: HoT's token pruning breaks exact density ties with a tiny uniform noise. Upstream draws
it from the global RNG, so a clip's kept frames could change from call to call and with its place in
a batch. ``encode`` and ``lift`` draw it instead from a generator seeded ``TIE_BREAK_SEED`` for every
clip and every call (each clip of a batch gets the same draw), so the same clip gives the same tokens
alone, in a batch and on every call. Passing ``generator=`` draws the (B, F) noise from that generator
as upstream does from the global one, and ``generator=torch.default_generator`` is upstream's
behaviour exactly (on CPU); ``noise=`` injects it. ``forward`` (training, parity) keeps upstream's
global-RNG draw unless told otherwise.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from video_pose.skeleton import H36M_PARENTS, flip_pose, sliding_windows
from zoo.api import Tokens, ZooModel, check_float_tensor, check_input_file, inference
from zoo.errors import InputError

SAMPLE_FRAMES = 27  # frames of the bundled sample clips in video_pose/samples/
TIE_BREAK_SEED = 0  # seeds the tie-break noise of token pruning in encode and lift (see the module docstring)


def tie_break_noise(batch: int, frames: int, seed: int = TIE_BREAK_SEED) -> Tensor:
    """(B, F) float32 U[0, 1) on the CPU, every row the first F draws of a generator seeded ``seed``:
    the noise a clip gets does not depend on its batch, its place in it, or the call."""
    row = torch.rand(frames, generator=torch.Generator().manual_seed(seed))
    return row.expand(batch, frames).clone()


class PoseLifter(ZooModel):
    """Base of the 2D-to-3D pose lifters (the pose modality's base class)."""

    modality: ClassVar[str] = "pose"
    supports_decode: ClassVar[bool] = True
    supports_training: ClassVar[bool] = True
    tasks: ClassVar[frozenset[str]] = frozenset({"lift"})
    skeleton_parents: ClassVar[tuple[int, ...]] = H36M_PARENTS  # H3.6M-17 bones, for plots and the demo app
    # True where the model outputs one row per kept frame instead of the full clip (TPC-MixSTE, seq2frame).
    outputs_kept_frames_only: ClassVar[bool] = False

    # ---- sizes the checks need ----------------------------------------------------------------
    @property
    def max_frames(self) -> int:
        return self.config.num_frames

    @property
    def kept_frames(self) -> int | None:
        return getattr(self.config, "kept_frames", None)

    def min_frames(self) -> int:
        """Fewest frames a clip may have: pruning needs more frames than it keeps."""
        return self.kept_frames + 1 if self.kept_frames else 1

    def check_keypoints(self, kp2d: Any, name: str = "kp2d", check_frames: bool = True) -> Tensor:
        """Raise InputError unless ``kp2d`` is a finite float (B, F, J, K) clip this model accepts. A float
        dtype other than the model's (float64 from numpy, say) is cast to the model's, as ``preprocess`` does."""
        x = check_float_tensor(kp2d, name, dims=4)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        _, frames, joints, channels = x.shape
        if joints != self.config.num_joints:
            raise InputError(
                f"{name} has {joints} joints; {self.arch} takes {self.config.num_joints} in H3.6M-17 order "
                "(convert COCO-17 detections with video_pose.skeleton.coco_to_h36m)"
            )
        if channels != self.config.in_channels:
            what = "x, y" if self.config.in_channels == 2 else "x, y, confidence"
            raise InputError(
                f"{name} has {channels} channels per joint; {self.arch} takes {self.config.in_channels} ({what})"
            )
        if not check_frames:
            return x
        if frames < self.min_frames():
            raise InputError(
                f"{name} has {frames} frames; {self.arch} needs at least {self.min_frames()} "
                f"(it keeps {self.kept_frames} frames)"
                if self.kept_frames
                else f"{name} has {frames} frames; {self.arch} needs at least {self.min_frames()}"
            )
        if frames > self.max_frames:
            raise InputError(
                f"{name} has {frames} frames, more than the {self.max_frames} this model sees at once; "
                "use lift(), which slides windows over long clips"
            )
        return x

    # ---- the network (subclasses) ---------------------------------------------------------------
    def forward_features(
        self,
        x: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        index: Tensor | None = None,
        trace: dict | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(B, F, J, K) -> pose tokens (B, n, J, C) and the frames they stand for (B, n) int64."""
        raise NotImplementedError

    def forward_head(self, tokens: Tensor, kept_index: Tensor, num_frames: int, trace: dict | None = None) -> Tensor:
        """Pose tokens (B, n, J, C) -> 3D poses (B, F, J, 3), or (B, n, J, 3) for seq2frame models."""
        raise NotImplementedError

    def forward(self, x: Tensor, noise: Tensor | None = None, generator=None, index=None, trace=None):
        """(B, F, J, K) -> (3D poses, the frame index of each output row (B, F or n))."""
        tokens, kept = self.forward_features(x, noise=noise, generator=generator, index=index, trace=trace)
        out = self.forward_head(tokens, kept, x.shape[1], trace=trace)
        if self.outputs_kept_frames_only:
            return out, kept
        frames = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return out, frames

    # ---- the zoo contract -----------------------------------------------------------------------
    def sample_inputs(self) -> list:
        """Held-out synthetic clips for demos, comparisons and smoke tests.

        The bundled ``video_pose/samples/*.npz`` files (27 frames, 2D keypoints with their 3D poses, so
        fine-tuning can use them) when they fit the model's window and channels; otherwise two clips
        (F, 17, K) generated at the model's window length.
        """
        from video_pose.synth import make_split

        bundled = sorted((Path(__file__).resolve().parent / "samples").glob("*.npz"))
        kept = self.kept_frames or 0
        if bundled and self.config.in_channels == 2 and kept < SAMPLE_FRAMES <= self.max_frames:
            return bundled
        clips = make_split("test", 2, self.max_frames, seed=0).kp2d
        if self.config.in_channels == 3:  # MotionBERT takes (x, y, confidence)
            clips = np.concatenate([clips, np.ones_like(clips[..., :1])], axis=-1)
        return list(clips)

    def load_item(self, path) -> Any:
        """A clip file: ``.npy`` 2D keypoints (F, J, K), or ``.npz`` with ``kp2d`` and, for training, ``pose3d``."""
        path = check_input_file(path, "pose clip")
        if path.suffix not in (".npy", ".npz"):
            raise InputError(f"{path}: pose clips are .npy (2D keypoints) or .npz (kp2d, pose3d) files")
        try:
            data = np.load(path, allow_pickle=False)
            if path.suffix == ".npy":
                return data
            with data:
                item = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # empty, truncated, not numpy
            raise InputError(f"{path}: not a readable numpy file ({err or type(err).__name__})") from err
        if "kp2d" not in item:
            raise InputError(f"{path}: an .npz clip needs a 'kp2d' array, found {sorted(item)}")
        return item

    def training_batch(self, items: list) -> dict[str, Tensor]:
        """Clips with their 3D poses (``.npz`` items) -> {"kp2d", "pose3d"}, what ``training_loss`` takes."""
        if not all(isinstance(item, dict) and "pose3d" in item for item in items):
            raise InputError("training a pose lifter needs clips with 3D targets: .npz files holding kp2d and pose3d")
        pose3d = torch.as_tensor(np.stack([item["pose3d"] for item in items]))
        return {"kp2d": self.preprocess(items), "pose3d": pose3d.to(device=self.device, dtype=self.dtype)}

    def preprocess(self, raw: Any) -> Tensor:
        """A numpy array or nested list (F, J, K) or (B, F, J, K), clip files (.npy/.npz) or clip dicts from
        ``load_item`` -> a float32 batch tensor."""
        if raw is None or isinstance(raw, (bool, int, float, bytes)):
            raise InputError(
                "pose clips are (F, J, K) / (B, F, J, K) arrays or tensors, or .npy/.npz paths; "
                f"got {type(raw).__name__}"
            )
        if isinstance(raw, (str, os.PathLike, dict)):
            raw = [raw]
        if isinstance(raw, (list, tuple)) and raw and all(isinstance(i, (str, os.PathLike, dict)) for i in raw):
            items = [i if isinstance(i, dict) else self.load_item(i) for i in raw]
            if any(isinstance(i, dict) and "kp2d" not in i for i in items):
                raise InputError("a pose clip dict needs a 'kp2d' array (B, F, J, K) or (F, J, K)")
            raw = np.stack([i["kp2d"] if isinstance(i, dict) else i for i in items])
        if not isinstance(raw, Tensor):
            try:
                raw = torch.as_tensor(np.asarray(raw))
            except (ValueError, TypeError) as err:  # ragged nested lists, objects
                raise InputError(f"pose clips must form one (B, F, J, K) array ({err})") from err
        x = raw
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if not x.is_floating_point():
            raise InputError(f"keypoints must be floating point, got {x.dtype}")
        return x.to(device=self.device, dtype=self.dtype)

    @inference
    def encode(
        self, kp2d: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None, index=None
    ) -> Tokens:
        """2D clip (B, F, J, K) -> pose tokens: embeddings (B, n, J*C), kept frame indices (B, n) in meta.
        Raw clips (arrays, nested lists, .npy/.npz paths) go through ``preprocess`` first.

        ``noise`` (B, F) in [0, 1) replaces the tie-break draw of token pruning; ``generator`` draws it
        (B, F) at once from that generator, as upstream does from the global RNG. By default it is
        ``tie_break_noise``: the same for every clip and call (see the module docstring).
        """
        if not isinstance(kp2d, Tensor):  # raw clips: arrays, nested lists, .npy/.npz paths
            kp2d = self.preprocess(kp2d)
        x = self.check_keypoints(kp2d)
        noise = self._tie_break(x, noise, generator)
        tokens, kept = self.forward_features(x, noise=noise, generator=generator, index=index)
        b, n, j, c = tokens.shape
        return Tokens(
            embeddings=tokens.reshape(b, n, j * c),  # (B, n, J*C): one token per kept frame
            meta={"kept_frame_indices": kept, "num_frames": x.shape[1], "num_joints": j},
        )

    @inference
    def decode(self, tokens: Tokens) -> Tensor:
        """Pose tokens -> 3D poses (B, F, J, 3); seq2frame models give (B, n, J, 3) at the kept frames."""
        if tokens.embeddings is None:
            raise InputError(f"{self.arch} decodes continuous pose tokens; these Tokens hold ids only")
        for key in ("kept_frame_indices", "num_frames", "num_joints"):
            if key not in tokens.meta:
                raise InputError(f"Tokens.meta lacks {key!r}; decode tokens made by {self.arch}.encode")
        b, n, d = tokens.embeddings.shape
        joints = int(tokens.meta["num_joints"])
        if d % joints:
            raise InputError(f"token width {d} is not a multiple of {joints} joints")
        x = tokens.embeddings.to(device=self.device, dtype=self.dtype).reshape(b, n, joints, d // joints)
        kept = tokens.meta["kept_frame_indices"].to(self.device)
        return self.forward_head(x, kept, int(tokens.meta["num_frames"]))

    @inference
    def lift(
        self,
        kp2d: Tensor,
        flip: bool = False,
        stride: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """2D clip (B, F, J, K) of any length -> 3D poses (B, F, J, 3).

        Clips longer than the model's window are cut into overlapping windows (``stride`` frames apart,
        default half a window), and overlapping predictions are averaged. ``flip=True`` adds test-time
        flip augmentation: the mirrored clip is lifted too, mirrored back and averaged (each pass prunes
        its own frames, as upstream's HoT test does). Seq2frame models (TPC-MixSTE) are lifted frame by
        frame with the target frame at the window centre, so they also return (B, F, J, 3).
        """
        x = self.check_keypoints(kp2d, check_frames=False)
        if self.outputs_kept_frames_only:
            return self._lift_centre_frames(x, flip, generator)
        total, count = (
            torch.zeros(*x.shape[:3], 3, device=x.device, dtype=x.dtype),
            torch.zeros(x.shape[1], device=x.device, dtype=x.dtype),
        )
        for start, stop in sliding_windows(x.shape[1], self.max_frames, stride):
            clip = x[:, start:stop]
            noise = self._tie_break(clip, None, generator)
            out = self(clip, noise=noise, generator=generator)[0]
            if flip:
                out = (out + flip_pose(self(flip_pose(clip), noise=noise, generator=generator)[0])) / 2
            total[:, start:stop] += out
            count[start:stop] += 1
        return total / count[None, :, None, None]

    def _lift_centre_frames(self, x: Tensor, flip: bool, generator) -> Tensor:
        # Seq2frame: each output frame is the centre of a window of its own, edge-padded at the ends.
        window = self.max_frames
        pad = (window - 1) // 2
        padded = torch.cat([x[:, :1].expand(-1, pad, -1, -1), x, x[:, -1:].expand(-1, window - 1 - pad, -1, -1)], 1)
        outs = []
        for t in range(x.shape[1]):
            clip = padded[:, t : t + window]
            out, kept = self(clip, noise=self._tie_break(clip, None, generator), generator=generator)
            row = (kept == pad).to(out.dtype).argmax(dim=1)  # the centre frame is always kept
            pose = out[torch.arange(x.shape[0], device=x.device), row]
            if flip:
                out_f, _ = self(flip_pose(clip), index=kept)
                pose = (pose + flip_pose(out_f[torch.arange(x.shape[0], device=x.device), row])) / 2
            outs.append(pose)
        return torch.stack(outs, dim=1)

    @staticmethod
    def _tie_break(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """The noise to prune with: the caller's, else (no generator either) ``tie_break_noise``."""
        if noise is not None or generator is not None:
            return noise
        return tie_break_noise(x.shape[0], x.shape[1]).to(x.device)

    # ---- training -------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """MPJPE (+ 2x mean velocity error, as HoT trains) between ``self(batch["kp2d"])`` and ``batch["pose3d"]``.

        ``pose3d`` (B, F, J, 3) is root-relative; for seq2frame models the target rows at the kept frames
        are compared.
        """
        from zoo.metrics.pose import mean_velocity_error, mpjpe

        out, frames = self(batch["kp2d"])
        target = batch["pose3d"]
        target = target[torch.arange(target.shape[0], device=target.device)[:, None], frames]
        loss = mpjpe(out, target)
        if out.shape[1] > 1 and not self.outputs_kept_frames_only:
            loss = loss + 2.0 * mean_velocity_error(out, target)
        return loss
