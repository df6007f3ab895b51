"""Test-wide settings: a local Hub server and a private Hub cache, so no test touches ~/.cache or the network.

huggingface_hub reads its settings once, when it is first imported, so they are set here, before any
test module imports it:
- ``HF_ENDPOINT`` points at one local :class:`tests.hubserver.HubServer` per test session (a free
  port on 127.0.0.1). A test that forgets to set up its repos gets a fast RepoNotFound, never the
  real Hub.
- ``HF_HOME``/``HF_HUB_CACHE`` (and tokenzoo's own cache, ``TOKENZOO_CACHE``) point into a temporary
  folder removed at exit.
- Xet is off, so uploads and downloads take the plain HTTP/LFS path the server speaks.

Fixtures:
- ``hub``: the server, emptied for this test, with ``hf_cache`` in place.
- ``hf_cache``: a fresh, empty Hub cache folder for this test (the client's default cache_dir).
- ``hub_env``: environment variables for a subprocess that should use the same server and caches.
- ``zoo_cache``: a fresh, empty tokenzoo cache (converted official models, pins) for this test.
- ``fakes``: registers every test-only model of tests/fakes.py (``fakes.ARCHS``) while one test module
  runs; a module whose tests load fakes by arch says ``pytestmark = pytest.mark.usefixtures("fakes")``.
- ``tiny_arch``: registers tests/fakes.py's TinyModel alone, as arch ``test-tiny``, for one test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HF_HOME = tempfile.mkdtemp(prefix="tokenzoo-test-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
os.environ["TOKENZOO_CACHE"] = os.path.join(_HF_HOME, "tokenzoo")  # converted official models (zoo.official)
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_name, None)

from tests.hubserver import HubServer  # noqa: E402  (the settings above must come first)

HUB = HubServer().start()
os.environ["HF_ENDPOINT"] = HUB.url


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache for this test; the client uses it when no cache_dir is passed."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def hub(hf_cache, zoo_cache) -> HubServer:
    """The session's local Hub, with no repos, faults or logged requests left from other tests."""
    HUB.reset()
    yield HUB
    HUB.reset()


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch) -> Path:
    """An empty tokenzoo cache for this test ($TOKENZOO_CACHE: converted official models and their pins)."""
    cache = tmp_path / "tokenzoo-cache"
    monkeypatch.setenv("TOKENZOO_CACHE", str(cache))
    return cache


@pytest.fixture
def hub_env(hf_cache, zoo_cache) -> dict[str, str]:
    """os.environ for a subprocess that talks to the same local Hub and caches (add HF_HUB_OFFLINE etc.)."""
    return {**os.environ, "HF_ENDPOINT": HUB.url, "HF_HUB_CACHE": str(hf_cache), "TOKENZOO_CACHE": str(zoo_cache)}


@pytest.fixture(scope="module")
def fakes():
    """Register every fake of tests/fakes.py while one test module runs (module fixtures such as a
    served demo app load them too); returns the module."""
    from tests import fakes as module
    from zoo import registry

    with pytest.MonkeyPatch.context() as patch:
        for arch, target in module.ARCHS.items():
            patch.setitem(registry.ARCHITECTURES, arch, target)
        yield module


@pytest.fixture
def tiny_arch(monkeypatch) -> str:
    """Register tests/fakes.py's TinyModel as arch ``test-tiny`` for this test only."""
    from tests.fakes import ARCHS, TinyModel
    from zoo import registry

    monkeypatch.setitem(registry.ARCHITECTURES, TinyModel.arch, ARCHS[TinyModel.arch])
    return TinyModel.arch
