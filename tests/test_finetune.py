"""zoo.tools.finetune: loss goes down, the card records the run, resume is bit-for-bit, 2 processes = 1.

The test-only image model lives in tests/fakes.py; ``python -m tests.fakes finetune ARGS`` is the
finetune CLI with it registered, so ``accelerate launch`` can start it in two processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import zoo.registry
import zoo.tools.finetune
from tests.fakes import TinyImageVQ, TinyImageVQConfig, make_images
from tests.helpers import free_port
from zoo.cards import card_metrics, read_card_data
from zoo.errors import ConfigError, NotSupportedError
from zoo.hub import read_safetensors
from zoo.registry import bundled_models

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("fakes")


def base_model(tmp_path: Path, dropout: float = 0.1) -> Path:
    torch.manual_seed(0)
    return TinyImageVQ(TinyImageVQConfig(dropout=dropout)).save_pretrained(tmp_path / "base")


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_reduce_the_training_loss(tmp_path):
    data = make_images(tmp_path / "images", 20)
    zoo.tools.finetune.finetune(
        str(base_model(tmp_path)), data, tmp_path / "run", steps=40, batch_size=6, lr=1e-2, progress=False
    )
    losses = [line["loss"] for line in read_log(tmp_path / "run") if "loss" in line]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_the_result_is_a_zoo_model_folder_whose_card_records_base_data_steps_and_metric(tmp_path):
    data = make_images(tmp_path / "images", 12)
    base = base_model(tmp_path)
    summary = zoo.tools.finetune.finetune(
        str(base), data, tmp_path / "run", steps=4, batch_size=4, eval_every=2, progress=False, name="tiny-ft"
    )
    model = zoo.load(tmp_path / "run" / "model")
    assert isinstance(model, TinyImageVQ) and not model.training
    card = read_card_data(tmp_path / "run" / "model" / "README.md")
    assert card["base_model"] == str(base) and card["finetune"]["steps"] == 4
    assert card["model-index"][0]["name"] == "tiny-ft" and "12 files" not in card["training_data"]  # 1 of 12 held out
    (metric,) = card_metrics(card)
    assert metric["type"] == "mse" and metric["value"] == pytest.approx(summary["final_eval"]["mse"], abs=1e-6)
    assert "held out" in metric["protocol"]
    assert [line["step"] for line in read_log(tmp_path / "run") if "eval" in line] == [2, 4]


def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    data = make_images(tmp_path / "images", 9)
    base = str(base_model(tmp_path))
    options = dict(steps=6, batch_size=4, grad_accum=2, lr=3e-3, save_every=3, eval_every=3, progress=False)
    zoo.tools.finetune.finetune(base, data, tmp_path / "whole", **options)
    zoo.tools.finetune.finetune(base, data, tmp_path / "crashed", **options)
    # What a crash after the step-3 checkpoint leaves behind: no later checkpoint, no model.
    for later in ("checkpoints/step-000006", "model", "summary.json"):
        path = tmp_path / "crashed" / later
        subprocess.run(["rm", "-rf", str(path)], check=True)
    torch.manual_seed(1)  # a different base: only a resume that really starts from the checkpoint can match
    TinyImageVQ(TinyImageVQConfig()).save_pretrained(base)
    zoo.tools.finetune.finetune(base, data, tmp_path / "crashed", resume=True, **options)
    whole = read_safetensors(tmp_path / "whole" / "model" / "model.safetensors")
    resumed = read_safetensors(tmp_path / "crashed" / "model" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert read_log(tmp_path / "whole") == read_log(tmp_path / "crashed")


def test_a_used_run_folder_needs_resume_or_overwrite(tmp_path):
    data = make_images(tmp_path / "images", 4)
    base = str(base_model(tmp_path))
    zoo.tools.finetune.finetune(base, data, tmp_path / "run", steps=1, batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        zoo.tools.finetune.finetune(base, data, tmp_path / "run", steps=1, batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="steps"):
        zoo.tools.finetune.finetune(base, data, tmp_path / "run", steps=2, batch_size=2, resume=True, progress=False)


def test_bf16_mixed_precision_trains_where_the_device_supports_it(tmp_path):
    data = make_images(tmp_path / "images", 4)
    summary = zoo.tools.finetune.finetune(
        str(base_model(tmp_path)), data, tmp_path / "run", steps=2, batch_size=2, mixed_precision="bf16", progress=False
    )
    assert np.isfinite(summary["final_eval"]["mse"]) and summary["mixed_precision"] == "bf16"


def test_a_model_without_training_loss_cannot_be_fine_tuned(tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(NotSupportedError, match="does not support training"):
        zoo.tools.finetune.finetune("byte-utf8", [str(tmp_path / "a.txt")], tmp_path / "run", steps=1, progress=False)


def trainable_bundled_models() -> list[str]:
    names = []
    for name in bundled_models():
        if zoo.get_arch(zoo.registry.card_data(name)["arch"]).supports_training:
            names.append(name)
    return names


def seeded_loss(model, files: list[str]) -> float:
    """The training loss on ``files`` with the loss's own randomness (t, noise, k) drawn from seed 0."""
    model.eval()
    batch = model.training_batch([model.load_item(p) for p in files])
    torch.manual_seed(0)
    with torch.no_grad():
        return float(model.training_loss(batch))


@pytest.mark.slow
@pytest.mark.parametrize("name", trainable_bundled_models())
def test_a_few_steps_on_each_bundled_family_model_reduce_its_loss(name, tmp_path):
    model = zoo.load(name)
    samples = model.sample_inputs()
    files = [os.fspath(p) for p in samples if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]
    assert files, f"{name} supports training, so its sample inputs must be files holding training targets"
    before = seeded_loss(model, files)
    zoo.tools.finetune.finetune(name, files, tmp_path / "run", steps=8, batch_size=len(files), lr=1e-4, progress=False)
    assert seeded_loss(zoo.load(tmp_path / "run" / "model"), files) < before


@pytest.mark.slow
def test_two_cpu_processes_train_the_same_as_one_within_tolerance(tmp_path):
    data = make_images(tmp_path / "images", 8)
    base = str(base_model(tmp_path, dropout=0.0))  # dropout masks would differ between the process splits
    args = ["--data", *data, "--steps", "3", "--batch-size", "4", "--lr", "3e-3", "--no-progress"]
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--main_process_port", str(free_port())]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tests.fakes", "finetune", base]
    env = {"ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [*command, *args, "--out", str(tmp_path / "two")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    zoo.tools.finetune.finetune(base, data, tmp_path / "one", steps=3, batch_size=4, lr=3e-3, progress=False)
    one = read_safetensors(tmp_path / "one" / "model" / "model.safetensors")
    two = read_safetensors(tmp_path / "two" / "model" / "model.safetensors")
    start = read_safetensors(Path(base) / "model.safetensors")
    assert any(not torch.equal(one[k], start[k]) for k in one)  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4)
