"""The wheel works outside the repository: `pip install .` (not editable) into a fresh venv, then
`tokenzoo list` shows every model and every bundled model loads and encodes its sample inputs.

The fresh venv gets tokenzoo from the wheel only; its dependencies (torch & co., which cannot be
downloaded here) come from this interpreter's site-packages through a .pth file, whose own .pth
files (the editable install of the checkout) are not processed, so nothing reaches the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import zoo
from zoo.registry import bundled_models

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "zoo", "vision", "video_pose", "audio", "em_volume", "demos", "hub_cards")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command[:4]}...: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from a copy of the sources installed into it (not editable)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:  # setuptools writes build/ and *.egg-info beside the sources: build a copy
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", "dist"],
        tmp,
    )
    (wheel,) = (tmp / "dist").glob("tokenzoo-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp,
    )
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_tokenzoo_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return venv


def fresh_env() -> dict[str, str]:
    """This environment without anything that points into the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TOKENZOO_CARDS_DIR")}


@pytest.mark.slow
def test_tokenzoo_list_from_the_wheel_shows_every_model(installed, tmp_path):
    out = run([str(installed / "bin" / "tokenzoo"), "list", "--json"], tmp_path, fresh_env())
    assert [entry["name"] for entry in json.loads(out)] == zoo.list_models()


@pytest.mark.slow
def test_every_bundled_model_loads_from_the_wheel_and_encodes_its_samples(installed, tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import zoo
        from zoo.registry import bundled_models

        report = {"zoo": zoo.__file__, "models": {}}
        for name in bundled_models():
            model = zoo.load(name)
            items = model.sample_inputs()[:1]
            tokens = model.encode(model.collate(items))
            report["models"][name] = {"items": len(items), "batch": tokens.batch_size}
        print(json.dumps(report))
        """
    )
    report = json.loads(run([str(installed / "bin" / "python"), "-c", script], tmp_path, fresh_env()).splitlines()[-1])
    assert Path(report["zoo"]).is_relative_to(installed)  # the wheel's copy, not the checkout
    assert sorted(report["models"]) == sorted(bundled_models())
    assert all(entry["items"] > 0 and entry["batch"] == entry["items"] for entry in report["models"].values())
