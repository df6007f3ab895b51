"""Helpers shared by the test modules (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import functools
import socket

import pytest

from zoo.parity import Fixture, fixture_dirs, load_fixture, missing_reason, parity_required, parity_root


def parity_params(family: str, marker: str = "config.json", where=None) -> list:
    """pytest params, one per fixture folder of ``family``; a single ``None`` param when there is none.

    ``where(folder) -> bool`` keeps only the folders a test applies to, decided at collection: a test is
    not collected for a fixture it cannot check, rather than passing or skipping there (a skipped parity
    test would read as a missing check). A missing fixture set stays the one ``None`` param.

    Use in a test named ``test_parity_<family>_*``, so that ``pytest -k "parity and FAMILY"`` and
    ``make test-portable`` select it, and open the folder with ``parity_fixture`` (or ``require_fixture``).
    """
    root = parity_root() / family
    dirs = fixture_dirs(family, marker)
    if not dirs:
        return [pytest.param(None, id="fixtures-missing")]
    dirs = [d for d in dirs if where is None or where(d)]
    return [pytest.param(d, id=str(d.relative_to(root)) if d != root else family) for d in dirs]


def require_fixture(fixture_dir, family: str):
    """Skip (or fail, under TOKENZOO_REQUIRE_PARITY=1) when the family's fixtures are missing."""
    if fixture_dir is None:
        if parity_required():
            pytest.fail(missing_reason(family) + ", and TOKENZOO_REQUIRE_PARITY=1 forbids skipping")
        pytest.skip(missing_reason(family))
    return fixture_dir


def parity_fixture(fixture_dir, family: str, describe=None) -> Fixture:
    """``require_fixture`` then the folder's ``Fixture`` (config and described io), loaded once per session.

    ``describe(config) -> {key: {shape, dtype} | None}`` says which io keys exist, for families whose
    config.json has no io table (see ``zoo.parity.load_fixture``).
    """
    require_fixture(fixture_dir, family)
    return _cached_fixture(fixture_dir, describe)


@functools.lru_cache(maxsize=32)
def _cached_fixture(folder, describe) -> Fixture:
    return load_fixture(folder, describe)


def free_port() -> int:
    """A TCP port free right now, so parallel accelerate launches on one machine do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
