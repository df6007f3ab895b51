"""Whisper-style log-mel front end, computed per clip.

Shape letters: B clips, N samples, F frequency bins (n_fft // 2 + 1 = 201), M mel bins, T frames.

Facts that decide a token (each checked by the parity fixtures):
- STFT with n_fft 400, hop 160, a *periodic* Hann window, centred with reflect padding; the last
  STFT frame is dropped, so a clip of N samples gives T = N // 160 frames.
- power = |X|^2, projected by a Slaney mel filterbank (Slaney scale and area normalisation,
  0..8 kHz), which is computed here from its formula rather than read from a file.
- log10 with a floor of 1e-10, then clamped to (max - 8) where max is taken over *that clip's*
  whole (M, T) matrix, then (x + 4) / 4. Taking one max over a padded batch would change the
  quieter clips, so every clip is reduced on its own.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import InputError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
MIN_SAMPLES = N_FFT // 2 + 1  # reflect padding by 200 needs more than 200 samples


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear_step = 200.0 / 3.0
    break_hz, break_mel = 1000.0, 1000.0 / linear_step
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= break_hz, break_mel + np.log(np.maximum(hz, 1e-12) / break_hz) / log_step, hz / linear_step)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear_step = 200.0 / 3.0
    break_hz, break_mel = 1000.0, 1000.0 / linear_step
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= break_mel, break_hz * np.exp(log_step * (mel - break_mel)), mel * linear_step)


@functools.lru_cache(maxsize=8)
def mel_filters(
    n_mels: int = 128, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, fmin: float = 0.0, fmax: float | None = None
) -> Tensor:
    """(M, F) float32 triangular filters, area-normalised, Slaney scale from ``fmin`` to ``fmax`` (Nyquist if None).

    Equals ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (and Whisper's mel_filters.npz for
    16 kHz, n_fft 400) to about 1e-8; computed in float64 and rounded once.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)  # (M + 2,) left edge, centre, right edge of each triangle
    widths = np.diff(edges_hz)
    distance = edges_hz[:, None] - fft_hz[None, :]  # (M + 2, F)
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # unit area per triangle
    return torch.from_numpy(weights.astype(np.float32))


def num_frames(num_samples: Tensor | int) -> Tensor | int:
    """Mel frames of a clip: one per hop, the centred STFT's extra last frame dropped."""
    return num_samples // HOP_LENGTH


def log_mel_spectrogram(waveforms: Tensor, lengths: Tensor | None = None, n_mels: int = 128) -> tuple[Tensor, Tensor]:
    """(B, N) 16 kHz waveforms (right-padded) + (B,) sample counts -> ((B, M, T) log-mels, (B,) frames).

    Each clip is transformed on its own samples only (reflect padding at its own end) and clamped by
    its own maximum; the mels are zero-padded on the right to the longest clip, like upstream's
    ``padding``.
    """
    if waveforms.dim() == 1:
        waveforms = waveforms[None]
    batch, width = waveforms.shape
    if lengths is None:
        lengths = torch.full((batch,), width, dtype=torch.int64)
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if int(lengths.min()) < MIN_SAMPLES:
        short = [i for i, n in enumerate(lengths.tolist()) if n < MIN_SAMPLES]
        raise InputError(
            f"clips {short} are shorter than {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE * 1000:.1f} ms at "
            f"16 kHz); the front end needs at least that much audio to give one mel frame"
        )
    frames = lengths // HOP_LENGTH
    filters = mel_filters(n_mels).to(waveforms.device)
    window = torch.hann_window(N_FFT, periodic=True, device=waveforms.device)
    mels = torch.zeros(batch, n_mels, int(frames.max()), device=waveforms.device)
    for i in range(batch):
        log_spec = mels[i, :, : int(frames[i])]  # (M, T), filled in place
        _clip_log10_mel(waveforms[i, : int(lengths[i])].float(), filters, window, log_spec)
        floor = log_spec.max() - 8.0
        log_spec.clamp_(min=floor).add_(4.0).div_(4.0)  # in place: an hour of mels is ~180 MB per copy
    return mels, frames


def _clip_log10_mel(clip: Tensor, filters: Tensor, window: Tensor, out: Tensor, chunk_frames: int = 3000) -> None:
    """log10 mel power of one clip into ``out`` (M, T), a few thousand frames at a time.

    Same frames as a centred STFT (reflect padding by n_fft / 2, the extra last frame dropped),
    but neither a padded copy of the clip nor the complex spectrum of an hour of audio ever exists
    at once: beyond the output itself, memory stays O(chunk).
    """
    half, length = N_FFT // 2, clip.shape[0]
    frames = out.shape[-1]
    for first in range(0, frames, chunk_frames):
        last = min(frames, first + chunk_frames)
        # Samples [lo, hi) of the clip feed frames [first, last); past either end, reflect like the centred STFT.
        lo, hi = first * HOP_LENGTH - half, (last - 1) * HOP_LENGTH + half
        left, right = max(-lo, 0), max(hi - length, 0)
        # the slice also holds the samples a reflection mirrors (x[1..left] and x[N-1-right..N-2])
        start, stop = max(0, min(lo, length - 1 - right)), min(length, max(hi, left + 1))
        piece = clip[start:stop]
        if left or right:
            piece = F.pad(piece[None, None], (left, right), mode="reflect")[0, 0]
        piece = piece[lo - (start - left) : hi - (start - left)]  # exactly samples [lo, hi) of the padded clip
        spectrum = torch.stft(piece, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        out[:, first:last] = torch.clamp(filters @ (spectrum.abs() ** 2), min=1e-10).log10()  # (M, last - first)
