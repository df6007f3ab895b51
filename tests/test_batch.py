"""zoo.tools.batch: inputs, shards, errors, resume after kill -9, and one vs two accelerate processes.

The test-only models live in tests/fakes.py; ``python -m tests.fakes batch ARGS`` is the batch CLI with
them registered, so a subprocess can be killed in the middle of a slow run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import zoo
import zoo.tools.batch
from tests.fakes import EchoPreprocess, SlowBytes, SlowBytesConfig, WaveTokens
from tests.helpers import free_port
from zoo.api import Tokens
from zoo.errors import ConfigError, InputError
from zoo.registry import bundled_models
from zoo.tools.inputs import resolve_inputs

pytestmark = pytest.mark.usefixtures("fakes")

ROOT = Path(__file__).resolve().parent.parent


def write_texts(folder: Path, texts: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(texts):
        path = folder / f"doc{i:03d}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def table_rows(out: Path) -> list[dict]:
    return zoo.tools.batch.read_shards(out).to_pylist()


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


# ---- inputs ------------------------------------------------------------------------------------
def test_inputs_resolve_from_files_folders_globs_and_list_files_in_order(tmp_path):
    a, b, c = write_texts(tmp_path / "docs", ["a", "b", "c"])
    (tmp_path / "list.txt").write_text(f"# a comment\n{c}\ndocs/doc000.txt\n")
    found = resolve_inputs([str(b), str(tmp_path / "docs" / "*.txt"), f"@{tmp_path / 'list.txt'}"])
    assert found == [str(b), str(a), str(c)]  # duplicates dropped, first mention wins
    assert resolve_inputs([tmp_path / "docs"]) == [str(a), str(b), str(c)]


def test_a_glob_matching_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="matches no files"):
        resolve_inputs([str(tmp_path / "*.wav")])


def test_files_are_bucketed_by_their_size_when_the_family_gives_no_batch_key(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x" * 300)
    model = SlowBytes(SlowBytesConfig())
    assert model.batch_key(tmp_path / "a.wav") == 300 and model.batch_key("abc") == 3


def test_arrays_of_one_shape_reach_preprocess_stacked_as_one_batch():
    model = EchoPreprocess(config=None)
    stacked = model.collate([np.zeros((2, 3)), np.ones((2, 3))])
    ragged = model.collate([np.zeros(2), np.ones(3)])
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2, 2, 3)
    assert isinstance(ragged, list) and len(ragged) == 2


def test_large_per_sample_meta_tensors_are_left_out_of_the_rows():
    tokens = Tokens(
        ids=torch.zeros(2, 3, dtype=torch.long),
        meta={"kept": torch.tensor([[0, 1], [1, 2]]), "activations": torch.zeros(2, 5000), "rate": 25},
    )
    rows = zoo.tools.batch.token_rows(tokens)
    assert json.loads(rows[1]["meta"]) == {"kept": [1, 2], "rate": 25}


def test_batches_group_similar_sizes_within_the_limits():
    keys = [50, 10, 12, 49, 11, 51]
    batches = zoo.tools.batch.plan_batches(keys, batch_size=3, max_batch_units=None)
    assert batches == [[1, 4, 2], [3, 0, 5]]
    capped = zoo.tools.batch.plan_batches(keys, batch_size=3, max_batch_units=100)
    assert all(max(keys[i] for i in b) * len(b) <= 100 for b in capped)
    assert sorted(i for b in capped for i in b) == list(range(6))


# ---- running -----------------------------------------------------------------------------------
def sample_files(model, folder: Path) -> list[str]:
    """The model's sample inputs as files: paths as they are, strings written to .txt files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, item in enumerate(model.sample_inputs()):
        if isinstance(item, (str, os.PathLike)) and Path(item).is_file():
            files.append(os.fspath(item))
        elif isinstance(item, str):
            (folder / f"sample{i}.txt").write_text(item, encoding="utf-8")
            files.append(str(folder / f"sample{i}.txt"))
        else:
            pytest.fail(f"{model.arch}: sample_inputs gives {type(item).__name__} items, not files or text")
    return files


@pytest.mark.parametrize("name", bundled_models())
def test_every_bundled_model_batches_its_samples_into_rows_equal_to_its_encode(name, tmp_path):
    model = zoo.load(name)
    files = sample_files(model, tmp_path / "in")
    zoo.tools.batch.run(name, files, tmp_path / "out", batch_size=2, progress=False)
    rows = table_rows(tmp_path / "out")
    for path, row in zip(files, rows):
        tokens = model.encode(model.collate([model.load_item(path)]))
        assert row["source"] == path
        if tokens.ids is not None:
            assert row["ids"] == tokens.ids[0][tokens.mask[0]].tolist()
        else:  # continuous tokens (pose, including HoT's kept frames, and EM): the vectors of the valid positions
            expected = tokens.embeddings[0][tokens.mask[0]]
            torch.testing.assert_close(torch.tensor(row["embeddings"]), expected, atol=1e-5, rtol=1e-5)
    assert len(rows) == len(files)


def test_every_input_becomes_one_row_with_its_ids_model_and_revision(tmp_path):
    texts = ["hello", "wörld", "", "tokens for everyone"]
    paths = write_texts(tmp_path / "docs", texts)
    manifest = zoo.tools.batch.run("byte-utf8", [str(p) for p in paths], tmp_path / "out", batch_size=3, progress=False)
    rows = table_rows(tmp_path / "out")
    assert [r["source"] for r in rows] == [str(p) for p in paths]
    assert [r["ids"] for r in rows] == [list(t.encode("utf-8")) for t in texts]
    assert [r["length"] for r in rows] == [len(t.encode("utf-8")) for t in texts]
    assert {r["model"] for r in rows} == {"byte-utf8"}
    assert {r["revision"] for r in rows} == {manifest["revision"]} and manifest["revision"].startswith("sha256:")
    assert manifest["rows"] == 4 and manifest["errors"] == 0


def test_bad_inputs_go_to_the_errors_file_and_the_run_goes_on(tmp_path):
    model = SlowBytes(SlowBytesConfig())
    paths = write_texts(tmp_path / "docs", ["fine", "BOOM here", "also fine"])
    (tmp_path / "docs" / "binary.txt").write_bytes(b"\xff\xfe\x00")
    inputs = [*map(str, paths), str(tmp_path / "docs" / "binary.txt"), str(tmp_path / "missing.txt")]
    manifest = zoo.tools.batch.run(model, inputs, tmp_path / "out", batch_size=8, progress=False)
    assert [r["source"] for r in table_rows(tmp_path / "out")] == [inputs[0], inputs[2]]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["source"], e["stage"]) for e in errors] == [
        (inputs[1], "encode"),
        (inputs[3], "load"),
        (inputs[4], "load"),
    ]
    assert "not UTF-8" in errors[1]["error"] and "no such file" in errors[2]["error"]
    assert manifest["errors"] == 3 and manifest["rows"] == 2


def test_audio_like_inputs_are_bucketed_by_length_through_the_family_hooks(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [400, 40, 410, 44, 405, 48]
    for i, n in enumerate(lengths):
        np.save(tmp_path / f"clip{i}.npy", rng.uniform(-1, 1, n).astype(np.float32))
    model = WaveTokens()
    zoo.tools.batch.run(model, [str(tmp_path / "*.npy")], tmp_path / "out", batch_size=3, progress=False)
    assert sorted(model.batches_seen) == [[40, 44, 48], [400, 405, 410]]
    rows = table_rows(tmp_path / "out")
    assert [r["length"] for r in rows] == [n // 4 for n in lengths]
    assert json.loads(rows[0]["meta"]) == {"arch": "test-wave", "codebook_size": 9}  # encode records its arch


def test_a_second_run_into_a_used_folder_needs_resume_or_overwrite(tmp_path):
    paths = [str(p) for p in write_texts(tmp_path / "docs", ["a", "b"])]
    zoo.tools.batch.run("byte-utf8", paths, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        zoo.tools.batch.run("byte-utf8", paths, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="inputs"):
        zoo.tools.batch.run("byte-utf8", paths[:1], tmp_path / "out", resume=True, progress=False)
    manifest = zoo.tools.batch.run("byte-utf8", paths[:1], tmp_path / "out", overwrite=True, progress=False)
    assert manifest["rows"] == 1


def test_the_cli_hook_adds_a_batch_subcommand_that_returns_zero(tmp_path, capsys):
    import argparse

    paths = write_texts(tmp_path / "docs", ["x", "y"])
    parser = argparse.ArgumentParser()
    zoo.tools.batch.add_cli(parser.add_subparsers())
    args = parser.parse_args(["batch", "byte-utf8", str(paths[0]), str(paths[1]), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "2 of 2 inputs" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_equals_an_uninterrupted_run(tmp_path):
    model_dir = SlowBytes(SlowBytesConfig(seconds_per_batch=0.15)).save_pretrained(tmp_path / "slow-model")
    inputs = [str(p) for p in write_texts(tmp_path / "docs", [f"text number {i} " * (i % 5) for i in range(48)])]
    options = dict(batch_size=2, shard_size=4)
    argv = [str(model_dir), *inputs, "--out", str(tmp_path / "killed"), "--batch-size", "2", "--shard-size", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "batch", *argv, "--no-progress"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "killed").glob("shard-*.parquet"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the batch subprocess wrote no shards in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list((tmp_path / "killed").glob("shard-*.parquet")))
    assert 2 <= written < 12, "the kill must land mid-run"
    assert not (tmp_path / "killed" / "manifest.json").exists()

    resumed = zoo.tools.batch.run(str(model_dir), inputs, tmp_path / "killed", resume=True, progress=False, **options)
    whole = zoo.tools.batch.run(str(model_dir), inputs, tmp_path / "whole", progress=False, **options)
    assert resumed == whole
    assert table_rows(tmp_path / "killed") == table_rows(tmp_path / "whole")
    assert not list((tmp_path / "killed").glob(".*.tmp"))


@pytest.mark.slow
def test_two_cpu_processes_write_the_same_shards_as_one(tmp_path):
    inputs = [str(p) for p in write_texts(tmp_path / "docs", [f"sample {i} " * i for i in range(10)])]
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--main_process_port", str(free_port())]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.tools.batch", "byte-utf8", *inputs]
    command += ["--out", str(tmp_path / "two"), "--shard-size", "3", "--no-progress"]
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    zoo.tools.batch.run("byte-utf8", inputs, tmp_path / "one", shard_size=3, progress=False)
    shards = sorted(p.name for p in (tmp_path / "one").glob("shard-*.parquet"))
    assert shards == sorted(p.name for p in (tmp_path / "two").glob("shard-*.parquet")) and len(shards) == 4
    for name in shards:
        assert pq.read_table(tmp_path / "one" / name).equals(pq.read_table(tmp_path / "two" / name))
    assert json.loads((tmp_path / "one" / "manifest.json").read_text()) == json.loads(
        (tmp_path / "two" / "manifest.json").read_text()
    )
