"""Vocoders for TouchTTS: a 22.05 kHz log-mel (B, M, T) -> a waveform (B, T * hop).

Shape letters: B batch, M mel bins (80), T mel frames, N samples (T * hop, hop = 256), C channels.

One interface (``Vocoder``: ``sample_rate``, ``hop_length``, ``n_mels``; ``forward(mel) -> waveform``;
``vocode(mel, frames)`` for padded batches) and three implementations:

- ``HiFiGAN``: the HiFi-GAN generator (Kong et al. 2020: transposed-convolution upsampling, each stage
  followed by a multi-receptive-field fusion of dilated residual blocks), written here. The tiny one in
  hub_cards/touchtts-tiny is trained by ``audio/touchtts/train_vocoder.py``.
- ``BigVGAN``: NVIDIA's generator from the ``bigvgan`` package, the vocoder upstream's Python recipe uses
  (nvidia/bigvgan_base_22khz_80band), built from its own config.json. Its published weights are a pickle
  (bigvgan_generator.pt); ``convert_bigvgan_checkpoint`` turns them into our layout once.
- ``GriffinLim``: **fallback only**. No learned weights: the mel is inverted by least squares and the phase
  recovered by Griffin-Lim iterations (torchaudio). Speech stays intelligible but sounds metallic; use it
  when no trained vocoder is at hand, never to judge a model's quality.

A vocoder folder holds ``vocoder.json`` (``{"type": ..., <its config>}``; the type is looked up in
``VOCODERS``, never imported by name) and ``vocoder.safetensors`` (its state_dict; none for Griffin-Lim).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.touchtts.mel import DEFAULT_MEL, MelConfig
from zoo.api import atomic_write, check_float_tensor, config_from_dict, config_to_dict
from zoo.errors import ConfigError, InputError, ModelFileNotFoundError

logger = logging.getLogger(__name__)

CONFIG_FILE = "vocoder.json"
WEIGHTS_FILE = "vocoder.safetensors"


class Vocoder(nn.Module):
    """log-mel (B, n_mels, T) at ``sample_rate`` / ``hop_length`` -> waveform (B, T * hop_length) in [-1, 1]."""

    kind: ClassVar[str]
    fallback: ClassVar[bool] = False  # True only for a vocoder that is a stand-in, not a model

    def __init__(self, mel: MelConfig):
        super().__init__()
        self.mel_config = mel

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel_config.hop_length

    @property
    def n_mels(self) -> int:
        return self.mel_config.n_mels

    def forward(self, mel: Tensor) -> Tensor:
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """What vocoder.json holds besides the type."""
        raise NotImplementedError

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], device=None, dtype=None) -> Vocoder:
        raise NotImplementedError

    def require_mel(self, mel: MelConfig) -> None:
        """Raise ConfigError unless this vocoder reads exactly the mel ``mel`` describes (the flow's)."""
        if mel != self.mel_config:
            ours, theirs = asdict(self.mel_config), asdict(mel)
            differ = [f"{k}: vocoder {ours[k]} vs {theirs[k]}" for k in ours if ours[k] != theirs[k]]
            raise ConfigError(f"the {self.kind} vocoder reads another mel: {'; '.join(differ)}")

    @torch.no_grad()
    def vocode(self, mel: Tensor, frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, M, T) log-mels (padded) + (B,) frame counts -> ((B, N) waveforms zero-padded, (B,) sample counts).

        Clips are vocoded one by one on their own frames, so a clip's waveform is the same alone or in a
        batch, bit for bit (a convolutional vocoder would otherwise hear the padding near the end).
        """
        check_float_tensor(mel, "mel", dims=3)
        if mel.shape[1] != self.n_mels:
            raise InputError(f"mel must be (B, {self.n_mels}, T) for this vocoder, got {tuple(mel.shape)}")
        if frames is None:
            frames = torch.full((mel.shape[0],), mel.shape[-1], dtype=torch.int64)
        frames = frames.to(device="cpu", dtype=torch.int64)
        if frames.shape != (mel.shape[0],) or int(frames.min()) < 1 or int(frames.max()) > mel.shape[-1]:
            raise InputError(f"frames must be ({mel.shape[0]},) counts in [1, {mel.shape[-1]}], got {frames.tolist()}")
        lengths = frames * self.hop_length
        like = next(iter([*self.parameters(), *self.buffers()]), mel)  # the vocoder's device and dtype
        mel = mel.to(device=like.device, dtype=like.dtype)
        waves = torch.zeros(mel.shape[0], int(lengths.max()), device=mel.device)
        for i, n in enumerate(frames.tolist()):
            waves[i, : n * self.hop_length] = self(mel[i : i + 1, :, :n])[0].float()
        return waves, lengths

    def save(self, folder: str | Path) -> Path:
        """Write vocoder.json (+ vocoder.safetensors when it has weights) into ``folder``, each file atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if state:
            atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        text = json.dumps({"type": self.kind, **self.config_dict()}, indent=2, sort_keys=True) + "\n"
        atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(text))
        return folder


# ---- HiFi-GAN ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HiFiGANConfig:
    """A HiFi-GAN generator. Defaults are the paper's V1 (13.9 M parameters); the tiny one is far smaller."""

    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)  # their product is the mel hop (256)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)  # k - rate must be even: exactly rate x samples out
    upsample_initial_channel: int = 512  # halved at every upsampling stage
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)  # one residual stack per kernel size, averaged
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    leaky_relu_slope: float = 0.1

    def __post_init__(self):
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError("HiFiGANConfig.upsample_kernel_sizes needs one kernel per upsample rate")
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if rate < 1 or kernel < rate or (kernel - rate) % 2:
                raise ConfigError(
                    f"HiFiGANConfig.upsample_kernel_sizes: kernel {kernel} for rate {rate} must be >= the rate "
                    "with an even difference, so that each stage makes exactly rate x samples"
                )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ConfigError("HiFiGANConfig.resblock_dilation_sizes needs one dilation list per kernel size")
        if self.upsample_initial_channel >> len(self.upsample_rates) < 1:
            raise ConfigError(
                f"HiFiGANConfig.upsample_initial_channel={self.upsample_initial_channel} cannot be halved "
                f"{len(self.upsample_rates)} times"
            )

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


class ResidualStack(nn.Module):
    """HiFi-GAN's residual block: per dilation d, x += conv_1(lrelu(conv_d(lrelu(x)))), lengths kept."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], slope: float, **factory):
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2, **factory)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, **factory) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, self.slope)), self.slope))
        return x


class HiFiGAN(Vocoder):
    """HiFi-GAN generator: conv_pre -> [lrelu, upsample, mean of residual stacks] per stage -> conv_post -> tanh."""

    kind = "hifigan"

    def __init__(self, config: HiFiGANConfig | None = None, mel: MelConfig = DEFAULT_MEL, device=None, dtype=None):
        super().__init__(mel)
        config = config or HiFiGANConfig()
        if config.hop_length != mel.hop_length:
            raise ConfigError(
                f"HiFiGANConfig.upsample_rates {config.upsample_rates} multiply to {config.hop_length}, "
                f"but the mel hop is {mel.hop_length}"
            )
        self.config = config
        factory = {"device": device, "dtype": dtype}
        width = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(mel.n_mels, width, 7, padding=3, **factory)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            channels = width >> (i + 1)
            self.ups.append(
                nn.ConvTranspose1d(channels * 2, channels, kernel, rate, padding=(kernel - rate) // 2, **factory)
            )
            self.resblocks.extend(
                ResidualStack(channels, k, d, config.leaky_relu_slope, **factory)
                for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
            )
        self.conv_post = nn.Conv1d(width >> len(config.upsample_rates), 1, 7, padding=3, **factory)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)  # (B, C, T)
        stacks = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.config.leaky_relu_slope))  # (B, C / 2^(i+1), T * rates[:i+1])
            x = sum(block(x) for block in self.resblocks[i * stacks : (i + 1) * stacks]) / stacks
        x = self.conv_post(F.leaky_relu(x))  # HiFi-GAN's last activation keeps torch's default slope, 0.01
        return torch.tanh(x)[:, 0]  # (B, T * hop)

    def config_dict(self) -> dict[str, Any]:
        return {"generator": config_to_dict(self.config), "mel": config_to_dict(self.mel_config)}

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], device=None, dtype=None) -> HiFiGAN:
        _require_keys(data, {"generator", "mel"}, cls.kind)
        generator = config_from_dict(HiFiGANConfig, data["generator"], f"{CONFIG_FILE} generator")
        return cls(generator, config_from_dict(MelConfig, data["mel"], f"{CONFIG_FILE} mel"), device, dtype)


# ---- BigVGAN (the bigvgan package) ---------------------------------------------------------------
BIGVGAN_MEL_KEYS = ("n_fft", "num_mels", "sampling_rate", "hop_size", "win_size", "fmin", "fmax")


class BigVGAN(Vocoder):
    """NVIDIA's BigVGAN generator from the ``bigvgan`` package, built from its config.json (``hparams``).

    The package's own classes are used unchanged (``generator`` is a ``bigvgan.BigVGAN``), without its
    CUDA kernel, so weights keep the published names under ``generator.``. Nothing is downloaded here.
    """

    kind = "bigvgan"

    def __init__(self, hparams: dict[str, Any], device=None, dtype=None):
        missing = [k for k in BIGVGAN_MEL_KEYS if k not in hparams]
        if missing:
            raise ConfigError(f"BigVGAN config.json lacks the mel settings {missing}")
        super().__init__(MelConfig.from_upstream({k: hparams[k] for k in BIGVGAN_MEL_KEYS}))
        try:
            from bigvgan import BigVGAN as Generator
            from bigvgan.env import AttrDict
        except ImportError as err:
            from zoo.errors import NotSupportedError

            raise NotSupportedError("the BigVGAN vocoder needs the bigvgan package: pip install bigvgan") from err
        if math.prod(hparams.get("upsample_rates", ())) != hparams["hop_size"]:
            raise ConfigError(
                f"BigVGAN upsample_rates {hparams.get('upsample_rates')} do not multiply to hop_size "
                f"{hparams['hop_size']}"
            )
        self.hparams = dict(hparams)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
            generator = Generator(AttrDict(dict(hparams)), use_cuda_kernel=False)  # the published key names need it
        self.generator = generator.to(device=device, dtype=dtype)

    def forward(self, mel: Tensor) -> Tensor:
        return self.generator(mel)[:, 0]  # (B, 1, N) -> (B, N)

    def config_dict(self) -> dict[str, Any]:
        hparams = {k: v for k, v in self.hparams.items() if k != "use_cuda_kernel"}  # the package adds it
        return {"bigvgan": hparams}

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], device=None, dtype=None) -> BigVGAN:
        _require_keys(data, {"bigvgan"}, cls.kind)
        return cls(data["bigvgan"], device, dtype)


def convert_bigvgan_checkpoint(source: str | Path, out: str | Path) -> Path:
    """A published BigVGAN folder (config.json + bigvgan_generator.pt) -> our vocoder folder in ``out``.

    The pickle is opened with ``weights_only=True`` (tensors only, no code) and its ``generator`` dict is
    loaded strictly: every published key must fit, none may be left over.
    """
    from zoo.hub import load_state_dict_strict

    source = Path(source)
    config_file, checkpoint = source / "config.json", source / "bigvgan_generator.pt"
    for file in (config_file, checkpoint):
        if not file.is_file():
            raise ModelFileNotFoundError(str(source), file.name, hint="a BigVGAN folder as NVIDIA publishes it")
    vocoder = BigVGAN(json.loads(config_file.read_text()))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "generator" not in state:
        raise InputError(f"{checkpoint} holds no 'generator' state dict")
    load_state_dict_strict(vocoder, {f"generator.{k}": v for k, v in state["generator"].items()}, checkpoint.name)
    return vocoder.save(out)


# ---- Griffin-Lim (fallback) ----------------------------------------------------------------------
class GriffinLim(Vocoder):
    """FALLBACK ONLY, no learned weights: least-squares mel inversion + Griffin-Lim phase (torchaudio).

    Intelligible but metallic; it stands in when no trained vocoder is at hand and says so in the log.
    Deterministic: the phase starts from zero, not from random values.
    """

    kind = "griffin-lim"
    fallback = True

    def __init__(self, mel: MelConfig = DEFAULT_MEL, n_iter: int = 32, momentum: float = 0.99, device=None, dtype=None):
        super().__init__(mel)
        from audio.features import mel_filters

        self.n_iter, self.momentum = n_iter, momentum
        filters = mel_filters(mel.n_mels, mel.sample_rate, mel.n_fft, mel.fmin, mel.fmax).double()
        inverse = torch.linalg.pinv(filters).to(device=device, dtype=dtype or torch.float32)  # (F, M)
        self.register_buffer("inverse_filters", inverse, persistent=False)
        window = torch.hann_window(mel.win_length, device=device, dtype=dtype or torch.float32)
        self.register_buffer("window", window, persistent=False)
        logger.warning("Griffin-Lim fallback vocoder in use: no trained vocoder; expect metallic speech")

    def forward(self, mel: Tensor) -> Tensor:
        import torchaudio.functional as AF

        config = self.mel_config
        magnitude = (self.inverse_filters @ mel.exp()).clamp(min=config.log_floor)  # (B, F, T)
        frames = mel.shape[-1]
        # Our frame t is centred on sample t * hop + (n_fft / 2 - padding); torchaudio's centred ISTFT puts it
        # at t * hop, so its output is shifted right by that offset.
        offset = config.n_fft // 2 - config.padding
        wave = AF.griffinlim(
            magnitude,
            self.window,
            config.n_fft,
            config.hop_length,
            config.win_length,
            power=1.0,
            n_iter=self.n_iter,
            momentum=self.momentum,
            length=frames * config.hop_length - offset,
            rand_init=False,
        )
        return F.pad(wave, (offset, 0)).clamp(-1.0, 1.0)  # (B, T * hop)

    def config_dict(self) -> dict[str, Any]:
        return {"mel": config_to_dict(self.mel_config), "n_iter": self.n_iter, "momentum": self.momentum}

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], device=None, dtype=None) -> GriffinLim:
        _require_keys(data, {"mel", "n_iter", "momentum"}, cls.kind)
        mel = config_from_dict(MelConfig, data["mel"], f"{CONFIG_FILE} mel")
        return cls(mel, data["n_iter"], data["momentum"], device, dtype)


# ---- folders -------------------------------------------------------------------------------------
VOCODERS: dict[str, type[Vocoder]] = {cls.kind: cls for cls in (HiFiGAN, BigVGAN, GriffinLim)}


def _require_keys(data: dict[str, Any], keys: set[str], kind: str) -> None:
    if set(data) != keys:
        raise ConfigError(
            f"{CONFIG_FILE} for a {kind} vocoder must hold exactly {sorted(keys)} besides 'type', got {sorted(data)}"
        )


def load_vocoder(folder: str | Path, device=None, dtype=None) -> Vocoder:
    """The vocoder saved in ``folder`` (vocoder.json + vocoder.safetensors), weights loaded strictly, in eval mode."""
    from zoo.hub import load_weights

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelFileNotFoundError(str(folder), CONFIG_FILE, hint="save one with Vocoder.save(folder)")
    data = json.loads((folder / CONFIG_FILE).read_text())
    kind = data.pop("type", None)
    if kind not in VOCODERS:
        raise ConfigError(f"{folder / CONFIG_FILE}: unknown vocoder type {kind!r}; known: {sorted(VOCODERS)}")
    vocoder = VOCODERS[kind].from_config_dict(data, device=device, dtype=dtype)
    if vocoder.state_dict():
        load_weights(vocoder, folder / WEIGHTS_FILE, source=str(folder))
    return vocoder.eval()
