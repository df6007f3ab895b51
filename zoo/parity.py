"""Locating parity fixtures: upstream code run on tiny random configs (../shared/parity).

Tests call ``fixture_dirs("hot")`` and parametrize over the result. Where the fixtures are absent
they skip and say why; with ``TOKENZOO_REQUIRE_PARITY=1`` (set by .ci/run) that is a failure, since a
skipped parity test is not a pass.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "parity"


def parity_root() -> Path:
    return Path(os.environ.get("TOKENZOO_PARITY_DIR", DEFAULT_DIR))


def parity_required() -> bool:
    return os.environ.get("TOKENZOO_REQUIRE_PARITY", "") not in ("", "0", "false", "no")


def fixture_dirs(family: str, marker: str = "config.json") -> list[Path]:
    """Every folder under ``$TOKENZOO_PARITY_DIR/family`` (recursively) that holds ``marker``."""
    root = parity_root() / family
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob(marker))


def missing_reason(family: str) -> str:
    return f"no {family} parity fixtures under {parity_root() / family} (set TOKENZOO_PARITY_DIR)"
