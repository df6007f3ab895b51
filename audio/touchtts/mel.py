"""The 22.05 kHz vocoder mel of TouchTTS (the HiFi-GAN / Matcha-TTS log-magnitude mel) and its length rules.

Shape letters: B clips, N samples, F frequency bins (n_fft // 2 + 1), M mel bins, T frames.

This is not the S3Tokenizer front end (audio/features.py: 16 kHz, log10 *power*, Whisper scaling).
The flow predicts, and the vocoder reads, this mel:
- reflect-pad each clip by (n_fft - hop) / 2 samples on both sides, then an STFT with a periodic Hann
  window, ``center=False``: a clip of N samples gives T = N // hop frames (it needs N > the padding);
- magnitude ``sqrt(re^2 + im^2 + 1e-9)`` (not the power), projected by the Slaney mel filterbank
  (Slaney scale, area-normalised, fmin..fmax, as ``librosa.filters.mel`` builds it);
- natural log of ``max(mel, 1e-5)``, so digital silence sits at log(1e-5) = -11.51.

Length rules that tie the 25 Hz speech tokens to these frames (checked against the fixture tables):
``generated_mel_frames`` (the flow's output length for L tokens) and ``prompt_token_count`` (the
speech-token placeholders the LM inserts for a 100 Hz prompt mel of F frames).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from audio.features import mel_filters
from zoo.errors import ConfigError, InputError

TOKEN_RATE = 25  # S3 speech tokens per second (v1_25hz, v2, v3)
PROMPT_FRAME_RATE = 100  # frames per second of the 16 kHz / hop-160 prompt log-mel the LM extractor counts
MAGNITUDE_EPS = 1e-9  # added under the square root, as upstream does, so silence has a finite log


@dataclass(frozen=True)
class MelConfig:
    """The vocoder mel. Defaults are TouchTTS's (the flow extractor's arguments to west's mel_spectrogram)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0  # None: up to Nyquist, as librosa
    center: bool = False  # upstream pads by hand and keeps the STFT uncentred
    log_floor: float = 1e-5  # magnitudes are clamped here before the natural log

    def __post_init__(self):
        if self.n_fft < self.win_length or self.win_length <= 0:
            raise ConfigError(f"MelConfig.win_length={self.win_length} must be in [1, n_fft={self.n_fft}]")
        if self.hop_length <= 0 or (self.n_fft - self.hop_length) % 2:
            raise ConfigError(
                f"MelConfig.hop_length={self.hop_length} must be positive with n_fft - hop_length even "
                f"(the clip is padded by (n_fft - hop) / 2 on each side); n_fft={self.n_fft}"
            )
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        if not 0 <= self.fmin < top <= self.sample_rate / 2:
            raise ConfigError(
                f"MelConfig.fmin={self.fmin}, fmax={self.fmax} must satisfy 0 <= fmin < fmax <= sample_rate / 2"
            )

    @property
    def padding(self) -> int:
        """Reflect padding on each side of a clip before the STFT."""
        return (self.n_fft - self.hop_length) // 2

    @property
    def min_samples(self) -> int:
        """The shortest clip the mel accepts: reflect padding by ``padding`` needs more samples than that."""
        return self.padding + 1

    @classmethod
    def from_upstream(cls, kwargs: Mapping[str, Any]) -> MelConfig:
        """From upstream's argument names (west's ``mel_spectrogram`` and BigVGAN's config.json use the same)."""
        names = {
            "n_fft": "n_fft",
            "num_mels": "n_mels",
            "sampling_rate": "sample_rate",
            "hop_size": "hop_length",
            "win_size": "win_length",
            "fmin": "fmin",
            "fmax": "fmax",
            "center": "center",
        }
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ConfigError(f"unknown mel arguments {unknown}; known: {sorted(names)}")
        return cls(**{names[k]: v for k, v in kwargs.items()})


DEFAULT_MEL = MelConfig()


def num_frames(num_samples: Tensor | int, config: MelConfig = DEFAULT_MEL) -> Tensor | int:
    """Mel frames of a clip of ``num_samples`` samples (N // hop with the default, uncentred STFT)."""
    padded = num_samples + 2 * config.padding + (2 * (config.n_fft // 2) if config.center else 0)
    return (padded - config.n_fft) // config.hop_length + 1


def _check_lengths(lengths: Tensor, config: MelConfig) -> None:
    short = [i for i, n in enumerate(lengths.tolist()) if n < config.min_samples]
    if short:
        raise InputError(
            f"clips {short} are shorter than {config.min_samples} samples "
            f"({1000 * config.min_samples / config.sample_rate:.1f} ms at {config.sample_rate} Hz): the mel "
            f"reflect-pads {config.padding} samples on each side and needs more audio than that"
        )


def pad_for_stft(waveforms: Tensor, config: MelConfig = DEFAULT_MEL) -> Tensor:
    """(B, N) -> (B, N + 2 * padding): reflect padding by (n_fft - hop) / 2 on each side."""
    _check_lengths(torch.tensor([waveforms.shape[-1]]), config)
    return F.pad(waveforms[:, None], (config.padding, config.padding), mode="reflect")[:, 0]


def magnitude_spectrogram(waveforms: Tensor, config: MelConfig = DEFAULT_MEL) -> Tensor:
    """(B, N) -> (B, F, T) STFT magnitude ``sqrt(re^2 + im^2 + 1e-9)`` of the padded clips."""
    window = torch.hann_window(config.win_length, periodic=True, device=waveforms.device, dtype=waveforms.dtype)
    spectrum = torch.stft(
        pad_for_stft(waveforms, config),
        config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=config.center,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return torch.sqrt(torch.view_as_real(spectrum).pow(2).sum(-1) + MAGNITUDE_EPS)


def mel_spectrogram(
    waveforms: Tensor, lengths: Tensor | None = None, config: MelConfig = DEFAULT_MEL
) -> tuple[Tensor, Tensor]:
    """(B, N) or (N,) waveforms at ``config.sample_rate`` -> ((B, M, T) natural-log mel, (B,) frame counts).

    Without ``lengths`` every row is a whole clip and the batch goes through one STFT (upstream's call).
    With ``lengths`` each clip is transformed on its own samples (reflect padding at its own end), so its
    mel is the same alone or in a batch; frames past a clip's end hold log(log_floor), the mel of silence,
    so a vocoder reading a padded batch makes silence there rather than noise.
    """
    if waveforms.dim() == 1:
        waveforms = waveforms[None]
    if waveforms.dim() != 2 or not waveforms.is_floating_point():
        raise InputError(f"waveforms must be float (B, N) or (N,), got {waveforms.dtype} {tuple(waveforms.shape)}")
    filters = mel_filters(config.n_mels, config.sample_rate, config.n_fft, config.fmin, config.fmax)
    filters = filters.to(device=waveforms.device, dtype=waveforms.dtype)

    def log_mel(clips: Tensor) -> Tensor:
        return torch.log(torch.clamp(filters @ magnitude_spectrogram(clips, config), min=config.log_floor))

    if lengths is None:
        mel = log_mel(waveforms)
        return mel, torch.full((mel.shape[0],), mel.shape[-1], dtype=torch.int64, device=mel.device)
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if lengths.shape != (waveforms.shape[0],) or int(lengths.max()) > waveforms.shape[1]:
        raise InputError(f"lengths must be ({waveforms.shape[0]},) sample counts <= {waveforms.shape[1]}")
    _check_lengths(lengths, config)
    frames = num_frames(lengths, config)
    mels = torch.full(
        (waveforms.shape[0], config.n_mels, int(frames.max())),
        math.log(config.log_floor),
        dtype=waveforms.dtype,
        device=waveforms.device,
    )
    for i, n in enumerate(lengths.tolist()):
        mels[i, :, : int(frames[i])] = log_mel(waveforms[i : i + 1, :n])[0]
    return mels, frames.to(waveforms.device)


# ---- length rules -------------------------------------------------------------------------------
def generated_mel_frames(
    num_tokens: Tensor | int, config: MelConfig = DEFAULT_MEL, token_rate: int = TOKEN_RATE
) -> Tensor | int:
    """Mel frames the flow generates for ``num_tokens`` speech tokens: int(L / rate * sample_rate / hop).

    Evaluated left to right in float64, as upstream's Python floats, then truncated: the table in the
    fixture is exact, and reordering the operations moves some lengths by one frame.
    """
    if isinstance(num_tokens, Tensor):
        return torch.trunc(num_tokens.double() / token_rate * config.sample_rate / config.hop_length).long()
    return int(num_tokens / token_rate * config.sample_rate / config.hop_length)


def prompt_token_count(
    prompt_frames: Tensor | int, token_rate: int = TOKEN_RATE, frame_rate: int = PROMPT_FRAME_RATE
) -> Tensor | int:
    """Speech-token placeholders for a prompt of ``prompt_frames`` 100 Hz log-mel frames: ceil(F * 25 / 100 - 1e-9).

    The 1e-9 keeps exact multiples (F = 4k) from rounding up through float error.
    """
    if isinstance(prompt_frames, Tensor):
        return torch.ceil((prompt_frames * token_rate).double() / frame_rate - 1e-9).long()
    return math.ceil(prompt_frames * token_rate / frame_rate - 1e-9)
