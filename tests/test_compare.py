"""zoo.tools.compare: one table of tokens, bits, codebook usage, quality and time, as Markdown and JSON."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

import zoo
import zoo.registry
import zoo.tools.compare
from tests.fakes import (
    PlainImageVQ,
    ScoredImageVQ,
    TimedWaveTokens,
    TinyImageVQ,
    TinyImageVQConfig,
    WaveTokens,
    make_images,
)
from zoo.errors import ConfigError
from zoo.registry import bundled_models


def test_text_models_report_bytes_bits_usage_and_exact_round_trips(tmp_path):
    texts = ["abc", "héllo"]
    for i, text in enumerate(texts):
        (tmp_path / f"t{i}.txt").write_text(text, encoding="utf-8")
    table = zoo.tools.compare.compare(["byte-utf8"], [str(tmp_path / "*.txt")])
    (row,) = table["rows"]
    assert table["modality"] == "text" and table["items"] == 2
    assert row["tokens_per_item"] == pytest.approx((3 + 6) / 2)
    assert row["unit"] == "byte" and row["bits_per_unit"] == pytest.approx(math.log2(257))
    assert row["codebook_usage"] == pytest.approx(len(set(b"abchllo") | set("é".encode())) / 257)
    assert row["quality"]["value"] == 1.0 and "decode(encode(text)) == text" in row["quality"]["protocol"]
    assert row["encode_ms_per_item"] > 0 and row["decode_ms_per_item"] > 0


def _tokenizers_of(modality: str) -> list[str]:
    """Bundled models that tokenize the modality's own inputs: a speech synthesiser (audio, but it reads text)
    does not take the audio tokenizers' sample clips."""
    arch = zoo.registry.get_arch
    return [n for n in bundled_models(modality) if "synthesize" not in arch(zoo.registry.card_data(n)["arch"]).tasks]


@pytest.mark.parametrize("modality", sorted({zoo.registry.card_data(n)["modality"] for n in bundled_models()}))
def test_all_bundled_models_of_a_modality_fill_one_table_on_shared_samples(modality, tmp_path):
    names = _tokenizers_of(modality)
    table = zoo.tools.compare.compare(names)  # on the first model's sample inputs
    assert [r["model"] for r in table["rows"]] == names
    assert len({r["items"] for r in table["rows"]}) == 1
    for row in table["rows"]:
        assert row["tokens_per_item"] > 0 and row["encode_ms_per_item"] > 0
        assert row["codebook_usage"] is None or 0 < row["codebook_usage"] <= 1


def test_text_rows_carry_fertility_from_zoo_metrics_text(tmp_path):
    (tmp_path / "a.txt").write_text("two words", encoding="utf-8")
    (row,) = zoo.tools.compare.compare(["byte-utf8"], [str(tmp_path / "a.txt")])["rows"]
    assert row["extra"] == {"fertility": 4.5}


def test_image_models_side_by_side_give_one_row_each_with_bits_per_pixel_and_psnr(tmp_path):
    paths = make_images(tmp_path / "images", 5)
    torch.manual_seed(0)
    first = ScoredImageVQ(TinyImageVQConfig()).eval()
    torch.manual_seed(1)
    second = ScoredImageVQ(TinyImageVQConfig(codebook_size=8)).eval()
    table = zoo.tools.compare.compare([first, second], paths, batch_size=2)
    assert [r["items"] for r in table["rows"]] == [5, 5]
    assert [r["bits_per_unit"] for r in table["rows"]] == pytest.approx([16 * 5 / 64, 16 * 3 / 64])
    assert all(r["unit"] == "pixel" and r["quality"]["name"] == "PSNR dB" for r in table["rows"])
    assert all(0 < r["codebook_usage"] <= 1 and 1 <= r["codebook_perplexity"] for r in table["rows"])


def test_the_codebook_size_defaults_to_the_model_s_one_zoo_quantizer(tmp_path):
    (row,) = zoo.tools.compare.compare([PlainImageVQ(TinyImageVQConfig(codebook_size=16))], make_images(tmp_path, 2))[
        "rows"
    ]
    assert row["codebook_size"] == 16 and row["bits_per_unit"] is None  # no pixel count without a hook or meta


def test_image_quality_defaults_to_psnr_of_the_decoded_batch_against_the_input(tmp_path):
    torch.manual_seed(0)
    model = PlainImageVQ(TinyImageVQConfig()).eval()
    (row,) = zoo.tools.compare.compare([model], make_images(tmp_path, 3))["rows"]
    x = model.collate([model.load_item(p) for p in make_images(tmp_path, 3)])
    expected = 10 * math.log10(4 / float((model.decode(model.encode(x)).clamp(-1, 1) - x).pow(2).mean()))
    assert row["quality"]["name"] == "PSNR dB" and row["quality"]["value"] == pytest.approx(expected, rel=0.05)


def test_an_encoder_only_model_gets_no_decode_time_or_quality(tmp_path):
    for i, n in enumerate([40, 80]):
        np.save(tmp_path / f"c{i}.npy", np.zeros(n, np.float32))
    (row,) = zoo.tools.compare.compare([WaveTokens()], [str(tmp_path / "*.npy")])["rows"]
    assert row["tokens_per_item"] == pytest.approx(15) and row["codebook_size"] == 9
    assert row["quality"] is None and row["decode_ms_per_item"] is None and row["bits_per_unit"] is None


def test_without_an_input_units_hook_seconds_come_from_the_tokens_meta(tmp_path):
    for i, n in enumerate([40, 80]):
        np.save(tmp_path / f"c{i}.npy", np.zeros(n, np.float32))
    (row,) = zoo.tools.compare.compare([TimedWaveTokens()], [str(tmp_path / "*.npy")])["rows"]
    assert row["unit"] == "second" and row["bits_per_unit"] == pytest.approx(30 * math.log2(9) / 1.5)


def test_models_of_different_modalities_are_refused():
    with pytest.raises(ConfigError, match="one modality"):
        zoo.tools.compare.compare(["byte-utf8", TinyImageVQ()])


def test_markdown_has_a_row_per_model_and_spells_out_each_quality_protocol():
    table = zoo.tools.compare.compare(["byte-utf8", "byte-utf8"])
    markdown = zoo.tools.compare.to_markdown(table)
    assert markdown.count("| byte-utf8 |") == 2
    assert "exact round trips 1 [1]" in markdown and "[1] decode(encode(text)) == text" in markdown


def test_the_cli_hook_prints_markdown_and_writes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    zoo.tools.compare.add_cli(parser.add_subparsers())
    args = parser.parse_args(["compare", "byte-utf8", "--json", str(tmp_path / "t.json")])
    assert args.func(args) == 0
    assert "| byte-utf8 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["model"] == "byte-utf8"
