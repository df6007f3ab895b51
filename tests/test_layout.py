"""One folder, one job: the family table resolves, the import layers hold, and no tool probes a model.

The layers themselves are import-linter contracts in pyproject.toml (``make lint`` runs them); these
tests run the same contracts in the suite and check that a core module importing a family breaks them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.api import TASKS, ZooModel
from zoo.files import MODALITIES
from zoo.registry import ARCHITECTURES, CONVERTERS, DEMOS, FAMILIES, get_arch

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "vision", "video_pose", "audio", "em_volume", "demos")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_in_the_family_table_is_a_zoo_model_declaring_that_arch_and_placement(arch):
    cls = get_arch(arch)
    assert issubclass(cls, ZooModel) and cls.arch == arch and cls.modality in MODALITIES
    assert set(cls.tasks) <= set(TASKS)
    assert dataclasses.is_dataclass(cls.config_class) and cls.config_class.__dataclass_params__.frozen
    parameters = inspect.signature(cls.__init__).parameters
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("device", "dtype"))


@pytest.mark.parametrize("target", sorted({*CONVERTERS.values(), *DEMOS.values()}))
def test_every_converter_and_demo_in_the_family_table_is_a_function(target):
    assert callable(resolve(target))


def test_each_architecture_belongs_to_exactly_one_family():
    archs = [arch for family in FAMILIES for arch in family.archs]
    assert len(archs) == len(set(archs)) and len({f.name for f in FAMILIES}) == len(FAMILIES)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_import_layer_contracts_are_kept():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_a_core_module_that_imports_a_family_breaks_the_layers(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = tmp_path / "zoo" / "files.py"
    files.write_text(files.read_text() + "\n\ndef _reach_up():\n    import vision.base  # noqa: F401\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0 and "zoo.files -> vision.base" in run.stdout


def test_no_tool_demo_or_bench_probes_a_model_with_hasattr():
    tools = [
        *ROOT.glob("zoo/tools/*.py"),
        ROOT / "zoo" / "cli.py",
        *ROOT.glob("demos/**/*.py"),
        *ROOT.glob("bench/*.py"),
    ]
    probing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in tools
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bhasattr\(", line)
    ]
    assert probing == []
