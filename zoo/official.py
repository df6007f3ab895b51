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
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
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

logger = logging.getLogger(__name__)

MANIFEST_NAME = "conversion.json"
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".pth", ".pt", ".bin", ".ckpt")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ---- the recipe ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class UpstreamFile:
    """One upstream file of a recipe (see the module docstring for the YAML)."""

    repo: str | None = None
    filename: str | None = None
    folder: str = ""
    pattern: str | None = None
    revision: str = "main"
    sha256: str | None = None
    option: str | None = None  # None: the converter's src
    url: str | None = None

    @property
    def on_hub(self) -> bool:
        return self.repo is not None

    @property
    def shown(self) -> str:
        """How messages name the file: repo/path, repo/folder/pattern, or the file name."""
        if self.filename:
            return f"{self.repo}/{self.filename}" if self.repo else self.filename
        return f"{self.repo}/{self.folder + '/' if self.folder else ''}{self.pattern}"

    def spec(self) -> dict[str, Any]:
        """What identifies the file on the card (a pin is kept only while the card still says this)."""
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True)
class Recipe:
    name: str
    converter: str
    options: dict[str, Any] = field(default_factory=dict)
    files: tuple[UpstreamFile, ...] = ()


def recipe_of(name: str, data: dict[str, Any]) -> Recipe | None:
    """The conversion recipe a card's YAML states, or None if it names no upstream files; malformed ones raise."""
    from zoo.registry import CONVERTERS

    entries = data.get("upstream_files")
    if not entries:
        return None

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"card {name!r}: {problem}")

    if not isinstance(entries, list):
        raise bad("upstream_files must be a list")
    converter = data.get("converter")
    if converter not in CONVERTERS:
        raise bad(f"converter {converter!r} is not one of zoo.registry.CONVERTERS ({', '.join(sorted(CONVERTERS))})")
    options = data.get("converter_options") or {}
    if not isinstance(options, dict):
        raise bad("converter_options must be a mapping")
    known = {f for f in UpstreamFile.__dataclass_fields__}
    files = []
    for i, entry in enumerate(entries):
        where = f"upstream_files[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be a mapping")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise bad(f"{where} has unknown field(s) {', '.join(unknown)}")
        f = UpstreamFile(**{k: (str(v) if v is not None else None) for k, v in entry.items()})
        if f.on_hub == (f.url is not None):
            raise bad(f"{where} needs exactly one of repo (a Hub repo) and url (a file off the Hub)")
        if f.on_hub and bool(f.filename) == bool(f.pattern):
            raise bad(f"{where} needs exactly one of filename and pattern")
        if not f.on_hub and not f.filename:
            raise bad(f"{where} needs the filename of the file at {f.url}")
        if f.sha256 is not None and not _SHA256.fullmatch(f.sha256):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits")
        files.append(f)
    sources = [f for f in files if f.option is None]
    if len(sources) != 1:
        raise bad("exactly one upstream file must be the converter's src (no `option`)")
    options_given = [f.option for f in files if f.option is not None]
    if len(set(options_given)) != len(options_given) or set(options_given) & set(options):
        raise bad("each upstream file feeds a different converter option, not one set in converter_options")
    return Recipe(name, converter, dict(options), tuple(files))


def convert_command(recipe: Recipe) -> str:
    """The command that converts downloaded copies of the recipe's off-Hub files into the cache."""
    parts = ["tokenzoo", "convert", recipe.name]
    for f in recipe.files:  # the converter's src first (a positional argument), then --file OPTION=FILE
        if not f.on_hub:
            parts.append(f.filename if f.option is None else f"--file {f.option}={f.filename}")
    return " ".join(parts)


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
    from zoo.api import atomic_write

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
    from zoo.registry import CONVERTERS

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

    from zoo.hub import _translate, offline_mode

    offline = local_files_only or offline_mode()
    if offline:
        raise OfflineError(f.repo, f.revision, f.shown, "HF_HUB_OFFLINE=1 (or local_files_only) forbids listing it")
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
    from zoo.hub import download_file, sha256_file, snapshot_of

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
    from zoo.hub import sha256_file

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
        paths, sources = _gather(recipe, {}, pins, local_files_only, cache_dir)
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


# ---- publishing ---------------------------------------------------------------------------------
def publish(
    name: str, repo_id: str, private: bool = False, revision: str | None = None, token: str | None = None
) -> str:
    """Convert ``name`` (or take its conversion from the cache) and push the folder with a card saying how it
    was made (license, upstream files and sha256, converter and version), so a mirror loads with no
    conversion: ``zoo.load("hf-hub:" + repo_id)``. Returns the commit sha."""
    import tempfile

    from zoo.hub import push_folder
    from zoo.registry import _card_folders, card_data

    data = card_data(name)
    card_path = _card_folders()[name] / "README.md"
    folder = converted_folder(name, data, card=card_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for path in folder.iterdir():
            if path.is_file() and path.name != "README.md":
                shutil.copyfile(path, staged / path.name)
        (staged / "README.md").write_text(published_card(card_path, manifest, repo_id))
        return push_folder(staged, repo_id, private, revision, f"Publish {name} converted by tokenzoo", token)


def published_card(card_path: Path, manifest: dict[str, Any], repo_id: str) -> str:
    """The official card with the provenance of this conversion: YAML ``converted_from``, ``converter`` and
    ``converter_version``, and a section saying how the repo was made."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(card_path)
    files = [
        {k: v for k, v in f.items() if k in ("repo", "url", "filename", "commit", "sha256", "option") and v}
        for f in manifest["upstream_files"]
    ]
    card.data.converted_from = files
    card.data.converter_version = manifest["converter_version"]
    for stale in ("upstream_files", "weights_hint"):
        card.data.pop(stale, None)  # this repo holds the converted weights; nothing is left to fetch
    lines = [
        f"- `{f.get('repo') or f.get('url')}` / `{f['filename']}`"
        + (f" at `{f['commit']}`" if f.get("commit") else "")
        + f", sha256 `{f['sha256']}`"
        + (f" (converter option `{f['option']}`)" if f.get("option") else "")
        for f in files
    ]
    options = json.dumps(manifest["converter_options"], sort_keys=True)
    section = (
        "\n\n## How this repo was made\n\n"
        f"`tokenzoo publish {manifest['model']} --repo {repo_id}` converted the upstream file(s)\n\n"
        + "\n".join(lines)
        + f"\n\nwith `{manifest['converter_target']}` (converter `{manifest['converter']}`, version "
        f"{manifest['converter_version']}, options `{options}`) into safetensors. Load it with "
        f"`zoo.load('hf-hub:{repo_id}')`; no conversion runs. The license above is the upstream weights' license.\n"
    )
    card.text = card.text.rstrip() + section
    return str(card)
