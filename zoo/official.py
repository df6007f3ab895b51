"""Official checkpoints by name: the card's recipe -> download -> verify -> convert -> cache.

Upstream publishes most tokenizers in its own layout (an ONNX graph, a pickled training checkpoint). The
card of such a model names the file(s) and the converter, so ``zoo.load(name)`` can do in one call what
upstream's own loaders do: fetch the files through huggingface_hub at a pinned revision, check their
sha256, convert them once with the family's converter and keep the converted safetensors folder.

The recipe, in the card's YAML::

    converter: s3tokenizer-v1              # a key of zoo.registry.CONVERTERS
    converter_options: {variant: v1}       # keyword options of its convert_checkpoint
    upstream_files:                        # one or more; the one without `option` is the converter's `src`
    - repo: FunAudioLLM/CosyVoice-300M     # a Hub model repo, and in it either
      filename: speech_tokenizer_v1.onnx   #   the file, or
      # folder: Pretrained_weights         #   a folder (default: the root) and an fnmatch `pattern`,
      # pattern: "*100m*"                  #   case-insensitive, that must match exactly one weights file there
      revision: main                       # branch, tag or commit; the commit it resolves to is pinned
      sha256: 23b5a7...                    # checked before converting; absent: pinned on first download
      # option: vit                        # passed as convert_checkpoint(..., vit=PATH)
    - url: https://drive.google.com/...    # a file off the Hub, which tokenzoo cannot fetch: the error (and the
      filename: model.pth                  #   card) give `tokenzoo convert NAME FILE` for a downloaded copy

The cache lives in ``$TOKENZOO_CACHE`` (default ``~/.cache/tokenzoo``):

- ``converted/<name>/<key>/``: the converted folder (README.md = the official card, config.json,
  model.safetensors) and ``conversion.json`` saying how it was made. ``key`` hashes the upstream files'
  sha256, the converter, its ``CONVERTER_VERSION`` and the options, so a new release or a converter fix
  converts again while the same inputs never do. A folder appears there only by an atomic rename of a
  finished conversion (made in ``.partial-*`` beside it), so an interrupted conversion leaves nothing a
  later load takes for finished; a per-model file lock makes concurrent loads convert once.
- ``pins/<name>.json``: what the first download resolved (commit, file name, sha256), so later loads,
  offline ones included, use exactly those files and find their conversion without the network.

Converters are reached through ``zoo.registry.CONVERTERS`` (``"module:function"`` strings imported here),
so this core module imports no family.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from zoo.errors import (
    ChecksumMismatchError,
    ConfigError,
    ModelFileNotFoundError,
    OffHubWeightsError,
    OfflineError,
    UnknownModelError,
)
from zoo.families import CONVERTERS
from zoo.recipes import Recipe, UpstreamFile, convert_command, recipe_of

logger = logging.getLogger(__name__)

MANIFEST_NAME = "conversion.json"
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".pth", ".pt", ".bin", ".ckpt")


# ---- the cache ----------------------------------------------------------------------------------
def cache_root() -> Path:
    """$TOKENZOO_CACHE, else $XDG_CACHE_HOME/tokenzoo, else ~/.cache/tokenzoo."""
    if os.environ.get("TOKENZOO_CACHE"):
        return Path(os.environ["TOKENZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tokenzoo"


def _pin_path(name: str) -> Path:
    return cache_root() / "pins" / f"{name}.json"


def read_pins(name: str) -> dict[str, dict[str, Any]]:
    """The pins recorded for ``name``: per file spec (JSON), the resolved filename, commit and sha256."""
    path = _pin_path(name)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        logger.warning("ignoring unreadable pin file %s", path)
        return {}


def _write_pins(name: str, pins: dict[str, dict[str, Any]]) -> None:
    from zoo.files import atomic_write

    text = json.dumps(pins, indent=2, sort_keys=True) + "\n"
    atomic_write(_pin_path(name), lambda tmp: tmp.write_text(text))


def _spec_key(f: UpstreamFile) -> str:
    return json.dumps(f.spec(), sort_keys=True)


def _pinned(f: UpstreamFile, pins: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    pin = pins.get(_spec_key(f))
    if pin and f.sha256 and pin.get("sha256") != f.sha256:
        return None  # the card now names another release
    return pin


def converter_target(converter: str) -> str:
    if converter not in CONVERTERS:
        raise UnknownModelError(converter, CONVERTERS, kind="architecture with a converter")
    return CONVERTERS[converter]


def converter_version(converter: str) -> int:
    """The ``CONVERTER_VERSION`` of the converter's module (imported now)."""
    module_name = converter_target(converter).split(":")[0]
    version = getattr(importlib.import_module(module_name), "CONVERTER_VERSION", None)
    if not isinstance(version, int):
        raise ConfigError(f"{module_name} defines no integer CONVERTER_VERSION, which keys the conversion cache")
    return version


def entry_key(recipe: Recipe, digests: list[str]) -> str:
    """The cache key: upstream sha256s, converter, converter version and options."""
    payload = {
        "files": [[f.option, d] for f, d in zip(recipe.files, digests)],
        "converter": converter_target(recipe.converter),
        "version": converter_version(recipe.converter),
        "options": recipe.options,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _entry_dir(name: str) -> Path:
    return cache_root() / "converted" / name


def is_finished(folder: Path) -> bool:
    """A cache entry is finished when its manifest is there (it is written last, before the rename)."""
    return (folder / MANIFEST_NAME).is_file()


def _known_digests(recipe: Recipe, pins: dict[str, dict[str, Any]]) -> list[str] | None:
    digests = []
    for f in recipe.files:
        digest = f.sha256 or (_pinned(f, pins) or {}).get("sha256")
        if digest is None:
            return None
        digests.append(digest)
    return digests


# ---- download and verify ------------------------------------------------------------------------
def _resolve_pattern(f: UpstreamFile, local_files_only: bool) -> tuple[str, str]:
    """(path, commit) of the one weights file in ``f.folder`` matching ``f.pattern``, listed at ``f.revision``."""
    from huggingface_hub import HfApi

    from zoo.hub import _translate, offline_mode, unreachable_reason

    offline = local_files_only or offline_mode()
    if offline:
        raise OfflineError(f.repo, f.revision, f.shown, "HF_HUB_OFFLINE=1 (or local_files_only) forbids listing it")
    unreachable = unreachable_reason()
    if unreachable:
        raise OfflineError(f.repo, f.revision, f.shown, unreachable)
    api = HfApi()
    try:
        commit = api.model_info(f.repo, revision=f.revision).sha
        entries = api.list_repo_tree(f.repo, path_in_repo=f.folder or None, revision=commit, recursive=False)
        paths = sorted(e.path for e in entries if getattr(e, "size", None) is not None)  # files, not folders
    except Exception as err:
        translated = _translate(err, f.repo, f.revision, f.folder or "/", offline=False)
        if translated is err:
            raise
        raise translated from err
    weights = [p for p in paths if p.lower().endswith(WEIGHT_SUFFIXES)]
    matches = [p for p in weights if fnmatch.fnmatch(Path(p).name.lower(), f.pattern.lower())]
    if len(matches) != 1:
        listed = ", ".join(Path(p).name for p in weights) or "no weights files"
        raise ModelFileNotFoundError(
            f"hf-hub:{f.repo}",
            f"{f.folder + '/' if f.folder else ''}{f.pattern}",
            f.revision,
            hint=f"The card's pattern must match exactly one file; it matched {len(matches)} of: {listed}.",
        )
    return matches[0], commit


def fetch_file(
    name: str, f: UpstreamFile, pins: dict, local_files_only: bool = False, cache_dir=None
) -> tuple[Path, dict]:
    """Download ``f`` (at its pinned commit when there is a pin) and check its sha256; returns the local path
    and the pin to record. A file whose sha256 differs from the card's (or the pin's) raises, naming both."""
    from zoo.files import sha256_file
    from zoo.hub import download_file, snapshot_of

    pin = _pinned(f, pins)
    if pin:
        filename, revision = pin["filename"], pin["commit"]
    elif f.pattern:
        filename, revision = _resolve_pattern(f, local_files_only)
    else:
        filename, revision = f.filename, f.revision
    path = download_file(
        f.repo, filename, revision, local_files_only=local_files_only, cache_dir=cache_dir, allow_pickle=True
    )
    commit = snapshot_of(path, filename).name
    expected = f.sha256 or (pin or {}).get("sha256")
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(filename, expected, actual, source=f"hf-hub:{f.repo}@{commit}")
    if expected is None:
        logger.warning(
            "%s: pinned %s at %s with sha256 %s (first download; the card records no hash)",
            name,
            filename,
            commit[:12],
            actual,
        )
    return Path(path), {"filename": filename, "commit": commit, "sha256": actual, "repo": f.repo}


def verify_local_file(f: UpstreamFile, path: Path, pins: dict) -> dict:
    """A downloaded copy of an upstream file, checked against the card's (or the pin's) sha256."""
    from zoo.files import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(str(path.resolve().parent), path.name, hint="No such upstream file.")
    expected = f.sha256 or (_pinned(f, pins) or {}).get("sha256")
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(path.name, expected, actual, source=str(path.parent))
    return {"filename": f.filename or path.name, "commit": None, "sha256": actual, "repo": f.repo, "url": f.url}


# ---- convert into the cache ---------------------------------------------------------------------
def _lock(name: str):
    from filelock import FileLock

    folder = _entry_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".lock"))


def _clear_partials(name: str) -> None:
    """Remove ``.partial-*`` folders: under the model's lock, every one is from a conversion that died."""
    for partial in _entry_dir(name).glob(".partial-*"):
        logger.info("removing %s, left by an interrupted conversion", partial)
        shutil.rmtree(partial, ignore_errors=True)


def _convert(recipe: Recipe, paths: list[Path], sources: list[dict], card: Path | None) -> Path:
    """Run the converter into a partial folder, write the card and the manifest, rename it into place."""
    digests = [s["sha256"] for s in sources]
    final = _entry_dir(recipe.name) / entry_key(recipe, digests)
    if is_finished(final):
        return final
    _clear_partials(recipe.name)
    partial = _entry_dir(recipe.name) / f".partial-{final.name}-{os.getpid()}"
    module_name, function_name = converter_target(recipe.converter).split(":")
    convert = getattr(importlib.import_module(module_name), function_name)
    src = next(p for f, p in zip(recipe.files, paths) if f.option is None)
    file_options = {f.option: p for f, p in zip(recipe.files, paths) if f.option is not None}
    started = time.perf_counter()
    logger.info("%s: converting %s with %s", recipe.name, src.name, recipe.converter)
    try:
        convert(recipe.converter, src, partial, **recipe.options, **file_options)
        if card is not None:
            shutil.copyfile(card, partial / "README.md")  # the official card: license, upstream files, hashes
        manifest = {
            "model": recipe.name,
            "converter": recipe.converter,
            "converter_target": converter_target(recipe.converter),
            "converter_version": converter_version(recipe.converter),
            "converter_options": recipe.options,
            "upstream_files": [{**s, "option": f.option} for f, s in zip(recipe.files, sources)],
            "seconds": round(time.perf_counter() - started, 3),
        }
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if final.exists():  # an unfinished folder under the final name (not made by this module): replace it
            shutil.rmtree(final)
        os.rename(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    logger.info("%s: converted in %.1f s into %s", recipe.name, manifest["seconds"], final)
    return final


def _gather(
    recipe: Recipe, given: dict[str | None, Path], pins: dict, local_files_only: bool, cache_dir
) -> tuple[list[Path], list[dict]]:
    """Every upstream file of the recipe as a checked local path: the ``given`` copies (keyed by option) or
    downloads. The pins are updated with what each file turned out to be and written back."""
    paths, sources = [], []
    for f in recipe.files:
        if f.option in given:
            path, source = Path(given[f.option]), verify_local_file(f, given[f.option], pins)
        else:
            path, source = fetch_file(recipe.name, f, pins, local_files_only, cache_dir)
        paths.append(path)
        sources.append(source)
        pins[_spec_key(f)] = source
    _write_pins(recipe.name, pins)
    return paths, sources


def is_converted(name: str, data: dict[str, Any]) -> bool:
    """Whether the official model ``name`` (card YAML ``data``) is converted in the cache (loads offline)."""
    recipe = recipe_of(name, data)
    if recipe is None:
        return False
    if not _entry_dir(name).is_dir():  # nothing converted: no need to import the converter for its version
        return False
    digests = _known_digests(recipe, read_pins(name))
    return digests is not None and is_finished(_entry_dir(name) / entry_key(recipe, digests))


def converted_folder(
    name: str,
    data: dict[str, Any],
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    card: Path | None = None,
) -> Path:
    """The converted model folder of the official model ``name`` (card YAML ``data``): from the cache, else
    downloaded, verified and converted now. ``card`` is the official card copied into the folder."""
    recipe = recipe_of(name, data)
    if recipe is None:
        raise ConfigError(f"card {name!r} names no upstream_files to convert")
    pins = read_pins(name)
    digests = _known_digests(recipe, pins)
    if digests is not None:  # the fast path: no lock, no network
        folder = _entry_dir(name) / entry_key(recipe, digests)
        if is_finished(folder):
            return folder
    off_hub = next((f for f in recipe.files if not f.on_hub), None)
    if off_hub is not None:
        raise OffHubWeightsError(name, off_hub.filename, off_hub.url, convert_command(recipe))
    with _lock(name):
        pins = read_pins(name)
        digests = _known_digests(recipe, pins)
        if digests is not None and is_finished(folder := _entry_dir(name) / entry_key(recipe, digests)):
            return folder  # another process converted it while this one waited
        try:
            paths, sources = _gather(recipe, {}, pins, local_files_only, cache_dir)
        except OfflineError as err:
            src = next(f for f in recipe.files if f.option is None)
            raise OfflineError(
                err.repo_id,
                err.revision,
                err.file,
                err.reason,
                hint=(
                    f"{name} is converted from upstream's files, not downloaded ready-made: once online, "
                    f"zoo.load({name!r}) downloads and converts them; or convert a copy you downloaded with "
                    f"`tokenzoo convert {name} {src.filename or 'FILE'}`"
                    + ("." if src.filename else f" (FILE: the one matching {src.shown}).")
                ),
            ) from err
        return _convert(recipe, paths, sources, card)


def convert_local_files(
    name: str,
    data: dict[str, Any],
    files: dict[str | None, Path],
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    card: Path | None = None,
) -> Path:
    """``tokenzoo convert NAME FILE [--file OPTION=FILE]``: convert downloaded copies of a recipe's files (keyed
    by their ``option``; None for the converter's src) into the cache, checked against the card's sha256.
    Files off the Hub must be given; Hub files not given are fetched."""
    recipe = recipe_of(name, data)
    if recipe is None:
        raise ConfigError(f"card {name!r} names no upstream_files to convert")

    def flag(option: str | None) -> str:
        return "the checkpoint" if option is None else f"--file {option}=PATH"

    known = {f.option for f in recipe.files}
    needed = {f.option for f in recipe.files if not f.on_hub}
    if set(files) - known or needed - set(files):
        wanted = ", ".join(flag(o) for o in sorted(known, key=str))
        must = ", ".join(flag(o) for o in sorted(needed, key=str)) or "none"
        raise ConfigError(f"{name} converts from {wanted}; off the Hub, and so required: {must}")
    with _lock(name):
        paths, sources = _gather(recipe, files, read_pins(name), local_files_only, cache_dir)
        return _convert(recipe, paths, sources, card)
