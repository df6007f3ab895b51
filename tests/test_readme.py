"""The README's quick start works exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def marked_block(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker}:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no python block after a '<!-- {marker}: ... -->' marker"
    return match.group(1)


def test_readme_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(marked_block("quickstart"), "README.md:quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert "byte-utf8" in out and "['hello, world', 'grüße 👋']" in out


def test_readme_models_table_is_generated_from_the_cards():
    from zoo.cards import models_table

    text = README.read_text()
    match = re.search(r"<!-- models-table:.*?-->\n(.*?)<!-- /models-table -->", text, re.S)
    assert match, "README.md lost its models-table markers"
    assert match.group(1).strip() == models_table().strip(), "README models table is stale: run `make readme`"


@pytest.mark.slow
def test_readme_shell_quick_start_runs_in_any_folder(tmp_path):
    """The shell quick start, run in an empty folder outside the checkout with ``tokenzoo`` on PATH."""
    text = README.read_text()
    match = re.search(r"<!-- quickstart-shell:.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, "README.md has no bash block after a '<!-- quickstart-shell: ... -->' marker"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tokenzoo").write_text(f'#!/bin/sh\nexec {sys.executable} -m zoo.cli "$@"\n')
    (bin_dir / "tokenzoo").chmod(0o755)
    work = tmp_path / "elsewhere"
    work.mkdir()
    root = README.parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root)}
    done = subprocess.run(
        ["bash", "-euc", match.group(1)], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bundled" in done.stdout and (work / "decoded" / "hello.txt").read_text(encoding="utf-8") == "hello\n"
