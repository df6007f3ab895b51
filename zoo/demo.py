"""The main job (`make demo`, `tokenzoo demo`): every bundled model on bundled samples, one table.

Each family contributes a ``run(out_dir) -> list[dict]`` hook returning rows with the keys in
``COLUMNS``; a modality lists its families' hooks, and pictures and decoded outputs land under
``out_dir/<modality>/``. The table is printed
and written to ``out_dir/demo.md`` and ``out_dir/demo.json``.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from pathlib import Path

from zoo.api import atomic_write

DEMO_HOOKS = {
    "text": "zoo.text_demo:run",
    "image": ("vision.flextok.demo:run", "vision.seed.demo:run"),
    "pose": "video_pose.demo:run",
    "audio": "audio.demo:run",
    "em_volume": "em_volume.demo:run",
}

COLUMNS = ("model", "modality", "input", "tokens", "bits_per_unit", "quality", "seconds_per_item")
# A row may state the unit of a numeric bits_per_unit ("pixel", "frame"); None means not applicable.
UNIT_KEY = "unit"

log = logging.getLogger(__name__)


def format_table(rows: list[dict]) -> str:
    """Rows as a Markdown table with the columns in ``COLUMNS``."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]

    def bits(row: dict) -> str:
        value = row.get("bits_per_unit")
        if value is None:
            return "n/a (continuous tokens)"
        if isinstance(value, (int, float)) and row.get(UNIT_KEY):
            return f"{value:.4g} bits/{row[UNIT_KEY]}"
        return cell(value)

    lines += [
        "| " + " | ".join(bits(row) if c == "bits_per_unit" else cell(row.get(c, "")) for c in COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def run_all(out_dir: Path, families: list[str] | None = None) -> list[dict]:
    rows = []
    for modality, targets in DEMO_HOOKS.items():
        if families and modality not in families:
            continue
        for target in (targets,) if isinstance(targets, str) else targets:
            module_name, function_name = target.split(":")
            started = time.perf_counter()
            family_rows = getattr(importlib.import_module(module_name), function_name)(out_dir / modality)
            log.info("%s: %d rows in %.1f s", target, len(family_rows), time.perf_counter() - started)
            rows += family_rows
    return rows


def main(out_dir: Path = Path("out"), families: list[str] | None = None) -> int:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_all(out_dir, families)
    table = format_table(rows)
    print(table)
    atomic_write(out_dir / "demo.md", lambda tmp: tmp.write_text(table + "\n"))
    atomic_write(out_dir / "demo.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=2, default=str)))
    print(f"\nwrote {out_dir / 'demo.md'} and {out_dir / 'demo.json'}; pictures under {out_dir}/<modality>/")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")))
