"""Demo hook for `make demo`: tokenize the bundled speech clips with the tiny S3-style tokenizer.

Each row reports the token count, tokens per second of audio, bits per second (25 ids/s x log2 6561),
the time taken, and how much of the words the ids keep: the tiny model's CTC head transcribes the
ids alone, scored by character error rate against the text the clip was synthesised from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MODEL = "s3tokenizer-tiny"


def run(out_dir: Path) -> list[dict]:
    import zoo
    from audio.s3tokenizer.tiny import bits_per_second, character_error_rate, load_head, transcribe
    from zoo.files import cards_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load(MODEL)
    head = load_head(cards_dir() / MODEL)
    records = json.loads((SAMPLES / "transcripts.json").read_text())
    bitrate = bits_per_second(model.token_rate, model.codebook_size)
    rows, lines = [], []
    for record in records:
        path = SAMPLES / record["file"]
        start = time.perf_counter()
        tokens = model.encode(path)
        elapsed = time.perf_counter() - start
        seconds = int(tokens.meta["num_samples"][0]) / tokens.meta["sample_rate"]
        heard = transcribe(model, head, tokens)[0]
        cer = character_error_rate([heard], [record["text"]])
        n = int(tokens.lengths[0])
        rows.append(
            {
                "model": MODEL,
                "modality": "audio",
                "input": record["file"],
                "tokens": n,
                "bits_per_unit": f"{bitrate:.1f} bits/s",
                "quality": f"CER {100 * cer:.1f}% (CTC head on ids), {n / seconds:.1f} tokens/s",
                "seconds_per_item": round(elapsed, 4),
            }
        )
        lines.append(f"{record['file']}: {record['text']!r} -> {heard!r}; ids {tokens.ids[0, :n].tolist()}")
    (out_dir / "s3tokenizer_tiny.txt").write_text("\n".join(lines) + "\n")
    return rows
