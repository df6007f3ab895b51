"""The bundled parallel multilingual corpus (zoo/text/corpus.json): 12 languages + emoji, CC0.

It trains the tiny text tokenizers (``zoo.text.train_tiny``) and its held-out split is the text
their cards' figures and the demo are measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.errors import ConfigError

CORPUS_PATH = Path(__file__).resolve().parent / "corpus.json"


def load_corpus(split: str = "train") -> dict[str, list[str]]:
    """The bundled parallel corpus (zoo/text/corpus.json) by language: "train", "held_out" or "all".

    The last ``held_out`` sentences of every language are kept out of training; they are the demo
    sample and the text the cards' figures are measured on. "emoji" lines are not parallel.
    """
    if split not in ("train", "held_out", "all"):
        raise ConfigError(f"corpus split must be 'train', 'held_out' or 'all', got {split!r}")
    data = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
    k = data["held_out"]
    pick = {"train": lambda s: s[:-k], "held_out": lambda s: s[-k:], "all": lambda s: s}[split]
    return {lang: pick(sentences) for lang, sentences in data["sentences"].items()}


def parallel_languages() -> list[str]:
    return json.loads(CORPUS_PATH.read_text(encoding="utf-8"))["parallel"]
