"""TokenUnify (Chen et al., arXiv 2405.16847): a Mamba encoder + UNETR decoder for EM neuron segmentation,
pre-trained by mixture token prediction on raw voxel tokens.

Upstream: ydchen0806/TokenUnify (``src/segmamba.py``, ``src/segmamba_ar.py``). Module names below are
upstream's state_dict names, so a converted checkpoint is a prefix strip away.

Shape letters: B batch, D H W volume (z, y, x; z is the coarse EM axis), C channels, N tokens.

The network, input (B, 1, D, H, W):
- encoder ``vit``: 4 stages. Stage i = downsample (stem: Conv3d k (1,7,7) stride 2; later: parameter-free
  InstanceNorm + Conv3d k (1,2,2) stride 2 -- stride 2 in z as well, so z halves every stage) -> GSC
  (gated spatial conv block with a residual) -> depth_i MambaLayers (three-direction Mamba, no residual
  around the layer) -> output branch InstanceNorm + MLP giving outs[i]. The next stage continues from
  the stage features, not from outs[i].
- decoder: MONAI UNETR blocks; encoder1 reads the raw volume, encoder2..4 read outs[0..2], encoder5 reads
  outs[3]; decoder5..2 upsample by 2 and merge the skips; decoder1, a 1x1x1 output conv, then sigmoid
  (3 affinity channels z, y, x for segmentation; 1 channel for pre-training reconstruction).
- optional ``preciever`` (upstream's spelling): the next-token head of the pre-training model, three
  stride-2 3x3x3 convs on the logits and a Linear to one 4x16x16 token.

Input size rules (upstream fails deep inside otherwise; we check up front): D, H, W multiples of 16,
and every stage's token count divisible by ``nslices`` (the interleaved Mamba order), which comes down
to (D/16)(H/16)(W/16) divisible by 5 with the defaults; the next-token head fixes the whole size.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em_volume.mamba import BACKENDS, MambaLayer
from em_volume.pretext import (
    TASKS,
    TOKEN_SIZE,
    next_token_prefix,
    random_token_mask,
    reconstruction_loss,
    task_for_step,
)
from zoo.api import Tokens, ZooModel, check_float_tensor, check_input_file, inference
from zoo.errors import ConfigError, CorruptFileError, InputError, NotSupportedError

logger = logging.getLogger(__name__)

OBJECTIVES = ("affinity", "mixture", "joint", *TASKS)

# Upstream's scale factories (src/models_mamba.py). All use depths (2, 2, 2, 2) and kernel (1, 5, 5).
SCALES: dict[str, dict[str, Any]] = {
    "base": {"feat_size": (32, 64, 128, 256), "hidden_size": 512},  # 28.3 M, the paper's EMmamba
    "small": {"feat_size": (64, 128, 256, 512), "hidden_size": 1024},  # ~113 M ("100M")
    "mid": {"feat_size": (96, 192, 384, 768), "hidden_size": 1024},  # ~207 M ("200M")
    "large": {"feat_size": (144, 288, 576, 1104), "hidden_size": 2048},  # ~507 M ("500M")
    "huge": {"feat_size": (192, 384, 768, 1536), "hidden_size": 3072},  # ~1009 M ("1B")
}


@dataclass(frozen=True)
class TokenUnifyConfig:
    """Defaults = upstream's fine-tuned segmentation network (28.3 M parameters, 16x160x160 crops)."""

    in_chans: int = 1
    out_chans: int = 3  # 3 affinities (z, y, x) for segmentation; 1 for the pre-training reconstruction
    depths: tuple[int, ...] = (2, 2, 2, 2)
    feat_size: tuple[int, ...] = (32, 64, 128, 256)
    hidden_size: int = 512
    kernel_size: tuple[int, int, int] = (1, 5, 5)  # decoder blocks; the pre-training model used (1, 3, 3)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    nslices: int = 5  # interleave of the third Mamba order, 5 at every stage in TokenUnify
    next_token_head: bool = False  # upstream's "preciever" (pre-training checkpoints only)
    head_input_size: tuple[int, int, int] = (16, 160, 160)  # the only volume size the head's Linear fits
    crop_size: tuple[int, int, int] = (16, 160, 160)  # sliding-window crop for volumes of any size
    overlap: float = 0.25  # sliding-window overlap, Gaussian blending (upstream's inference)
    objective: str = "affinity"  # what training_loss trains: see OBJECTIVES
    mask_ratio: float | None = 0.4  # random-token ratio; None = U(0.2, 0.8) per sample
    fill: str = "noise"  # blanked tokens become "noise" N(0, 1) or "zero"
    pretext_block: int = 1  # mixture schedule: steps per task before moving to the next
    merge_threshold: float = 0.5  # agglomeration threshold on 1 - affinity
    scan_backend: str = "auto"

    def __post_init__(self):
        if len(self.depths) != 4 or len(self.feat_size) != 4:
            raise ConfigError(f"TokenUnifyConfig.depths/feat_size need 4 stages (UNETR decoder), got {self.depths}")
        if any(d < 0 for d in self.depths) or any(f <= 0 for f in self.feat_size):
            raise ConfigError(f"TokenUnifyConfig.depths/feat_size must be positive, got {self.depths}/{self.feat_size}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"TokenUnifyConfig.objective={self.objective!r}; choose one of {OBJECTIVES}")
        if self.objective != "affinity" and self.out_chans != self.in_chans:
            raise ConfigError(
                f"TokenUnifyConfig.objective={self.objective!r} reconstructs the input: "
                f"out_chans must be {self.in_chans}"
            )
        if self.objective in ("next_token", "mixture", "joint") and not self.next_token_head:
            raise ConfigError(f"TokenUnifyConfig.objective={self.objective!r} needs next_token_head=True")
        if self.fill not in ("noise", "zero"):
            raise ConfigError(f"TokenUnifyConfig.fill={self.fill!r}; choose 'noise' or 'zero'")
        if self.mask_ratio is not None and not 0 < self.mask_ratio < 1:
            raise ConfigError(f"TokenUnifyConfig.mask_ratio={self.mask_ratio} must be in (0, 1) or None")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"TokenUnifyConfig.overlap={self.overlap} must be in [0, 1)")
        if self.scan_backend not in BACKENDS:
            raise ConfigError(f"TokenUnifyConfig.scan_backend={self.scan_backend!r}; choose one of {BACKENDS}")
        for name in ("crop_size", "head_input_size"):
            try:
                check_volume_size(getattr(self, name), self.nslices)
            except InputError as err:
                raise ConfigError(f"TokenUnifyConfig.{name}: {err}") from err

    @classmethod
    def scale(cls, name: str, **overrides) -> TokenUnifyConfig:
        """One of upstream's scales ("base" 28.3M, "small" ~113M, "mid" ~207M, "large" ~507M, "huge" ~1009M)."""
        if name not in SCALES:
            raise ConfigError(f"unknown TokenUnify scale {name!r}; choose one of {', '.join(SCALES)}")
        return cls(**{**SCALES[name], **overrides})


def check_volume_size(size, nslices: int = 5) -> None:
    """Raise InputError unless (D, H, W) passes the network: multiples of 16 and stage tokens divisible."""
    size = tuple(int(s) for s in size)
    if len(size) != 3 or any(s <= 0 for s in size):
        raise InputError(f"volume size must be (D, H, W) with positive sides, got {size}")
    if any(s % 16 for s in size):
        raise InputError(
            f"volume size {size}: D, H and W must each be a multiple of 16 (4 stride-2 stages that the decoder "
            "undoes); crop or pad it, or use segment() which slides a valid crop over any volume"
        )
    for stage in range(4):
        tokens = math.prod(s >> (stage + 1) for s in size)
        if tokens % nslices:
            raise InputError(
                f"volume size {size}: stage {stage} has {tokens} Mamba tokens, not divisible by nslices={nslices} "
                f"(the interleaved scan order); (D/16)*(H/16)*(W/16) must divide by {nslices}, "
                "e.g. 16x80x80 or 16x160x160"
            )


# ---- blocks -------------------------------------------------------------------------------------------
class GSC(nn.Module):
    """Gated spatial convolution: two 3x3x3 conv branches and a 1x1x1 branch, merged by a 1x1x1 conv, plus x."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv3d(channels, channels, 3, 1, 1)
        self.proj2 = nn.Conv3d(channels, channels, 3, 1, 1)
        self.proj3 = nn.Conv3d(channels, channels, 1, 1, 0)
        self.proj4 = nn.Conv3d(channels, channels, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        norm_relu = lambda t: F.relu(F.instance_norm(t, eps=1e-5))  # parameter-free InstanceNorm3d
        x1 = norm_relu(self.proj2(norm_relu(self.proj(x))))
        x2 = norm_relu(self.proj3(x))
        return norm_relu(self.proj4(x1 + x2)) + x


class MlpChannel(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MambaEncoder(nn.Module):
    def __init__(self, config: TokenUnifyConfig):
        super().__init__()
        dims = config.feat_size
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(config.in_chans, dims[0], kernel_size=(1, 7, 7), stride=2, padding=(0, 3, 3)))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.InstanceNorm3d(dims[i]), nn.Conv3d(dims[i], dims[i + 1], kernel_size=(1, 2, 2), stride=2)
                )
            )
        self.gscs = nn.ModuleList([GSC(d) for d in dims])
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    MambaLayer(d, config.d_state, config.d_conv, config.expand, config.nslices, config.scan_backend)
                    for _ in range(depth)
                ]
            )
            for d, depth in zip(dims, config.depths)
        )
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.InstanceNorm3d(d))
        self.mlps = nn.ModuleList([MlpChannel(d, 2 * d) for d in dims])

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(4):
            x = self.stages[i](self.gscs[i](self.downsample_layers[i](x)))
            outs.append(self.mlps[i](getattr(self, f"norm{i}")(x)))
        return outs


class NextTokenHead(nn.Module):
    """Upstream's "Preciever": logits (B, 1, D, H, W) -> one token (B, 1, 4, 16, 16) (before the sigmoid)."""

    def __init__(self, input_size, token_size=TOKEN_SIZE):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 12, 3, 2, 1)
        self.conv2 = nn.Conv3d(12, 12, 3, 2, 1)
        self.conv3 = nn.Conv3d(12, 1, 3, 2, 1)
        self.token_size = tuple(token_size)
        reduced = [s for s in input_size]
        for _ in range(3):
            reduced = [(s - 1) // 2 + 1 for s in reduced]
        self.mlp = nn.Linear(math.prod(reduced), math.prod(token_size))

    def forward(self, logits: Tensor) -> Tensor:
        x = F.relu(self.conv1(logits))
        x = F.relu(self.conv2(x))
        x = self.conv3(x).flatten(1)
        return self.mlp(x).view(-1, 1, *self.token_size)


# ---- the model ----------------------------------------------------------------------------------------
class TokenUnify(ZooModel):
    """TokenUnify segmentation / pre-training network. ``encode`` gives the deepest Mamba stage's tokens,
    ``decode`` runs the UNETR decoder (affinities, or the reconstruction of a pre-training model),
    ``segment`` turns a whole volume into neuron labels."""

    arch = "tokenunify"
    modality = "em_volume"
    config_class = TokenUnifyConfig
    license = "mit"
    supports_decode = True
    supports_training = True
    tasks = frozenset({"segment"})

    def __init__(self, config: TokenUnifyConfig | None = None, *, device=None, dtype=None):
        config = config or TokenUnifyConfig()
        super().__init__(config)
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock

        f, k = config.feat_size, tuple(config.kernel_size)
        basic = lambda cin, cout: UnetrBasicBlock(3, cin, cout, k, 1, "instance", res_block=True)
        up = lambda cin, cout: UnetrUpBlock(3, cin, cout, k, 2, "instance", res_block=True)
        with self.building(device, dtype):
            self.vit = MambaEncoder(config)
            self.encoder1 = basic(config.in_chans, f[0])
            self.encoder2 = basic(f[0], f[1])
            self.encoder3 = basic(f[1], f[2])
            self.encoder4 = basic(f[2], f[3])
            self.encoder5 = basic(f[3], config.hidden_size)
            self.decoder5 = up(config.hidden_size, f[3])
            self.decoder4 = up(f[3], f[2])
            self.decoder3 = up(f[2], f[1])
            self.decoder2 = up(f[1], f[0])
            self.decoder1 = basic(f[0], f[0])
            self.out = UnetOutBlock(3, f[0], config.out_chans)
            if config.next_token_head:
                self.preciever = NextTokenHead(config.head_input_size)
        self._steps_seen = 0  # mixture schedule position when a batch carries no "step"

    # ---- network ----------------------------------------------------------------------------------
    def check_input(self, x: Any, name: str = "volume") -> Tensor:
        """Raise InputError unless x is a finite float (B, in_chans, D, H, W) of a size the network takes."""
        if isinstance(x, Tensor) and not x.is_floating_point() and x.dim() == 5:
            raise InputError(
                f"{name} has integer dtype {x.dtype}; scale it to floats in [0, 1] first (model.preprocess does it)"
            )
        check_float_tensor(x, name, 5)
        if x.shape[1] != self.config.in_chans:
            raise InputError(f"{name} must be (B, {self.config.in_chans}, D, H, W), got shape {tuple(x.shape)}")
        check_volume_size(x.shape[2:], self.config.nslices)
        return x

    def decode_features(self, volume: Tensor, outs: list[Tensor]) -> Tensor:
        """The UNETR decoder: raw volume + the 4 encoder outputs -> logits (B, out_chans, D, H, W)."""
        enc1 = self.encoder1(volume)
        enc2, enc3, enc4 = self.encoder2(outs[0]), self.encoder3(outs[1]), self.encoder4(outs[2])
        x = self.decoder5(self.encoder5(outs[3]), enc4)
        x = self.decoder2(self.decoder3(self.decoder4(x, enc3), enc2), enc1)
        return self.out(self.decoder1(x))

    def forward_logits(self, volume: Tensor) -> Tensor:
        return self.decode_features(volume, self.vit(volume))

    def forward(self, volume: Tensor) -> Tensor:
        """(B, 1, D, H, W) in [0, 1] -> sigmoid outputs (B, out_chans, D, H, W)."""
        self.check_input(volume)
        return torch.sigmoid(self.forward_logits(volume))

    def next_token_logits(self, logits: Tensor) -> Tensor:
        if not self.config.next_token_head:
            raise NotSupportedError("this TokenUnify has no next-token head (config.next_token_head=False)")
        if tuple(logits.shape[2:]) != tuple(self.config.head_input_size):
            raise InputError(
                f"the next-token head was built for volumes of {tuple(self.config.head_input_size)}, "
                f"got {tuple(logits.shape[2:])}"
            )
        return self.preciever(logits)

    # ---- the zoo contract -------------------------------------------------------------------------
    def sample_inputs(self) -> list:
        """Synthetic EM volumes for demos, comparisons and smoke tests: the bundled ``em_volume/samples/*.npz``
        (volume + labels, so fine-tuning can use them) when the model's crop is their shape, else one
        volume (D, H, W) generated at the crop size."""
        from em_volume.synth import SynthConfig, make_volume

        bundled = sorted((Path(__file__).resolve().parent / "samples").glob("*.npz"))
        if bundled:
            with np.load(bundled[0], allow_pickle=False) as first:
                if tuple(first["volume"].shape) == tuple(self.config.crop_size):
                    return bundled
        raw, _ = make_volume(999, SynthConfig(shape=tuple(self.config.crop_size)))
        return [raw]

    def load_item(self, path) -> Any:
        """A volume file (.h5/.hdf5, .tif/.tiff, .npy), or ``.npz`` with ``volume`` and, for training, ``labels``."""
        path = Path(path)
        if path.suffix.lower() != ".npz":
            return read_volume(path)
        path = check_input_file(path, "volume file")
        try:
            with np.load(path, allow_pickle=False) as data:
                item = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # empty, truncated, not numpy
            raise CorruptFileError(str(path), f"not a readable .npz file ({err})") from err
        if "volume" not in item:
            raise InputError(f"{path}: an .npz volume needs a 'volume' array, found {sorted(item)}")
        return item

    def training_batch(self, items: list) -> dict[str, Tensor]:
        """Volumes with their labels (``.npz`` items) -> {"volume", "labels"}, what ``training_loss`` takes."""
        if not all(isinstance(item, dict) and "labels" in item for item in items):
            raise InputError("affinity training needs volumes with labels: .npz files holding volume and labels")
        labels = torch.as_tensor(np.stack([item["labels"] for item in items]).astype(np.int64))
        return {"volume": self.preprocess(items), "labels": labels.to(self.device)}

    def preprocess(self, raw: Any, key: str | None = None) -> Tensor:
        """A volume -> (B, 1, D, H, W) float32 in [0, 1].

        Accepts a numpy array or tensor (D, H, W), (B, D, H, W) or (B, 1, D, H, W), a path to .h5/.hdf5
        (dataset ``key``, or the only / first 3-D dataset), .tif/.tiff or .npy, or a list of those of one shape.
        Integer data is min-max
        scaled over the whole volume (upstream's scaler); floats must already lie in [0, 1] (others are an
        InputError, never rescaled silently).
        """
        if isinstance(raw, dict):  # an .npz item from load_item
            if "volume" not in raw:
                raise InputError(f"a volume dict needs a 'volume' array, found keys {sorted(raw)}")
            raw = raw["volume"]
        if isinstance(raw, (str, os.PathLike)) and Path(raw).suffix.lower() == ".npz":
            raw = self.load_item(raw)["volume"]
        if isinstance(raw, (list, tuple)):  # a batch of volumes (paths or arrays) of one shape
            if not raw:
                raise InputError("empty batch: no volumes given")
            volumes = [self.preprocess(item, key=key) for item in raw]
            shapes = sorted({tuple(v.shape[2:]) for v in volumes})
            if len(shapes) > 1:
                raise InputError(f"volumes in one batch must share a shape (D, H, W), got {shapes}")
            return torch.cat(volumes)
        if isinstance(raw, (str, os.PathLike)):
            raw = read_volume(raw, key=key)
        if isinstance(raw, np.ndarray):
            if raw.dtype == np.bool_ or raw.dtype.kind not in "uif":
                raise InputError(f"volume dtype {raw.dtype} is not numeric")
            raw = torch.from_numpy(np.ascontiguousarray(raw))
        if not isinstance(raw, Tensor):
            raise InputError(f"volume must be a path, numpy array or tensor, got {type(raw).__name__}")
        if raw.numel() == 0:
            raise InputError(f"volume is empty (shape {tuple(raw.shape)})")
        if raw.dim() == 3:
            raw = raw[None, None]
        elif raw.dim() == 4:
            raw = raw[:, None]
        elif raw.dim() != 5:
            raise InputError(f"volume must have 3 (D, H, W), 4 or 5 dimensions, got shape {tuple(raw.shape)}")
        if not raw.is_floating_point():
            v = raw.double()
            lo, hi = v.amin(dim=(1, 2, 3, 4), keepdim=True), v.amax(dim=(1, 2, 3, 4), keepdim=True)
            raw = ((v - lo) / (hi - lo + 1e-8)).float()
        if not torch.isfinite(raw).all():
            raise InputError("volume contains NaN or infinite values")
        check_unit_range(raw)
        return raw.to(device=self.device, dtype=self.dtype)

    def _as_batch(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 5:
            x = self.preprocess(x)
        x = self.check_input(x.to(device=self.device, dtype=self.dtype))
        check_unit_range(x)
        return x

    @inference
    def encode(self, x: Any, stage: int = 3) -> Tokens:
        """Volume -> Tokens: embeddings (B, N, C) = the encoder output of ``stage`` (default the deepest),
        one token per voxel of that stage's grid in z-major order. ``meta`` holds ``grid`` (d, h, w),
        ``input_size`` (D, H, W), ``stage``, and the per-sample tensors ``decode`` needs: the input
        volume and the other stages' outputs (the UNETR decoder reads skips from every stage)."""
        if stage not in range(4):
            raise InputError(f"stage must be 0..3, got {stage}")
        volume = self._as_batch(x)
        outs = self.vit(volume)
        feat = outs[stage]
        b, c = feat.shape[:2]
        meta = {"grid": list(feat.shape[2:]), "input_size": list(volume.shape[2:]), "stage": stage, "volume": volume}
        meta.update({f"stage{i}": o for i, o in enumerate(outs) if i != stage})
        return Tokens(embeddings=feat.reshape(b, c, -1).transpose(1, 2).contiguous(), meta=meta)

    @inference
    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens from ``encode`` -> sigmoid outputs (B, out_chans, D, H, W): affinities for a segmentation
        model, the reconstructed volume for a pre-training one. The tokens of the encoded stage may be
        edited; the other stages and the volume come from ``meta``."""
        if tokens.embeddings is None or "grid" not in tokens.meta or "volume" not in tokens.meta:
            raise InputError("decode needs Tokens from TokenUnify.encode (embeddings + meta grid/volume/stages)")
        stage = int(tokens.meta.get("stage", 3))
        grid = [int(g) for g in tokens.meta["grid"]]
        b, n, c = tokens.embeddings.shape
        if n != math.prod(grid) or c != self.config.feat_size[stage]:
            raise InputError(
                f"token embeddings {tuple(tokens.embeddings.shape)} do not fit "
                f"grid {grid} x {self.config.feat_size[stage]}"
            )
        outs = []
        for i in range(4):
            if i == stage:
                feat = tokens.embeddings.transpose(1, 2).reshape(b, c, *grid)
            elif f"stage{i}" in tokens.meta:
                feat = tokens.meta[f"stage{i}"]
            else:
                raise InputError(f"Tokens.meta lacks 'stage{i}', which the UNETR decoder needs as a skip")
            outs.append(feat.to(device=self.device, dtype=self.dtype))
        volume = tokens.meta["volume"].to(device=self.device, dtype=self.dtype)
        return torch.sigmoid(self.decode_features(volume, outs))

    @inference
    def predict(self, x: Any, batch_size: int = 1) -> Tensor:
        """Sigmoid outputs for a volume of any size: sliding ``crop_size`` windows, overlap, Gaussian blending.
        Volumes smaller than the crop are padded."""
        from monai.inferers import sliding_window_inference

        volume = x if isinstance(x, Tensor) and x.dim() == 5 else self.preprocess(x)
        check_float_tensor(volume, "volume", 5)
        volume = volume.to(device=self.device, dtype=self.dtype)
        return sliding_window_inference(
            volume,
            roi_size=tuple(self.config.crop_size),
            sw_batch_size=batch_size,
            predictor=lambda v: torch.sigmoid(self.forward_logits(v)),
            overlap=self.config.overlap,
            mode="gaussian",
        )

    @inference
    def segment(self, x: Any, threshold: float | None = None, return_affinities: bool = False, batch_size: int = 4):
        """A volume (path, array or tensor; one sample) -> neuron labels (D, H, W) int64, 0 = boundary.

        Affinities from :meth:`predict`, then 2-D watershed fragments per slice and agglomeration
        (waterz where installed, else scikit-image's hierarchical merging); see :mod:`em_volume.segment`.
        """
        from em_volume.segment import affinities_to_segmentation

        if self.config.out_chans != 3:
            raise NotSupportedError(
                f"segment needs an affinity model (out_chans=3), this one has {self.config.out_chans}"
            )
        affs = self.predict(x, batch_size=batch_size)
        if affs.shape[0] != 1:
            raise InputError(f"segment takes one volume at a time, got a batch of {affs.shape[0]}")
        aff_np = affs[0].float().cpu().numpy()
        labels = affinities_to_segmentation(aff_np, self.config.merge_threshold if threshold is None else threshold)
        labels = torch.from_numpy(labels.astype(np.int64))
        return (labels, affs[0]) if return_affinities else labels

    # ---- training ---------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> Tensor:
        """The loss of ``config.objective`` for a batch dict.

        Keys: ``volume`` (B, 1, D, H, W) float in [0, 1] (the clean crop); for "affinity" also ``labels``
        (B, D, H, W) int (0 = background) or ``affinity`` (B, 3, D, H, W); optional ``step`` (int, the
        mixture schedule position; counted internally when absent), ``generator`` (torch.Generator) and
        ``task`` (force one of "random", "next_token", "next_all", "joint").
        """
        volume = batch["volume"]
        self.check_input(volume)
        objective = batch.get("task") or self.config.objective
        generator = batch.get("generator")
        if objective == "affinity":
            return self._affinity_loss(volume, batch)
        if objective == "mixture":
            step = batch.get("step")
            if step is None:
                step, self._steps_seen = self._steps_seen, self._steps_seen + 1
            objective = task_for_step(int(step), self.config.pretext_block)
        fill = self.config.fill
        if objective == "random":
            masked, _ = random_token_mask(volume, self.config.mask_ratio, fill, generator)
            return reconstruction_loss(torch.sigmoid(self.forward_logits(masked)), volume)
        masked, next_token, _ = next_token_prefix(volume, None, fill, generator)
        logits = self.forward_logits(masked)
        if objective == "next_all":
            return reconstruction_loss(torch.sigmoid(logits), volume)
        next_loss = F.mse_loss(torch.sigmoid(self.next_token_logits(logits)), next_token)
        if objective == "next_token":
            return next_loss
        if objective == "joint":  # upstream's auto_mode 1: next-all + next-token on the same input
            return reconstruction_loss(torch.sigmoid(logits), volume) + next_loss
        raise ConfigError(f"unknown training objective {objective!r}")

    def _affinity_loss(self, volume: Tensor, batch: dict[str, Any]) -> Tensor:
        from em_volume.segment import labels_to_affinities, weighted_affinity_loss

        if "affinity" in batch:
            target = batch["affinity"].to(volume)
        elif "labels" in batch:
            target = labels_to_affinities(batch["labels"]).to(volume)
        else:
            raise InputError("an affinity training batch needs 'labels' (B, D, H, W) or 'affinity' (B, 3, D, H, W)")
        if target.shape[0] != volume.shape[0] or tuple(target.shape[2:]) != tuple(volume.shape[2:]):
            raise InputError(f"affinity target {tuple(target.shape)} does not match volume {tuple(volume.shape)}")
        return weighted_affinity_loss(torch.sigmoid(self.forward_logits(volume)), target)


# ---- volume files ------------------------------------------------------------------------------------
def check_unit_range(volume: Tensor) -> None:
    """Raise InputError unless a float volume lies in [0, 1] (a 1e-3 margin for rounding). Floats outside are
    not guessed at (0..255? 0..1000? z-scores?); integer volumes are min-max scaled by ``preprocess``."""
    if not volume.is_floating_point() or volume.numel() == 0:
        return
    lo, hi = float(volume.min()), float(volume.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(
            f"a float volume must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; pass integer data (uint8, "
            "uint16: min-max scaled for you) or scale it first, e.g. (v - v.min()) / (v.max() - v.min())"
        )


def read_volume(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Read a 3-D volume from .h5/.hdf5/.hdf (dataset ``key``), .tif/.tiff or .npy."""
    path = check_input_file(path, "volume file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".h5", ".hdf5", ".hdf"):
            import h5py

            with h5py.File(path, "r") as f:
                if key is None:
                    names = []
                    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim >= 3 else None)
                    if not names:
                        raise InputError(f"{path} holds no 3-D dataset")
                    key = "main" if "main" in names else names[0]
                if key not in f:
                    raise InputError(f"{path} has no dataset {key!r}")
                return f[key][()]
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except InputError:
        raise
    except Exception as err:
        raise CorruptFileError(str(path), f"cannot be read as a volume ({err})") from err
    raise InputError(f"volume file {path}: unsupported suffix {suffix!r}; use .h5/.hdf5, .tif/.tiff or .npy")
