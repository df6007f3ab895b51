"""docs/usage.md: its batch, resume, multi-process, read-back and compare examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "docs" / "usage.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", USAGE.read_text(encoding="utf-8"), re.S)


def block_with(language: str, text: str) -> str:
    (found,) = [b for b in blocks(language) if text in b]
    return found


@pytest.fixture
def shell(tmp_path):
    """Run a bash block in tmp_path with `tokenzoo` and `accelerate` on PATH, as after `make install`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tokenzoo").write_text(f'#!/bin/sh\nexec {sys.executable} -m zoo.cli "$@"\n')
    (bin_dir / "tokenzoo").chmod(0o755)
    (bin_dir / "accelerate").symlink_to(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}

    def run(script: str) -> str:
        done = subprocess.run(
            ["bash", "-euc", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr[-3000:]}"
        return done.stdout

    run(block_with("bash", "mkdir -p texts"))
    return run


@pytest.mark.slow
def test_the_batch_examples_run_as_written_and_read_back(shell, tmp_path):
    assert "3 of 3 inputs tokenized" in shell(block_with("bash", "--out tokens/\n"))
    assert "3 of 3 inputs tokenized" in shell(block_with("bash", "--resume"))
    read_back = block_with("python", "read_shards")
    out = shell(f"{sys.executable} - <<'EOF'\n{read_back}EOF\n")
    assert out.startswith("texts/")
    assert "3 of 3 inputs tokenized" in shell(block_with("bash", "--num_processes 2"))
    one, two = (sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("tokens", "tokens-2proc"))
    assert one == two


@pytest.mark.slow
def test_the_compare_example_prints_a_row_per_model_and_writes_json(shell, tmp_path):
    out = shell(block_with("bash", "tokenzoo compare"))
    assert all(f"| {name} |" in out for name in ("byte-utf8", "bpe-tiny", "unigram-tiny", "spm-tiny"))
    assert (tmp_path / "compare.json").is_file()
