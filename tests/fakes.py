"""Every test-only model of the suite, and the fake data they read. Nothing is registered on import.

Tests that load a fake by its arch (a saved folder through ``zoo.load``, the demo app, the tools)
use the ``fakes`` fixture of tests/conftest.py, which registers ``ARCHS`` for the test only (or
``tiny_arch`` for ``TinyModel`` alone). A subprocess runs a tool with the fakes registered as

    python -m tests.fakes batch|finetune ARGS...

Each fake declares its capabilities like a family does (``supports_decode``, ``supports_training``,
``tasks``), so the tools treat it as they treat the real ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vision.base import ImageTokenizer
from zoo.api import Tokens, ZooModel, inference
from zoo.errors import ConfigError, InputError
from zoo.quant import VectorQuantizer
from zoo.text.tokenizers import ByteTokenizer


# ---- a tiny model for the core's tests --------------------------------------------------------------
@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 16
    dim: int = 4

    def __post_init__(self):
        if self.vocab_size < 2:
            raise ConfigError(f"TinyConfig.vocab_size={self.vocab_size} must be at least 2")
        if self.dim < 1:
            raise ConfigError(f"TinyConfig.dim={self.dim} must be positive")


class TinyModel(ZooModel):
    """ids (B, N) -> embeddings (B, N, D) through a table and a linear map; decode is the nearest row."""

    arch = "test-tiny"
    modality = "text"
    config_class = TinyConfig
    supports_decode = True

    def __init__(self, config: TinyConfig = TinyConfig(), *, device=None, dtype=None):
        super().__init__(config)
        with self.building(device, dtype):
            self.table = nn.Embedding(config.vocab_size, config.dim)
            self.proj = nn.Linear(config.dim, config.dim)

    @inference
    def encode(self, ids: torch.Tensor) -> Tokens:
        return Tokens(ids=ids, embeddings=self.proj(self.table(ids)))

    @inference
    def decode(self, tokens: Tokens) -> torch.Tensor:
        rows = self.proj(self.table.weight)  # (V, D)
        return torch.cdist(tokens.embeddings.float(), rows.float()[None]).argmin(-1)  # (B, N)


def seeded(seed: int, config: TinyConfig = TinyConfig()) -> TinyModel:
    """A TinyModel whose weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return TinyModel(config).eval()


# ---- an "upstream release" of the tiny model and its converter, for zoo.official's tests -----------------
CONVERTER_TARGET = "tests.fakes:convert_checkpoint"
CONVERTER_VERSION = 1


def save_upstream_release(model: TinyModel, path, extra: dict | None = None) -> None:
    """The tiny model as an upstream training script would pickle it: ``net.``-prefixed weights + training state."""
    checkpoint = {f"net.{k}": v for k, v in model.state_dict().items()}
    checkpoint.update({"epoch": 7, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, **(extra or {})})
    torch.save(checkpoint, path)


def convert_checkpoint(arch: str, src, out, bias_shift=None, dim: int | None = None, **unknown):
    """Upstream release (``save_upstream_release``) -> zoo folder. ``bias_shift``: a second upstream file (a
    pickled tensor) added to ``proj.bias``, as a multi-file release feeds a converter option.

    For the cache tests: every call appends a line to $TINY_CONVERT_LOG; $TINY_CONVERT_SLEEP seconds pass
    before the folder is written; $TINY_CONVERT_CRASH=1 kills the process halfway through writing it.
    """
    import os
    import time
    from pathlib import Path

    from zoo.pickles import load_weights_only

    if unknown:
        raise ConfigError(f"unknown options {sorted(unknown)}")
    if os.environ.get("TINY_CONVERT_LOG"):
        with open(os.environ["TINY_CONVERT_LOG"], "a") as log:
            log.write(f"{os.getpid()} {Path(src).name}\n")
    state = load_weights_only(src)
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    vocab_size, width = weights["table.weight"].shape
    model = TinyModel(TinyConfig(vocab_size=vocab_size, dim=dim or width))
    model.load_state_dict(weights, strict=True)
    if bias_shift is not None:
        with torch.no_grad():
            model.proj.bias += load_weights_only(bias_shift)
    time.sleep(float(os.environ.get("TINY_CONVERT_SLEEP", "0")))
    out = Path(out)
    if os.environ.get("TINY_CONVERT_CRASH"):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"half a file")
        os._exit(3)
    model.save_pretrained(out)
    return out


# ---- text -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlowBytesConfig:
    pad_id: int = 256
    seconds_per_batch: float = 0.0


class SlowBytes(ByteTokenizer):
    """Byte tokenizer that sleeps per batch (to be killed mid-run) and fails on text holding BOOM."""

    arch = "test-slow-bytes"
    config_class = SlowBytesConfig

    def encode(self, text):
        time.sleep(self.config.seconds_per_batch)
        batch = [text] if isinstance(text, str) else list(text)
        if any("BOOM" in t for t in batch):
            raise InputError("this text makes the test tokenizer fail")
        return super().encode(batch)


# ---- audio-like -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaveConfig:
    samples_per_token: int = 4


class WaveTokens(ZooModel):
    """Audio-like: .npy waveforms of varying length, bucketed by length; ids = quantized means (9 values)."""

    arch = "test-wave"
    modality = "audio"
    config_class = WaveConfig

    def __init__(self, config: WaveConfig = WaveConfig(), *, device=None, dtype=None):
        super().__init__(config)
        self.batches_seen: list[list[int]] = []

    @property
    def codebook_size(self) -> int:
        return 9

    def load_item(self, path: Path) -> np.ndarray:
        return np.load(path)

    def batch_key(self, item: np.ndarray) -> int:
        return len(item)

    def collate(self, items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in items])
        wave = torch.zeros(len(items), int(lengths.max()))
        for i, x in enumerate(items):
            wave[i, : len(x)] = torch.from_numpy(x)
        return wave, lengths

    def encode(self, batch):
        wave, lengths = batch
        self.batches_seen.append(lengths.tolist())
        step = self.config.samples_per_token
        frames = wave[:, : wave.shape[1] // step * step].reshape(len(wave), -1, step).mean(-1)
        ids = ((frames.clamp(-1, 1) + 1) * 4).round().long()
        mask = torch.arange(ids.shape[1])[None] < (lengths // step)[:, None]
        return Tokens(ids=ids, mask=mask, meta={"codebook_size": 9})


class TimedWaveTokens(WaveTokens):
    """WaveTokens whose Tokens record the clip lengths and rate, as audio families do."""

    def encode(self, batch):
        tokens = super().encode(batch)
        tokens.meta.update(num_samples=batch[1], sample_rate=80)
        return tokens


class TinyWav(WaveTokens):
    """WaveTokens reading WAV files and recording the clip length and rate in the Tokens' meta."""

    arch = "test-wav"

    def load_item(self, path) -> np.ndarray:
        import soundfile

        wave, self.rate = soundfile.read(path, dtype="float32")
        return wave

    def encode(self, batch):
        tokens = super().encode(batch)
        tokens.meta.update(num_samples=batch[1], sample_rate=self.rate)
        return tokens


# ---- image-like -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyImageVQConfig:
    hidden: int = 16
    codebook_size: int = 32
    code_dim: int = 4
    dropout: float = 0.1


class TinyImageVQ(ImageTokenizer):
    """An 8x8 grey-image VQ autoencoder: 4x4 ids per image. Trains in seconds on CPU."""

    arch = "test-tiny-image-vq"
    config_class = TinyImageVQConfig
    supports_decode = True
    supports_training = True

    def __init__(self, config: TinyImageVQConfig = TinyImageVQConfig(), *, device=None, dtype=None):
        super().__init__(config)
        c = config
        with self.building(device, dtype):
            self.encoder = nn.Sequential(
                nn.Conv2d(1, c.hidden, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Dropout(c.dropout),
                nn.Conv2d(c.hidden, c.code_dim, 1),
            )
            self.quantizer = VectorQuantizer(c.codebook_size, c.code_dim, learnable=True)
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(c.code_dim, c.hidden, 4, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(c.hidden, 1, 3, padding=1),
            )

    def load_item(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(np.load(path)).float()

    def sample_inputs(self) -> list:
        return []  # its 8x8 .npy images come from make_images, not the bundled pictures

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)[:, None]  # (B, 1, 8, 8)

    def _forward(self, x: torch.Tensor):
        z = self.encoder(x).permute(0, 2, 3, 1)  # (B, 4, 4, D)
        q, ids = self.quantizer(z)
        return z, q, ids, self.decoder(q.permute(0, 3, 1, 2))

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        z, q, ids, reconstruction = self._forward(x)
        codebook = F.mse_loss(self.quantizer.ids_to_codes(ids), z.detach())
        return F.mse_loss(reconstruction, x) + codebook + 0.25 * F.mse_loss(z, q.detach())

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        return {"mse": float(F.mse_loss(self._forward(x)[3], x))}

    @inference
    def encode(self, x: torch.Tensor) -> Tokens:
        ids = self._forward(x)[2]
        return Tokens(ids=ids.reshape(len(x), -1), meta={"codebook_size": self.config.codebook_size})

    @inference
    def decode(self, tokens: Tokens) -> torch.Tensor:
        codes = self.quantizer.ids_to_codes(tokens.ids.reshape(-1, 4, 4))
        return self.decoder(codes.permute(0, 3, 1, 2))


class ScoredImageVQ(TinyImageVQ):
    """The tiny image VQ with its own compare hooks: pixels and a PSNR of its own."""

    arch = "test-scored-image-vq"

    def input_units(self, item: torch.Tensor) -> tuple[float, str]:
        return float(item.shape[-2] * item.shape[-1]), "pixel"

    def reconstruct(self, batch: torch.Tensor, tokens) -> list[torch.Tensor]:
        return list(self.decode(tokens)[:, 0])

    def reconstruction_quality(self, items, reconstructions) -> dict:
        import math

        mse = float(torch.stack([(a - b).pow(2).mean() for a, b in zip(items, reconstructions)]).mean())
        return {"name": "PSNR dB", "value": 10 * math.log10(4 / mse), "protocol": "peak-to-peak 2 (range [-1, 1])"}


class PlainImageVQ(TinyImageVQ):
    """The tiny image VQ as a family might first write it: no compare hooks, no codebook size in meta."""

    arch = "test-plain-image-vq"

    def encode(self, x):
        tokens = super().encode(x)
        tokens.meta.clear()
        return tokens


class TinyPNGVQ(TinyImageVQ):
    """The tiny image VQ reading 8x8 grey PNGs, as an image family reads its files."""

    arch = "test-png-vq"

    def load_item(self, path) -> torch.Tensor:
        from PIL import Image

        grey = Image.open(path).convert("L").resize((8, 8))
        return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 127.5 - 1)


# ---- pose- and volume-like --------------------------------------------------------------------------
class EchoPreprocess(ZooModel):
    """A family without a collate hook whose preprocess hands back what it got."""

    arch = "test-echo"
    modality = "pose"

    def preprocess(self, raw):
        return raw


@dataclass(frozen=True)
class TinyLifterConfig:
    keep_every: int = 2


class TinyLifter(ZooModel):
    """Pose-like: keeps every other frame as a token; lifts 2D to 3D with depth 0; one sample clip."""

    arch = "test-tiny-lifter"
    modality = "pose"
    config_class = TinyLifterConfig
    tasks = frozenset({"lift"})
    skeleton_parents = (-1, 0, 1, 2)

    def preprocess(self, raw) -> torch.Tensor:
        return torch.as_tensor(np.asarray(raw), dtype=torch.float32)  # (B, F, J, 2)

    def sample_inputs(self) -> list[np.ndarray]:
        return [np.random.default_rng(0).uniform(-1, 1, (10, 4, 2)).astype(np.float32)]

    def encode(self, kp2d: torch.Tensor) -> Tokens:
        kept = torch.arange(0, kp2d.shape[1], self.config.keep_every)
        b, _, j, c = kp2d.shape
        return Tokens(
            embeddings=kp2d[:, kept].reshape(b, len(kept), j * c), meta={"kept_frame_indices": kept.expand(b, -1)}
        )

    def lift(self, kp2d: torch.Tensor) -> torch.Tensor:
        return torch.cat([kp2d, torch.zeros_like(kp2d[..., :1])], dim=-1)


@dataclass(frozen=True)
class TinyVolumeConfig:
    patch: int = 4


class TinyVolume(ZooModel):
    """EM-like: ids = quantized mean of 4x4x4 patches; segment = threshold at 0 into labels 0/1."""

    arch = "test-tiny-volume"
    modality = "em_volume"
    config_class = TinyVolumeConfig
    tasks = frozenset({"segment"})

    @property
    def codebook_size(self) -> int:
        return 9

    def preprocess(self, raw) -> torch.Tensor:
        return torch.as_tensor(np.asarray(raw), dtype=torch.float32)  # (B, D, H, W)

    def sample_inputs(self) -> list[np.ndarray]:
        return [np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32)]

    def encode(self, volume: torch.Tensor) -> Tokens:
        p = self.config.patch
        b, d, h, w = volume.shape
        patches = volume.reshape(b, d // p, p, h // p, p, w // p, p).mean((2, 4, 6))
        ids = ((patches.clamp(-1, 1) + 1) * 4).round().long().reshape(b, -1)
        return Tokens(ids=ids, meta={"grid_size": [d // p, h // p, w // p], "codebook_size": 9})

    def segment(self, volume: torch.Tensor) -> torch.Tensor:
        return (volume > 0).long()


# ---- the registry entries the fixtures add ----------------------------------------------------------
FAKES = (
    TinyModel,
    SlowBytes,
    WaveTokens,
    TinyWav,
    TinyImageVQ,
    ScoredImageVQ,
    PlainImageVQ,
    TinyPNGVQ,
    EchoPreprocess,
    TinyLifter,
    TinyVolume,
)
ARCHS = {cls.arch: f"{__name__}:{cls.__name__}" for cls in FAKES}


# ---- fake data --------------------------------------------------------------------------------------
def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Smooth 8x8 images as .npy files: sums of two random low-frequency waves, in [-1, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, np.pi, 8)
    paths = []
    for i in range(count):
        fy, fx, phase = rng.uniform(0.5, 2, 2), rng.uniform(0.5, 2, 2), rng.uniform(0, np.pi, 2)
        image = sum(np.sin(fy[k] * grid[:, None] + fx[k] * grid[None] + phase[k]) for k in range(2)) / 2
        path = folder / f"img{i:03d}.npy"
        np.save(path, image.astype(np.float32))
        paths.append(str(path))
    return paths


def main(argv: list[str]) -> int:
    """``python -m tests.fakes batch|finetune ARGS``: the tool's command line with the fakes registered."""
    from zoo.registry import register_arch
    from zoo.tools import batch, finetune

    for arch, target in ARCHS.items():
        register_arch(arch, target)
    tools = {"batch": batch.main, "finetune": finetune.main}
    if not argv or argv[0] not in tools:
        print(f"usage: python -m tests.fakes {{{','.join(tools)}}} ARGS...", file=sys.stderr)
        return 2
    return tools[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
