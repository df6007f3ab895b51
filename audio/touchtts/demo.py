"""Demo hook for `make demo`: touchtts-tiny speaks two held-out sentences.

For each bundled held-out sentence (audio/samples/touchtts-heldout*.txt, never trained on) it writes
the synthesised speech (``touchtts_tiny_<name>.wav``, 22.05 kHz) and one picture of the mels, TouchTTS's
above the espeak-ng original's (``touchtts_tiny_mels.png``). Each row of the table reports the speech
tokens written, their bitrate (25 ids/s x log2 6561), the real-time factor (synthesis time over audio
time) and intelligibility: the tiny S3-CTC recogniser's character error rate on our speech and on the
espeak-ng original of the same sentence.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

MODEL = "touchtts-tiny"


def run(out_dir: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import zoo
    from audio.io import load_audio, resample
    from audio.touchtts.data import TinyRecogniser, clip_cer, write_wav
    from audio.touchtts.mel import mel_spectrogram

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load(MODEL)
    recogniser = TinyRecogniser()
    bitrate = model.token_rate * math.log2(model.codebook_size)
    rows, pictures = [], []
    model.decode(model.encode("warm up", seed=0))  # the first call pays one-off set-up; keep it out of the RTF
    for path in model.sample_inputs():
        item = model.load_item(path)
        start = time.perf_counter()
        tokens = model.encode(item["text"], seed=0)
        waves, lengths = model.decode(tokens, seed=0)
        elapsed = time.perf_counter() - start
        wave = waves[0, : int(lengths[0])]
        write_wav(out_dir / f"touchtts_tiny_{path.stem}.wav", wave, model.sample_rate)
        original = load_audio(item["audio"], model.sample_rate)
        _, (ours, theirs) = recogniser([resample(w, model.sample_rate, 16000) for w in (wave, original)])
        seconds = len(wave) / model.sample_rate
        pictures.append((path.stem, item["text"], mel_spectrogram(wave)[0][0], mel_spectrogram(original)[0][0]))
        rows.append(
            {
                "model": MODEL,
                "modality": "audio",
                "input": f"{path.name}: {item['text']!r}",
                "tokens": int(tokens.lengths[0]),
                "bits_per_unit": f"{bitrate:.1f} bits/s",
                "quality": f"CER {100 * clip_cer(item['text'], ours):.0f}% heard {ours!r} (espeak original "
                f"{100 * clip_cer(item['text'], theirs):.0f}%), RTF {elapsed / seconds:.2f}",
                "seconds_per_item": round(elapsed, 4),
            }
        )
    figure, axes = plt.subplots(2, len(pictures), figsize=(6 * len(pictures), 5), squeeze=False)
    for column, (_, text, ours, theirs) in enumerate(pictures):
        for row, (mel, who) in enumerate(((ours, "TouchTTS"), (theirs, "espeak-ng original"))):
            axes[row][column].imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma")
            axes[row][column].set_title(f"{who}: {text!r}", fontsize=9)
            axes[row][column].set_xlabel("frame (11.6 ms)")
            axes[row][column].set_ylabel("mel bin")
    figure.tight_layout()
    figure.savefig(out_dir / "touchtts_tiny_mels.png", dpi=80)
    plt.close(figure)
    return rows
