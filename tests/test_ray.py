"""zoo.ray / zoo.tools.ray on a real local Ray instance (one per module: ray.init(num_cpus=2)).

Rows equal those of `tokenzoo batch` on the same inputs (discrete families exactly, continuous ones within
1e-5); an actor killed with SIGKILL mid-run is restarted, its task retried, and the output is complete
with no duplicates; bad inputs land in the errors table and the job goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

import zoo
import zoo.ray
import zoo.tools.batch
import zoo.tools.ray
from tests.fakes import SlowBytes, SlowBytesConfig, WaveTokens
from zoo.errors import ConfigError

pytestmark = [pytest.mark.usefixtures("fakes", "ray_cluster"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted(str(p) for p in (ROOT / "audio" / "samples").glob("*.wav"))


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; its workers import this checkout (tests.fakes, zoo)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([saved] if saved else [])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def write_texts(folder: Path, texts: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(texts):
        (folder / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
        paths.append(str(folder / f"doc{i:03d}.txt"))
    return paths


def rows(out: Path) -> list[dict]:
    return zoo.tools.batch.read_shards(out).to_pylist()


def errors(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


class PidBytes(SlowBytes):
    """SlowBytes that leaves its process id in ``<inputs>/../pids`` as it loads an item, so a test can kill it."""

    def load_item(self, path):
        pids = Path(path).parent.parent / "pids"
        pids.mkdir(exist_ok=True)
        (pids / str(os.getpid())).touch()
        return super().load_item(path)


# ---- the same rows as tokenzoo batch --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["s3tokenizer-tiny", "bpe-tiny"])
def test_ray_rows_equal_the_rows_of_tokenzoo_batch_for_discrete_families(name, tmp_path):
    inputs = CLIPS if name.startswith("s3") else write_texts(tmp_path / "docs", [f"text {i} " * i for i in range(9)])
    zoo.tools.batch.run(name, inputs, tmp_path / "batch", batch_size=2, progress=False)
    manifest = zoo.tools.ray.run(name, inputs, tmp_path / "ray", batch_size=2, actors=2, progress=False)
    assert rows(tmp_path / "ray") == rows(tmp_path / "batch")  # every column, in input order
    batch_manifest = json.loads((tmp_path / "batch" / "manifest.json").read_text())
    assert (manifest["rows"], manifest["revision"]) == (len(inputs), batch_manifest["revision"])


def test_ray_rows_of_a_continuous_family_match_tokenzoo_batch_within_tolerance(tmp_path):
    inputs = [str(p) for p in zoo.load("hot-mixste-tiny").sample_inputs()]
    zoo.tools.batch.run("hot-mixste-tiny", inputs, tmp_path / "batch", progress=False)
    zoo.tools.ray.run("hot-mixste-tiny", inputs, tmp_path / "ray", actors=2, progress=False)
    expected, got = rows(tmp_path / "batch"), rows(tmp_path / "ray")
    assert [r["source"] for r in got] == inputs and [r["length"] for r in got] == [r["length"] for r in expected]
    for a, b in zip(got, expected):
        assert a["ids"] is None and a["meta"] == b["meta"]
        torch.testing.assert_close(torch.tensor(a["embeddings"]), torch.tensor(b["embeddings"]), atol=1e-5, rtol=1e-5)


def test_the_stage_takes_a_column_of_bytes_or_arrays(tmp_path):
    zoo.tools.batch.run("s3tokenizer-tiny", CLIPS, tmp_path / "files", progress=False)
    clips = ray.data.from_items([{"audio": Path(c).read_bytes(), "index": i} for i, c in enumerate(CLIPS)])
    stage = clips.map_batches(
        zoo.ray.Tokenize,
        fn_constructor_kwargs={"model": "s3tokenizer-tiny", "column": "audio"},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=2,
        num_cpus=1,
    )
    got = sorted(stage.take_all(), key=lambda r: r["index"])
    expected = rows(tmp_path / "files")
    assert [list(r["ids"]) for r in got] == [r["ids"] for r in expected]
    assert all(r["error"] is None and r["source"] is None for r in got)

    rng = np.random.default_rng(0)
    waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in (40, 48, 400)]
    for i, wave in enumerate(waves):
        np.save(tmp_path / f"clip{i}.npy", wave)
    zoo.tools.batch.run(WaveTokens(), [str(tmp_path / "clip*.npy")], tmp_path / "npy", progress=False)
    arrays = ray.data.from_items([{"wave": w, "source": f"clip{i}"} for i, w in enumerate(waves)])
    stage = arrays.map_batches(zoo.ray.Tokenize, fn_constructor_kwargs={"model": WaveTokens(), "column": "wave"})
    got = sorted(stage.take_all(), key=lambda r: r["source"])
    assert [r["source"] for r in got] == ["clip0", "clip1", "clip2"]
    assert [list(r["ids"]) for r in got] == [r["ids"] for r in rows(tmp_path / "npy")]


# ---- failures ---------------------------------------------------------------------------------------------
def test_bad_inputs_land_in_the_errors_table_and_the_job_goes_on(tmp_path, capsys):
    inputs = write_texts(tmp_path / "docs", ["fine", "also fine"])
    (tmp_path / "docs" / "binary.txt").write_bytes(b"\xff\xfe\x00")
    inputs += [str(tmp_path / "docs" / "binary.txt"), str(tmp_path / "missing.txt")]
    parser = argparse.ArgumentParser()
    zoo.tools.batch.add_cli(parser.add_subparsers())
    argv = ["batch", "byte-utf8", *inputs, "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "1"]
    args = parser.parse_args([*argv, "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 inputs" in printed and "2 errors" in printed
    zoo.tools.batch.run("byte-utf8", inputs, tmp_path / "batch", progress=False)
    assert rows(tmp_path / "ray") == rows(tmp_path / "batch")
    assert errors(tmp_path / "ray") == errors(tmp_path / "batch")
    table = pq.read_table(tmp_path / "ray" / "errors").to_pylist()
    assert [(e["index"], e["stage"]) for e in table] == [(2, "load"), (3, "load")]


def test_an_actor_killed_mid_run_is_restarted_and_the_output_is_complete_without_duplicates(tmp_path):
    model = PidBytes(SlowBytesConfig(seconds_per_batch=0.4))
    inputs = write_texts(tmp_path / "docs", [f"text number {i}" for i in range(24)])
    killed: list[int] = []

    def kill_one_actor():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            pids = sorted((tmp_path / "pids").glob("*")) if (tmp_path / "pids").is_dir() else []
            if pids:
                time.sleep(0.5)  # let it get into its task
                killed.append(int(pids[0].name))
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    manifest = zoo.tools.ray.run(model, inputs, tmp_path / "ray", batch_size=2, actors=2, progress=False)
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    pids = {int(p.name) for p in (tmp_path / "pids").glob("*")}
    assert len(pids - set(killed)) >= 2, "the killed actor was not replaced by a new process"
    got = rows(tmp_path / "ray")
    assert [r["index"] for r in got] == list(range(24)) and manifest["rows"] == 24 and manifest["errors"] == 0
    zoo.tools.batch.run(model, inputs, tmp_path / "batch", batch_size=2, progress=False)
    assert got == rows(tmp_path / "batch")


# ---- options ----------------------------------------------------------------------------------------------
def test_zoo_ray_is_the_tools_module_under_the_documented_name():
    assert zoo.ray.Tokenize is zoo.tools.ray.Tokenize and zoo.ray.run is zoo.tools.ray.run


def test_ray_options_belong_to_the_ray_engine_and_resume_to_accelerate(tmp_path):
    parser = argparse.ArgumentParser()
    zoo.tools.batch.add_cli(parser.add_subparsers())
    args = parser.parse_args(["batch", "byte-utf8", "x.txt", "--out", str(tmp_path / "o"), "--address", "auto"])
    with pytest.raises(ConfigError, match="--address belong to --engine ray"):
        args.func(args)
    with pytest.raises(ConfigError, match="retries failed tasks"):
        zoo.tools.ray.run("byte-utf8", ["x.txt"], tmp_path / "o", resume=True)


def test_the_engine_refuses_a_folder_that_holds_files_unless_told_to_overwrite(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "old.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match="--overwrite"):
        zoo.tools.ray.run("byte-utf8", ["x.txt"], tmp_path / "o")


def test_the_readme_ray_data_example_runs_as_written(monkeypatch, capsys):
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "zoo.ray.Tokenize" in b]
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md:ray", "exec"), {})
    model = zoo.load("s3tokenizer-tiny")
    firsts = {str(model.encode(model.collate([model.load_item(c)])).ids[0][:8].tolist()) for c in CLIPS[:2]}
    assert capsys.readouterr().out.strip() in firsts
