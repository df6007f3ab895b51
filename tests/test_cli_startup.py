"""The tokenzoo command starts fast: building its parser imports neither torch nor any tool or family;
each subcommand imports what it needs when it runs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.cli import PLUGIN_COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
# (the demos package itself is only its docstring: finding demos.app imports it, gradio stays out)
HEAVY = {"torch", "numpy", "gradio", "accelerate", "safetensors", "vision", "video_pose", "audio", "em_volume"}


def modules_loaded_by(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level module names in sys.modules after a fresh interpreter runs ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def subcommand_help(parser, name: str) -> str:
    """The one-line help ``tokenzoo --help`` shows beside a subcommand."""
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return next(a.help for a in subparsers._choices_actions if a.dest == name)


def test_importing_the_cli_imports_no_torch():
    assert "torch" not in modules_loaded_by("import zoo.cli")


def test_tokenzoo_help_imports_no_torch_no_tool_and_no_family():
    code = textwrap.dedent(
        """
        import contextlib, io
        import zoo.cli
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            zoo.cli.main(["--help"])
        """
    )
    assert modules_loaded_by(code) & HEAVY == set()


def test_listing_models_and_reading_a_card_import_no_torch(tmp_path):
    # With an empty tokenzoo cache: once an official model is converted, `list` imports its converter to
    # check the cached copy's converter version (and so torch), which is the price of saying "cached" truly.
    code = "import zoo.cli\nzoo.cli.main(['list'])\nzoo.cli.main(['info', 'byte-utf8'])"
    env = {**os.environ, "TOKENZOO_CACHE": str(tmp_path / "tokenzoo-cache")}
    assert "torch" not in modules_loaded_by(code, env)


def test_help_lists_every_tool_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PLUGIN_COMMANDS)


@pytest.mark.parametrize("name", sorted(PLUGIN_COMMANDS))
def test_each_tool_is_listed_with_the_help_its_own_parser_declares(name):
    module_name, function_name = PLUGIN_COMMANDS[name][0].split(":")
    pytest.importorskip(module_name)
    assert subcommand_help(build_parser(), name) == subcommand_help(build_parser(name), name)
    assert getattr(importlib.import_module(module_name), function_name) is not None


def test_a_tool_command_gets_its_full_parser(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    assert "--shard-size" in capsys.readouterr().out


def test_zoo_resolves_its_public_names_on_first_use_and_refuses_others():
    import zoo
    from zoo.api import Tokens
    from zoo.registry import load

    assert zoo.Tokens is Tokens and zoo.load is load
    assert set(zoo.__all__) <= set(dir(zoo))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        zoo.no_such_name  # noqa: B018
