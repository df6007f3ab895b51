"""The bundled tokenunify-tiny checkpoint and the demo hook."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.files import cards_dir


def test_tokenunify_tiny_card_reports_all_three_arms_with_seeds():
    results = json.loads((cards_dir() / "tokenunify-tiny" / "results.json").read_text())
    assert set(results["arms"]) == {"mixture", "random", "scratch"}
    assert all(len(runs) >= 2 for runs in results["arms"].values())
    card = (cards_dir() / "tokenunify-tiny" / "README.md").read_text()
    for arm in ("mixture", "random", "scratch"):
        assert f"VOI ({arm} pre-training)" in card


def test_tokenunify_tiny_loads_as_a_three_affinity_model():
    model = zoo.load("tokenunify-tiny")
    assert model.config.out_chans == 3 and model.arch == "tokenunify"


@pytest.mark.slow
def test_demo_segments_a_held_out_volume_and_writes_the_picture(tmp_path):
    from em_volume.demo import run

    rows = run(tmp_path)
    assert (tmp_path / "tokenunify_demo.png").stat().st_size > 10_000
    (row,) = rows
    assert set(row) == {"model", "modality", "input", "tokens", "bits_per_unit", "quality", "seconds_per_item"}
    voi = float(row["quality"].split()[1])
    assert voi < 4.0  # an untrained network merges everything: VOI about 6.5 on this volume
