"""The text family's demo hook: one row per bundled text tokenizer, outputs under out_dir."""

from __future__ import annotations

import zoo
from zoo.api import Tokens
from zoo.text.demo import run, sample
from zoo.tools.demo import COLUMNS


def test_demo_gives_one_row_per_bundled_text_tokenizer_with_every_column(tmp_path):
    rows = run(tmp_path)
    assert [r["model"] for r in rows] == zoo.list_models(modality="text")
    for row in rows:
        assert set(COLUMNS) <= set(row) and row["modality"] == "text" and row["tokens"] > 0


def test_demo_reports_every_bundled_tokenizer_lossless_on_the_sample(tmp_path):
    assert {r["quality"] for r in run(tmp_path)} == {"lossless round trip"}


def test_demo_writes_tokens_that_decode_back_to_the_sample(tmp_path):
    run(tmp_path)
    texts, _ = sample()
    tokens = Tokens.load(tmp_path / "bpe-tiny.tokens.safetensors")
    assert zoo.load("bpe-tiny").decode(tokens) == texts
    assert (tmp_path / "bpe-tiny.decoded.txt").read_text(encoding="utf-8") == "\n".join(texts) + "\n"
