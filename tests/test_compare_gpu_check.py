"""bench/gpu_check.py: its device comparison logic (run against the CPU here) and its no-CUDA exit."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.api import Tokens

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flip_rate_counts_changed_ids_among_valid_positions_only(gpu_check):
    mask = torch.tensor([[True, True, True, False]])
    reference = Tokens(ids=torch.tensor([[1, 2, 3, 0]]), mask=mask)
    other = Tokens(ids=torch.tensor([[1, 9, 3, 7]]), mask=mask)
    assert gpu_check.flip_rate(reference, other) == pytest.approx(1 / 3)


def test_the_float_error_is_relative_to_the_reference_scale(gpu_check):
    reference = torch.tensor([[2.0, -4.0]])
    assert gpu_check.relative_error(reference, reference + torch.tensor([[0.0, 0.04]])) == pytest.approx(0.01)
    assert gpu_check.relative_error(["same", "text"], ["same", "texT"]) == 1.0


def test_a_model_checked_against_itself_on_the_cpu_passes_in_both_modes(gpu_check):
    rows = gpu_check.check_model("bpe-tiny", torch.device("cpu"))
    assert [r["mode"] for r in rows] == ["cpu fp32", "cpu fp32", "cpu bf16"]
    assert [r["status"] for r in rows[1:]] == ["PASS", "PASS"] and rows[1]["flip_rate"] == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_without_cuda_the_check_says_so_and_exits_zero():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 0 and "no CUDA device" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == '{"bench": "gpu_check", "cuda": false}'
