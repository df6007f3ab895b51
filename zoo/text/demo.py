"""The text family's part of the main job: every bundled text tokenizer on the bundled multilingual sample.

``run(out_dir)`` encodes the held-out split of zoo/text/corpus.json (4 sentences in each of 12
languages + 4 emoji lines, never seen in training) with each tokenizer in hub_cards/ whose modality is
text, decodes it back, and returns one row per tokenizer. Under ``out_dir`` it writes, per tokenizer,
the tokens (``<name>.tokens.safetensors``), the decoded text (``<name>.decoded.txt``) and the figures
per language (``<name>.figures.json``).

bits_per_unit is bits per UTF-8 byte: tokens * log2(vocabulary size) / bytes (the byte tokenizer's
log2(257) ~ 8.006 because its pad id widens the vocabulary by one).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import zoo
from zoo.files import atomic_write
from zoo.metrics import text as text_metrics
from zoo.metrics.tokens import bits_per_byte
from zoo.text.corpus import load_corpus, parallel_languages

log = logging.getLogger(__name__)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sample() -> tuple[list[str], list[str]]:
    """The demo's sentences and, beside each, its language."""
    held_out = load_corpus("held_out")
    langs = [lang for lang, sentences in held_out.items() for _ in sentences]
    return [s for sentences in held_out.values() for s in sentences], langs


def run(out_dir: Path) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, langs = sample()
    held_out = load_corpus("held_out")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_langs = len(set(langs) - {"emoji"})
    description = f"multilingual sample: {len(texts)} sentences, {n_langs} languages + emoji, {n_bytes} B"
    rows = []
    for name in zoo.list_models(modality="text"):
        model = zoo.load(name)
        started = time.perf_counter()
        tokens = model.encode(texts)
        decoded = model.decode(tokens)
        seconds = time.perf_counter() - started
        cer = text_metrics.character_error_rate(texts, decoded)
        quality = "lossless round trip" if decoded == texts else f"character error {100 * cer:.2f}%"
        figures = {
            "per_language": text_metrics.language_report(model, held_out),
            "parity": text_metrics.parity_report(model, {k: held_out[k] for k in parallel_languages()}),
            "fertility": text_metrics.fertility(model, texts),
            "bytes_per_token": text_metrics.bytes_per_token(model, texts),
        }
        tokens.save(out_dir / f"{name}.tokens.safetensors")
        write_text(out_dir / f"{name}.decoded.txt", "\n".join(decoded) + "\n")
        write_text(out_dir / f"{name}.figures.json", json.dumps(figures, indent=1, ensure_ascii=False))
        rows.append(
            {
                "model": name,
                "modality": "text",
                "input": description,
                "tokens": int(tokens.mask.sum()),
                "bits_per_unit": f"{bits_per_byte(tokens, model.vocab_size, n_bytes):.3f} bits/byte",
                "quality": quality,
                "seconds_per_item": seconds / len(texts),
            }
        )
        log.info("%s: %d tokens, %s", name, rows[-1]["tokens"], quality)
    return rows
