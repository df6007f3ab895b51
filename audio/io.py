"""Audio input: files through soundfile, any sample rate resampled to 16 kHz, channels down-mixed.

Shape letters: B clips, C channels, N samples.

Resampler: ``torchaudio.functional.resample`` with its defaults (windowed-sinc, Hann window,
6 zero crossings, roll-off 0.99). That is the resampler upstream's ``load_audio`` uses
(``torchaudio.transforms.Resample`` with the same defaults), so a 22.05/44.1/48 kHz mono file gives
the waveform, and therefore the tokens, upstream would give. soxr is the higher-quality choice in
general, but it would move token ids against upstream for every non-16 kHz file.

Channels: upstream keeps channel 0 only; we average the channels, so a stereo file whose speech sits
in the right channel is not silently tokenised as silence. For mono input both agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audio.features import MIN_SAMPLES, SAMPLE_RATE
from zoo.api import check_input_file
from zoo.errors import CorruptFileError, InputError


def resample(waveform: Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> Tensor:
    """(..., N) at ``orig_rate`` -> (..., N') at ``new_rate`` (torchaudio's windowed-sinc, float32)."""
    if orig_rate <= 0:
        raise InputError(f"sample rate must be positive, got {orig_rate}")
    if orig_rate == new_rate:
        return waveform
    import torchaudio.functional as AF

    return AF.resample(waveform.float(), orig_rate, new_rate)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Read an audio file -> (N,) float32 mono at ``sample_rate`` (channels averaged, resampled if needed)."""
    import soundfile as sf

    path = check_input_file(path, "audio file")
    check_wav_complete(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError for unknown or broken files
        raise CorruptFileError(str(path), f"soundfile cannot read it as audio ({err})") from err
    if data.shape[0] == 0:
        raise InputError(f"audio file {path} holds no samples")
    waveform = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0)  # (N,) down-mixed
    _check_finite(waveform, str(path))
    return resample(waveform, int(file_rate), sample_rate)


def check_wav_complete(path: Path) -> None:
    """Raise CorruptFileError if a RIFF/WAVE file is shorter than its ``data`` chunk header says (a truncated
    download or copy): libsndfile reads such a file silently, giving only the part that is there. Other formats,
    and streamed WAVs whose header leaves the size unset (0 or 0xFFFFFFFF), are left to soundfile."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return  # no data chunk: soundfile says so
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                if length in (0, 0xFFFFFFFF):
                    return
                present = size - f.tell()
                if present < length:
                    raise CorruptFileError(
                        str(path),
                        f"truncated: its header declares {length} bytes of samples but only {present} are present "
                        f"({100 * present / length:.0f}%)",
                    )
                return
            f.seek(length + (length & 1), 1)  # chunks are word-aligned


def _check_finite(waveform: Tensor, name: str) -> None:
    if waveform.numel() == 0:
        raise InputError(f"{name} is empty (no samples)")
    if not torch.isfinite(waveform).all():
        raise InputError(f"{name} contains NaN or infinite samples")


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a path, a numpy array or a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point in [-1, 1], got {x.dtype} (divide int16 PCM by 32768)")
    return x


def pad_batch(clips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Clips (..., N_i) of one leading shape -> ((B, ..., N) zero-padded on the right, (B,) int64 lengths N_i).

    Waveforms (N_i,) give (B, N) and sample counts; log-mels (n_mels, T_i) give (B, n_mels, T) and frame counts.
    """
    lengths = torch.tensor([c.shape[-1] for c in clips], dtype=torch.int64)
    if len(clips) == 1 and clips[0].dtype == torch.float32:
        return clips[0][None], lengths  # a view: an hour-long clip is not copied
    batch = torch.zeros(len(clips), *clips[0].shape[:-1], int(lengths.max()), dtype=torch.float32)
    for i, clip in enumerate(clips):
        batch[i, ..., : clip.shape[-1]] = clip
    return batch, lengths


def check_waveforms(waveforms: Tensor, lengths: Tensor | None, sample_rate: int | None) -> tuple[Tensor, Tensor]:
    """Validate a padded (B, N) batch + (B,) lengths (resampling to 16 kHz if ``sample_rate`` differs)."""
    waveforms = _as_tensor(waveforms, "waveforms")
    if waveforms.dim() != 2:
        raise InputError(f"waveforms with lengths must be (B, N), got shape {tuple(waveforms.shape)}")
    if not isinstance(lengths, Tensor) or lengths.shape != (waveforms.shape[0],) or lengths.is_floating_point():
        raise InputError(f"lengths must be a (B,) = ({waveforms.shape[0]},) integer tensor of sample counts")
    if int(lengths.min()) < 1 or int(lengths.max()) > waveforms.shape[1]:
        raise InputError(f"lengths must lie in [1, {waveforms.shape[1]}], got {lengths.tolist()}")
    clips = [waveforms[i, : int(n)] for i, n in enumerate(lengths.tolist())]
    return _finish([_rate(c.float(), sample_rate, f"clip {i}") for i, c in enumerate(clips)])


def _rate(clip: Tensor, sample_rate: int | None, name: str) -> Tensor:
    _check_finite(clip, name)
    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, int)):
        raise InputError(f"sample_rate must be an int (Hz), got {sample_rate!r}")
    return resample(clip, SAMPLE_RATE if sample_rate is None else sample_rate)  # 0 is refused there, not 16 kHz


def _finish(clips: list[Tensor]) -> tuple[Tensor, Tensor]:
    short = [i for i, c in enumerate(clips) if c.shape[0] < MIN_SAMPLES]
    if short:
        raise InputError(
            f"clips {short} are shorter than {MIN_SAMPLES} samples at 16 kHz ({1000 * MIN_SAMPLES / SAMPLE_RATE:.1f} "
            "ms): too short to give one mel frame"
        )
    return pad_batch(clips)


def to_waveform_batch(raw: Any, sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
    """Paths, arrays or tensors -> ((B, N) float32 16 kHz mono, zero-padded; (B,) sample counts).

    Accepted: a path; a list of paths; a (N,) or (B, N) array/tensor (every row full length); a
    (B, C, N) array/tensor (channels averaged); a list of 1-D arrays/tensors of any lengths.
    ``sample_rate`` is the rate of array input (default 16 kHz); files carry their own rate.
    """
    if isinstance(raw, (str, os.PathLike)):
        return _finish([load_audio(raw)])
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise InputError("no audio given: the list of clips is empty")
        clips = []
        for i, item in enumerate(raw):
            if isinstance(item, (str, os.PathLike)):
                clips.append(load_audio(item))
                continue
            item = _as_tensor(item, f"clip {i}")
            if item.dim() != 1:
                raise InputError(f"clip {i} must be 1-D (N,) samples, got shape {tuple(item.shape)}")
            clips.append(_rate(item.float(), sample_rate, f"clip {i}"))
        return _finish(clips)
    x = _as_tensor(raw, "waveforms")
    if x.dim() == 1:
        x = x[None]
    elif x.dim() == 3:
        x = x.float().mean(dim=1)  # (B, C, N) -> (B, N)
    elif x.dim() != 2:
        raise InputError(f"waveforms must be (N,), (B, N) or (B, C, N), got shape {tuple(x.shape)}")
    if x.shape[-1] == 0 or x.shape[0] == 0:
        raise InputError(f"waveforms are empty (shape {tuple(x.shape)})")
    return _finish([_rate(row.float(), sample_rate, f"clip {i}") for i, row in enumerate(x)])
