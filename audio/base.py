"""The audio modality's base class: what every speech tokenizer in the zoo shares.

Shape letters: B clips, N samples.

``SpeechTokenizer`` reads audio the way the released speech tokenizers take it (any file soundfile
reads, channels averaged, resampled to 16 kHz; see ``audio.io``), batches clips as zero-padded
waveforms with their sample counts, and offers the bundled held-out speech clips as sample inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from zoo.api import ZooModel

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class SpeechTokenizer(ZooModel):
    """Base of the speech tokenizers: waveform batches in, the bundled clips as samples."""

    modality: ClassVar[str] = "audio"

    def preprocess(self, raw: Any, sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
        """Paths, arrays or tensors -> ((B, N) float32 16 kHz mono waveforms, zero-padded; (B,) sample counts)."""
        from audio.io import to_waveform_batch

        return to_waveform_batch(raw, sample_rate=sample_rate)

    def sample_inputs(self) -> list[Path]:
        """The bundled held-out speech clips (16 kHz WAV, espeak-ng), for demos, comparisons and smoke tests."""
        return sorted(SAMPLES_DIR.glob("*.wav"))
