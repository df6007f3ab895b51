"""zoo.finetune: loss goes down, the card records the run, resume is bit-for-bit, 2 processes = 1.

Run as a module (``python -m tests.test_finetune ARGS``) it is the finetune CLI with the test-only
image model below registered, so ``accelerate launch`` can start it in two processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
import zoo.batch
import zoo.finetune
import zoo.registry
from tests.helpers import free_port
from tests.test_batch import synthetic_files
from zoo.api import Tokens, ZooModel
from zoo.cards import card_metrics, read_card_data
from zoo.errors import ConfigError, NotSupportedError
from zoo.hub import read_safetensors
from zoo.quant import VectorQuantizer

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TinyImageVQConfig:
    hidden: int = 16
    codebook_size: int = 32
    code_dim: int = 4
    dropout: float = 0.1


class TinyImageVQ(ZooModel):
    """An 8x8 grey-image VQ autoencoder: 4x4 ids per image. Trains in seconds on CPU."""

    arch = "test-tiny-image-vq"
    modality = "image"
    config_class = TinyImageVQConfig

    def __init__(self, config: TinyImageVQConfig = TinyImageVQConfig()):
        super().__init__(config)
        c = config
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.hidden, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Conv2d(c.hidden, c.code_dim, 1),
        )
        self.quantizer = VectorQuantizer(c.codebook_size, c.code_dim, learnable=True)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c.code_dim, c.hidden, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(c.hidden, 1, 3, padding=1),
        )

    def load_item(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(np.load(path)).float()

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)[:, None]  # (B, 1, 8, 8)

    def _forward(self, x: torch.Tensor):
        z = self.encoder(x).permute(0, 2, 3, 1)  # (B, 4, 4, D)
        q, ids = self.quantizer(z)
        return z, q, ids, self.decoder(q.permute(0, 3, 1, 2))

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        z, q, ids, reconstruction = self._forward(x)
        codebook = F.mse_loss(self.quantizer.ids_to_codes(ids), z.detach())
        return F.mse_loss(reconstruction, x) + codebook + 0.25 * F.mse_loss(z, q.detach())

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        return {"mse": float(F.mse_loss(self._forward(x)[3], x))}

    @zoo.api.inference
    def encode(self, x: torch.Tensor) -> Tokens:
        ids = self._forward(x)[2]
        return Tokens(ids=ids.reshape(len(x), -1), meta={"codebook_size": self.config.codebook_size})

    @zoo.api.inference
    def decode(self, tokens: Tokens) -> torch.Tensor:
        codes = self.quantizer.ids_to_codes(tokens.ids.reshape(-1, 4, 4))
        return self.decoder(codes.permute(0, 3, 1, 2))


zoo.register_arch(TinyImageVQ.arch, "tests.test_finetune:TinyImageVQ", overwrite=True)


def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Smooth 8x8 images: sums of two random low-frequency waves, in [-1, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, np.pi, 8)
    paths = []
    for i in range(count):
        fy, fx, phase = rng.uniform(0.5, 2, 2), rng.uniform(0.5, 2, 2), rng.uniform(0, np.pi, 2)
        image = sum(np.sin(fy[k] * grid[:, None] + fx[k] * grid[None] + phase[k]) for k in range(2)) / 2
        path = folder / f"img{i:03d}.npy"
        np.save(path, image.astype(np.float32))
        paths.append(str(path))
    return paths


def base_model(tmp_path: Path, dropout: float = 0.1) -> Path:
    torch.manual_seed(0)
    return TinyImageVQ(TinyImageVQConfig(dropout=dropout)).save_pretrained(tmp_path / "base")


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_reduce_the_training_loss(tmp_path):
    data = make_images(tmp_path / "images", 20)
    zoo.finetune.finetune(
        str(base_model(tmp_path)), data, tmp_path / "run", steps=40, batch_size=6, lr=1e-2, progress=False
    )
    losses = [line["loss"] for line in read_log(tmp_path / "run") if "loss" in line]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_the_result_is_a_zoo_model_folder_whose_card_records_base_data_steps_and_metric(tmp_path):
    data = make_images(tmp_path / "images", 12)
    base = base_model(tmp_path)
    summary = zoo.finetune.finetune(
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
    zoo.finetune.finetune(base, data, tmp_path / "whole", **options)
    zoo.finetune.finetune(base, data, tmp_path / "crashed", **options)
    # What a crash after the step-3 checkpoint leaves behind: no later checkpoint, no model.
    for later in ("checkpoints/step-000006", "model", "summary.json"):
        path = tmp_path / "crashed" / later
        subprocess.run(["rm", "-rf", str(path)], check=True)
    torch.manual_seed(1)  # a different base: only a resume that really starts from the checkpoint can match
    TinyImageVQ(TinyImageVQConfig()).save_pretrained(base)
    zoo.finetune.finetune(base, data, tmp_path / "crashed", resume=True, **options)
    whole = read_safetensors(tmp_path / "whole" / "model" / "model.safetensors")
    resumed = read_safetensors(tmp_path / "crashed" / "model" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert read_log(tmp_path / "whole") == read_log(tmp_path / "crashed")


def test_a_used_run_folder_needs_resume_or_overwrite(tmp_path):
    data = make_images(tmp_path / "images", 4)
    base = str(base_model(tmp_path))
    zoo.finetune.finetune(base, data, tmp_path / "run", steps=1, batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        zoo.finetune.finetune(base, data, tmp_path / "run", steps=1, batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="steps"):
        zoo.finetune.finetune(base, data, tmp_path / "run", steps=2, batch_size=2, resume=True, progress=False)


def test_bf16_mixed_precision_trains_where_the_device_supports_it(tmp_path):
    data = make_images(tmp_path / "images", 4)
    summary = zoo.finetune.finetune(
        str(base_model(tmp_path)), data, tmp_path / "run", steps=2, batch_size=2, mixed_precision="bf16", progress=False
    )
    assert np.isfinite(summary["final_eval"]["mse"]) and summary["mixed_precision"] == "bf16"


def test_a_model_without_training_loss_cannot_be_fine_tuned(tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(NotSupportedError, match="training_loss"):
        zoo.finetune.finetune("byte-utf8", [str(tmp_path / "a.txt")], tmp_path / "run", steps=1, progress=False)


def trainable_bundled_models() -> list[str]:
    names = []
    for name in zoo.batch.bundled_models():
        cls = zoo.get_arch(zoo.registry.card_data(name)["arch"])
        if cls.training_loss is not ZooModel.training_loss:
            names.append(name)
    return names


def seeded_loss(model: ZooModel, files: list[str]) -> float:
    """The training loss on ``files`` with the loss's own randomness (t, noise, k) drawn from seed 0."""
    model.eval()
    batch = zoo.batch.training_batch(model, [zoo.batch.load_item(model, p) for p in files])
    torch.manual_seed(0)
    with torch.no_grad():
        return float(model.training_loss(batch))


@pytest.mark.slow
@pytest.mark.parametrize("name", trainable_bundled_models())
def test_a_few_steps_on_each_bundled_family_model_reduce_its_loss(name, tmp_path):
    model = zoo.load(name)
    if hasattr(model, "sample_inputs"):
        samples = zoo.batch.sample_inputs(model)
        files = [os.fspath(p) for p in samples if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]
    else:
        files = synthetic_files(model.modality, tmp_path)
    if not files:
        pytest.skip(f"{name}: its family gives no sample_inputs() files to fine-tune on")
    before = seeded_loss(model, files)
    zoo.finetune.finetune(name, files, tmp_path / "run", steps=8, batch_size=len(files), lr=1e-4, progress=False)
    assert seeded_loss(zoo.load(tmp_path / "run" / "model"), files) < before


@pytest.mark.slow
def test_two_cpu_processes_train_the_same_as_one_within_tolerance(tmp_path):
    data = make_images(tmp_path / "images", 8)
    base = str(base_model(tmp_path, dropout=0.0))  # dropout masks would differ between the process splits
    args = ["--data", *data, "--steps", "3", "--batch-size", "4", "--lr", "3e-3", "--no-progress"]
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--main_process_port", str(free_port())]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tests.test_finetune", base]
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
    zoo.finetune.finetune(base, data, tmp_path / "one", steps=3, batch_size=4, lr=3e-3, progress=False)
    one = read_safetensors(tmp_path / "one" / "model" / "model.safetensors")
    two = read_safetensors(tmp_path / "two" / "model" / "model.safetensors")
    start = read_safetensors(Path(base) / "model.safetensors")
    assert any(not torch.equal(one[k], start[k]) for k in one)  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4)


if __name__ == "__main__":
    sys.exit(zoo.finetune.main())
