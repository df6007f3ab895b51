"""The bundled flextok-tiny checkpoint and the demo built on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from vision.flextok.data import make_images
from zoo.metrics.image import psnr


@pytest.fixture(scope="module")
def tiny():
    return zoo.load("flextok-tiny")


def test_flextok_tiny_loads_by_name_with_its_trained_config(tiny):
    assert tiny.arch == "flextok" and tiny.config.image_size == 32
    assert tiny.config.vae_scaling_factor != 1.0  # set from the trained VAE's latent std


def test_flextok_tiny_reconstructs_held_out_images_better_from_all_tokens_than_from_one(tiny):
    images = make_images(16, tiny.config.image_size, seed=777, held_out=True)
    tokens = tiny.encode(images)
    coarse = psnr(tiny.decode(tokens.truncate(1), seed=0).clamp(-1, 1), images).mean()
    fine = psnr(tiny.decode(tokens, seed=0).clamp(-1, 1), images).mean()
    assert fine > coarse + 0.5


def test_flextok_tiny_reproduces_its_card_figures_and_improves_with_every_doubling_of_k(tiny):
    from vision.flextok.train_tiny import card_ks, evaluate, held_out_images

    record = json.loads((Path(__file__).resolve().parent.parent / "hub_cards/flextok-tiny/training.json").read_text())
    images = held_out_images(record["held_out_images"], record["seed"])
    rows = evaluate(tiny, images, card_ks(tiny.config.num_registers))
    assert [r["k"] for r in rows] == [r["k"] for r in record["metrics"]]
    for got, card in zip(rows, record["metrics"], strict=True):
        assert got["psnr"] == pytest.approx(card["psnr"], abs=0.05), got["k"]
    by_k = [r["psnr"] for r in rows if r["k"] != "vae"]
    assert all(finer > coarser for coarser, finer in zip(by_k, by_k[1:])), by_k
    assert rows[-1]["psnr"] > by_k[-1]  # the VAE alone is the ceiling


def test_demo_writes_a_grid_and_reports_psnr_for_each_k(tmp_path):
    from PIL import Image

    from vision.flextok.demo import run

    rows = run(tmp_path)
    assert [row["tokens"] for row in rows] == [1, 2, 4, 8, 16, 32]
    assert all(row["quality"].startswith("PSNR ") and row["model"] == "flextok-tiny" for row in rows)
    grid = Image.open(tmp_path / "flextok_tiny_grid.png")
    assert grid.width > grid.height  # one column for the original and one per k, one row per image
    assert torch.tensor([r["bits_per_unit"] for r in rows]).diff().gt(0).all()
