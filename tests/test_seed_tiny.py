"""The bundled seed-tiny checkpoint: its card's figures measured again, and the demo built on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import zoo

FOLDER = Path(__file__).resolve().parent.parent / "hub_cards" / "seed-tiny"


@pytest.fixture(scope="module")
def model():
    return zoo.load("seed-tiny")


@pytest.fixture(scope="module")
def record():
    return json.loads((FOLDER / "training.json").read_text())


def test_seed_tiny_is_small_and_says_how_it_was_made(record):
    assert (FOLDER / "model.safetensors").stat().st_size < 8_000_000
    card = (FOLDER / "README.md").read_text()
    assert record["command"] in card and "python -m vision.seed.train_tiny" in record["command"]


def test_the_card_figures_hold_when_measured_again(model, record):
    from vision.seed.train_tiny import evaluate, load_heads

    expected = record["figures"]
    with torch.no_grad():
        figures = evaluate(model, load_heads(FOLDER), expected["held_out_images"], expected["reconstructed_images"])
    keys = ("caption_retrieval_top1", "codebook_usage", "embedding_cosine", "reconstruction_caption_retrieval_top1")
    for key in keys:
        assert figures[key] == pytest.approx(expected[key], abs=0.02), key
    # what the figures claim: tokens name the scene far above chance, and drawings keep what the tokens said
    assert figures["caption_retrieval_top1"] > 20 * figures["caption_retrieval_chance"]
    assert figures["embedding_cosine"] > figures["embedding_cosine_unrelated"] + 0.1


def test_the_demo_writes_a_grid_and_one_table_row(tmp_path):
    from vision.seed.demo import run

    (row,) = run(tmp_path)
    assert (tmp_path / "seed_tiny_grid.png").is_file()
    assert row["model"] == "seed-tiny" and row["tokens"] == 32 and row["unit"] == "pixel"
    assert row["bits_per_unit"] == pytest.approx(32 * math.log2(512) / 32**2, abs=1e-4)
    assert row["quality"].startswith("reconstruction embedding cosine ") and "codebook usage" in row["quality"]
    assert row["seconds_per_item"] > 0


def test_the_image_tab_offers_seed_tiny_beside_flextok_tiny():
    from demos.app import registered_models

    images = registered_models()["image"]
    assert "seed-tiny" in images and "flextok-tiny" in images


def test_the_image_tab_reconstructs_with_seed_tiny_and_says_why_not_below_32_tokens(model):
    pytest.importorskip("gradio")
    from demos.tabs.image import tokenize_image

    sample = model.sample_inputs()[0]
    picture, grid, summary = tokenize_image("seed-tiny", sample, 32)
    assert picture is not None and "**32 tokens**" in summary and sum(len(r) for r in grid) >= 32
    picture, _, summary = tokenize_image("seed-tiny", sample, 8)
    assert picture is None and "exactly 32 tokens" in summary
