"""The tokenzoo command: what a user types, what comes out, and the exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zoo.api import Tokens
from zoo.cli import main


def test_list_shows_bundled_models_with_their_modality(capsys):
    assert main(["list", "--modality", "text"]) == 0
    out = capsys.readouterr().out
    assert "byte-utf8" in out and "byte-tokenizer" in out and "text" in out


def test_list_filters_by_fnmatch_pattern(capsys):
    assert main(["list", "no-such-model-*"]) == 0
    assert "byte-utf8" not in capsys.readouterr().out


def test_info_prints_the_card(capsys):
    assert main(["info", "byte-utf8"]) == 0
    out = capsys.readouterr().out
    assert "library_name: tokenzoo" in out and "license" in out


def test_encode_then_decode_round_trips_text_files(tmp_path, capsys):
    texts = ["grüße, 世界 👋\n", "שלום\tworld"]
    inputs = []
    for i, text in enumerate(texts):
        inputs.append(tmp_path / f"in{i}.txt")
        inputs[-1].write_text(text, encoding="utf-8")
    tokens_file = tmp_path / "tokens.safetensors"
    assert main(["encode", "byte-utf8", *map(str, inputs), "--out", str(tokens_file)]) == 0
    tokens = Tokens.load(tokens_file)
    assert tokens.lengths.tolist() == [len(t.encode()) for t in texts]
    assert main(["decode", "byte-utf8", str(tokens_file), "--out", str(tmp_path / "decoded")]) == 0
    decoded = sorted((tmp_path / "decoded").glob("*.txt"))
    assert [p.read_text(encoding="utf-8") for p in decoded] == texts


@pytest.mark.parametrize(
    "argv,message",
    [
        (["info", "no-such-model"], "unknown model 'no-such-model'"),
        (["encode", "no-such-model", "pyproject.toml", "--out", "x.safetensors"], "unknown model"),
        (["encode", "byte-utf8", "/nonexistent/input.txt", "--out", "x.safetensors"], "input.txt not found"),
        (["convert", "no-such-arch", "ckpt.pth", "--out", "dir"], "unknown architecture with a converter"),
        (["convert", "mixste", "pyproject.toml"], "needs --out DIR"),
        (["convert", "mixste", "pyproject.toml", "--out", "d", "--option", "heads"], "must look like KEY=VALUE"),
        (["convert", "s3tokenizer-v2", "pyproject.toml", "--option", "variant=v3"], "card fixes the converter"),
        (["convert", "tokenunify-100m", "pyproject.toml", "--out", "d"], "drop --out to convert it into the"),
        (["publish", "no-such-model", "--repo", "org/x"], "unknown model 'no-such-model'"),
        (["decode", "byte-utf8", "/nonexistent/tokens.safetensors", "--out", "dir"], "tokens.safetensors not found"),
    ],
)
def test_bad_arguments_exit_2_and_name_the_problem(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_non_utf8_text_input_is_refused_by_name(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    assert main(["encode", "byte-utf8", str(bad), "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "byte-utf8" in result.stdout
