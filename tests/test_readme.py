"""The README's quick start works exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

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
