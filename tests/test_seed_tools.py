"""seed-tiny everywhere the zoo is used, by name, through the hooks on ZooModel: the demo table (`make demo`),
`tokenzoo batch`, `tokenzoo compare` beside flextok-tiny, and `tokenzoo finetune`. No tool names the family."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
import zoo.tools.batch
from zoo.cards import read_card_data
from zoo.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = "seed-tiny"


@pytest.fixture(scope="module")
def model():
    return zoo.load(MODEL)


def pictures(folder: Path, sizes=((48, 40), (29, 61), (32, 32))) -> list[str]:
    """PNG files of random pictures of other sizes than the model's (the tools must resize them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"picture{i}.png")
        paths.append(str(folder / f"picture{i}.png"))
    return paths


def test_no_tool_or_app_tab_names_an_image_family():
    files = [*ROOT.glob("zoo/tools/*.py"), *ROOT.glob("demos/**/*.py")]
    naming = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"vision\.|seed-tiny|seed-tokenizer|\bSEED\b|flextok", line)
    ]
    assert naming == []


@pytest.mark.slow
def test_the_demo_table_has_a_seed_tiny_row_with_bits_per_pixel_similarity_usage_and_time(tmp_path, capsys):
    from zoo.tools.demo import main as demo_main

    assert demo_main(tmp_path, families=["seed"]) == 0  # `make demo` runs this for every family
    table = capsys.readouterr().out
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {MODEL} |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "image" and cells[3] == "32"
    assert cells[4] == f"{32 * math.log2(512) / 32**2:.4g} bits/pixel"
    assert re.fullmatch(r"reconstruction embedding cosine 0\.\d\d, codebook usage \d+/512", cells[5])
    assert float(cells[6]) > 0
    assert (tmp_path / "seed" / "seed_tiny_grid.png").is_file()
    (saved,) = json.loads((tmp_path / "demo.json").read_text())
    assert saved["model"] == MODEL and saved["unit"] == "pixel"


def test_tokenzoo_batch_writes_one_row_per_picture_with_the_ids_encode_gives(model, tmp_path, capsys):
    paths = pictures(tmp_path / "in")
    rgba = tmp_path / "in" / "rgba.png"
    Image.open(paths[0]).convert("RGBA").save(rgba)  # converted to RGB, as upstream's processor does
    (tmp_path / "in" / "notes.png").write_text("not a picture")
    inputs = [*paths, str(rgba), str(tmp_path / "in" / "notes.png")]
    assert main(["batch", MODEL, *inputs, "--out", str(tmp_path / "out"), "--batch-size", "2", "--no-progress"]) == 0
    rows = zoo.tools.batch.read_shards(tmp_path / "out").to_pylist()
    assert [r["source"] for r in rows] == inputs[:4]
    expected = model.encode(inputs[:4]).ids
    assert [r["ids"] for r in rows] == expected.tolist() and rows[3]["ids"] == rows[0]["ids"]
    assert {r["model"] for r in rows} == {MODEL} and all(r["length"] == 32 for r in rows)
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["source"] == inputs[4] and error["stage"] == "load" and "notes.png" in error["error"]


def test_tokenzoo_compare_puts_seed_tiny_and_flextok_tiny_side_by_side_on_the_same_pictures(tmp_path, capsys):
    paths = pictures(tmp_path / "in")
    out = tmp_path / "table.json"
    assert main(["compare", MODEL, "flextok-tiny", "--inputs", *paths, "--json", str(out)]) == 0
    markdown = capsys.readouterr().out
    table = json.loads(out.read_text())
    seed, flextok = table["rows"]
    assert (seed["model"], flextok["model"]) == (MODEL, "flextok-tiny") and seed["items"] == flextok["items"] == 3
    assert seed["tokens_per_item"] == flextok["tokens_per_item"] == 32  # flextok-tiny at its full k
    assert seed["unit"] == flextok["unit"] == "pixel"
    assert seed["bits_per_unit"] == pytest.approx(32 * math.log2(512) / 32**2)
    assert flextok["bits_per_unit"] == pytest.approx(32 * math.log2(64000) / 32**2)
    assert seed["quality"]["name"] == "reconstruction embedding cosine" and -1 <= seed["quality"]["value"] <= 1
    assert flextok["quality"]["name"] == "PSNR dB" and seed["decode_ms_per_item"] > 0
    assert f"| {MODEL} |" in markdown and "| flextok-tiny |" in markdown


@pytest.mark.slow
def test_tokenzoo_finetune_trains_seed_tiny_into_a_model_folder_whose_card_records_the_run(model, tmp_path, capsys):
    data = model.sample_inputs() + pictures(tmp_path / "in")
    argv = ["finetune", MODEL, "--data", *data, "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "3"]
    assert main([*argv, "--eval-every", "2", "--lr", "1e-4", "--no-progress", "--cpu"]) == 0
    tuned = zoo.load(tmp_path / "run" / "model")
    assert type(tuned) is type(model) and tuned.config == model.config and not tuned.training
    before, after = model.state_dict(), tuned.state_dict()
    assert torch.equal(
        before["visual_encoder.blocks.0.attn.qkv.weight"], after["visual_encoder.blocks.0.attn.qkv.weight"]
    )
    assert not torch.equal(before["quantize.embed"], after["quantize.embed"])  # trained: the codebook moved
    card = read_card_data(tmp_path / "run" / "model" / "README.md")
    assert card["base_model"] == MODEL and card["finetune"]["steps"] == 2
    tokens = tuned.encode(model.sample_inputs())
    assert tokens.ids.shape == (len(model.sample_inputs()), 32)
    size = tuned.config.pixel_size  # the tiny pixel decoder draws at its own size
    assert tuned.decode(tokens).shape == (len(model.sample_inputs()), 3, size, size)


def test_tokenzoo_encode_and_decode_round_trip_pictures_and_refuse_bad_files_with_exit_2(model, tmp_path, capsys):
    from zoo.api import Tokens

    paths = pictures(tmp_path / "in")
    assert main(["encode", MODEL, *paths, "--out", str(tmp_path / "t.safetensors")]) == 0
    assert torch.equal(Tokens.load(tmp_path / "t.safetensors").ids, model.encode(paths).ids)
    assert main(["decode", MODEL, str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "pictures")]) == 0
    written = sorted(p.name for p in (tmp_path / "pictures").iterdir() if not p.name.startswith("."))
    assert written == sorted(f"{Path(p).stem}.png" for p in paths)  # decoded files keep their sources' names
    capsys.readouterr()

    (tmp_path / "notes.png").write_text("not a picture")
    Tokens(ids=torch.zeros(1, 31, dtype=torch.int64)).save(tmp_path / "short.safetensors")
    Tokens(ids=torch.full((1, 32), 512)).save(tmp_path / "outside.safetensors")
    for argv, message in [
        (["encode", MODEL, str(tmp_path / "notes.png"), "--out", str(tmp_path / "x.safetensors")], "notes.png"),
        (["decode", MODEL, str(tmp_path / "short.safetensors"), "--out", str(tmp_path / "x")], "exactly 32 tokens"),
        (["decode", MODEL, str(tmp_path / "outside.safetensors"), "--out", str(tmp_path / "x")], "[0, 512)"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
