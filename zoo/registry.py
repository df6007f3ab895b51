"""The family table (architectures, converters, demos), model names -> cards, and ``zoo.load``.

An *architecture* is code: a ``ZooModel`` subclass named ``"module:Class"`` in ``FAMILIES`` below and
imported only when a model of that arch is loaded, so ``import zoo`` pulls in no family. A *model* is data: a
folder in ``hub_cards/`` holding a README.md card (whose YAML names the arch) and, for the tiny
models we train here, config.json + model.safetensors; cards of official checkpoints name the Hub
repo and revision their weights live at instead.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError, ModelFileNotFoundError, UnknownModelError
from zoo.families import ARCHITECTURES, CONVERTERS, DEMOS, FAMILIES, UPSTREAM_TARGETS, Family  # noqa: F401 (the table, seen from here)
from zoo.files import CARD_NAME, CONFIG_NAME, MODALITIES, WEIGHTS_NAME, cards_dir

if TYPE_CHECKING:
    import torch  # for annotations only: listing models and reading cards needs no torch

logger = logging.getLogger(__name__)


HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"


def register_arch(arch: str, target: str, overwrite: bool = False) -> None:
    """Add an architecture: ``target`` is ``"module:Class"``, imported when first needed."""
    if ":" not in target:
        raise ConfigError(f"register_arch target must be 'module:Class', got {target!r}")
    if arch in ARCHITECTURES and ARCHITECTURES[arch] != target and not overwrite:
        raise ConfigError(f"arch {arch!r} is already registered as {ARCHITECTURES[arch]!r}; pass overwrite=True")
    ARCHITECTURES[arch] = target


def list_archs() -> list[str]:
    return sorted(ARCHITECTURES)


def get_arch(arch: str) -> type:
    """The ZooModel subclass registered as ``arch`` (its module is imported now)."""
    if arch not in ARCHITECTURES:
        raise UnknownModelError(arch, ARCHITECTURES, kind="architecture")
    module_name, class_name = ARCHITECTURES[arch].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if getattr(cls, "arch", None) != arch:
        raise ConfigError(f"{ARCHITECTURES[arch]} declares arch {getattr(cls, 'arch', None)!r}, registered as {arch!r}")
    return cls


# ---- model names (hub_cards/) -------------------------------------------------------------------
def _card_folders() -> dict[str, Path]:
    root = cards_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CARD_NAME).is_file()}


def card_data(name: str) -> dict[str, Any]:
    """The YAML header of a bundled model's card, as a dict."""
    from zoo.cards import read_card_data

    folders = _card_folders()
    if name not in folders:
        raise UnknownModelError(name, folders)
    return read_card_data(folders[name] / CARD_NAME)


def list_models(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (like timm), optionally of one modality."""
    names = [n for n in _card_folders() if fnmatch.fnmatch(n, pattern)]
    if modality is not None:
        if modality not in MODALITIES:
            raise ConfigError(f"list_models: modality {modality!r} is not one of {', '.join(MODALITIES)}")
        names = [n for n in names if card_data(n).get("modality") == modality]
    return names


def bundled_models(modality: str | None = None) -> list[str]:
    """Registered models whose files are all in hub_cards/ (loadable offline), optionally of one modality.

    Cards of official checkpoints whose weights live on the Hub are left out, as are models whose
    family cannot be imported here (a missing optional dependency).
    """
    folders = _card_folders()
    names = []
    for name in list_models(modality=modality):
        try:
            files = get_arch(card_data(name).get("arch", "")).hub_files
        except (ImportError, KeyError, ConfigError) as err:
            logger.info("skipping %s: %s", name, err)
            continue
        if all((folders[name] / f).is_file() for f in files):
            names.append(name)
    return names


def availability(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Where a registered model's weights are now, without the network:

    - ``bundled``: its folder in hub_cards/ holds config.json and model.safetensors (loads offline);
    - ``cached``: downloaded (a Hub repo's files in the Hub cache) or converted (an official model in the
      tokenzoo cache), so it loads offline;
    - ``needs download``: a Hub repo not in the cache (zoo.load fetches it);
    - ``needs download + conversion``: upstream files on the Hub that zoo.load fetches and converts once;
    - ``needs conversion``: upstream files off the Hub: download them by hand, then ``tokenzoo convert NAME FILE``.
    """
    from zoo import official

    folder = _card_folders()[name]
    data = card_data(name)
    if (folder / WEIGHTS_NAME).is_file() and (folder / CONFIG_NAME).is_file():
        return "bundled"
    recipe = official.recipe_of(name, data)
    if recipe is not None:
        if official.is_converted(name, data):
            return "cached"
        return "needs download + conversion" if all(f.on_hub for f in recipe.files) else "needs conversion"
    repo = data.get("hub_repo")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        revision = data.get("revision") or "main"
        found = [
            try_to_load_from_cache(repo, f, cache_dir=cache_dir, revision=revision) for f in (CONFIG_NAME, WEIGHTS_NAME)
        ]
        return "cached" if all(isinstance(p, str) for p in found) else "needs download"
    return "needs conversion"


# ---- loading ------------------------------------------------------------------------------------
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def repo_id_problem(repo: str) -> str | None:
    """What is wrong with a Hub repo id (the Hub's own rules, as huggingface_hub checks them), or None."""
    if not _REPO_ID.fullmatch(repo):
        return "a Hub repo id looks like 'org/name' (letters, digits, '-', '_', '.')"
    if ".." in repo or "--" in repo:
        return "it may not contain '..' or '--'"
    if any(part.startswith(("-", ".")) or part.endswith(("-", ".")) for part in repo.split("/")):
        return "a part may not start or end with '-' or '.'"
    if len(repo.split("/")[1]) > 96:
        return "the name is longer than 96 characters"
    return None


def parse_source(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[str, str, str | None]:
    """Classify a load argument as ("folder", path, None), ("hub", repo_id, revision) or ("name", name, rev).

    As in timm, a bare ``org/repo`` is refused rather than guessed: the error names the ``hf-hub:``
    and ``local-dir:`` prefixes that say which one is meant.
    """
    if isinstance(name_or_path, os.PathLike):
        return "folder", os.fspath(name_or_path), None
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ConfigError(
            f"zoo.load needs a model name, 'hf-hub:org/repo[@revision]' or a folder, got {name_or_path!r}"
        )
    text = name_or_path
    if text.startswith(HUB_PREFIX):
        repo = text[len(HUB_PREFIX) :]
        if "@" in repo:
            repo, pinned = repo.split("@", 1)
            if not pinned:
                raise ConfigError(f"{text!r}: nothing after '@'; write 'hf-hub:org/repo@revision'")
            if revision is not None and revision != pinned:
                raise ConfigError(f"{text!r} pins revision {pinned!r} but revision={revision!r} was also given")
            revision = pinned
        problem = repo_id_problem(repo)
        if problem:
            raise ConfigError(f"{text!r} is not a valid Hub repo id: {problem}; write 'hf-hub:org/name[@revision]'")
        return "hub", repo, revision
    if text.startswith(LOCAL_PREFIX):
        return "folder", text[len(LOCAL_PREFIX) :], None
    if text in _card_folders():
        return "name", text, revision
    if Path(text).is_dir():
        return "folder", text, None
    if _REPO_ID.fullmatch(text):
        raise UnknownModelError(
            text,
            _card_folders(),
            hint=(
                f"it looks like a Hub repo id: load it with 'hf-hub:{text}' (add '@revision' to pin one), "
                f"or a folder with 'local-dir:{text}' (no such folder exists now)."
            ),
        )
    raise UnknownModelError(text, _card_folders())


def arch_of_config(data: dict[str, Any]) -> str | None:
    """The arch a config.json names (``"arch"``), or the one whose upstream layout it is (``UPSTREAM_TARGETS``)."""
    if data.get("arch"):
        return data["arch"]
    nested = data.get("config")
    target = data.get("_target_") or (nested.get("_target_") if isinstance(nested, dict) else None)
    if isinstance(target, str):
        return next((arch for prefix, arch in UPSTREAM_TARGETS.items() if target.startswith(prefix)), None)
    return None


def _arch_of_folder(folder: Path, hint: str | None, source: str, revision: str | None) -> str:
    from zoo.cards import read_card_data
    from zoo.hub import read_config

    config_path = folder / CONFIG_NAME
    if config_path.is_file():
        arch = arch_of_config(read_config(config_path, source))
        if arch:
            return arch
    if hint:
        return hint
    card = folder / CARD_NAME
    if card.is_file():
        arch = read_card_data(card).get("arch")
        if arch:
            return arch
    if not config_path.is_file():
        raise ModelFileNotFoundError(source, CONFIG_NAME, revision)
    raise ConfigError(f"{source}: neither config.json nor README.md names an 'arch'; pass arch=...")


def load(
    name_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    arch: str | None = None,
):
    """Load a model by registered name, ``"hf-hub:org/repo[@revision]"``, or folder path.

    Args:
        name_or_path: a name from ``list_models()``, ``"hf-hub:org/repo"`` with an optional
            ``@branch|tag|sha``, ``"local-dir:PATH"``, or a folder (str or PathLike).
        device, dtype: where and in what floating dtype the model comes back (default: CPU, as stored).
            The weights are read onto ``device`` and cast to ``dtype`` on the way in.
        revision: Hub branch, tag or commit sha (or put it after ``@``).
        local_files_only: use the Hub cache only, as ``HF_HUB_OFFLINE=1`` does (read at call time).
        cache_dir: Hub cache folder (default: huggingface_hub's).
        arch: the architecture, for a folder or repo whose config.json does not name one.

    The model is built on the meta device and its weights are assigned from safetensors, strictly;
    it comes back in eval mode with ``name``, ``source`` and ``revision`` set (for a Hub load, the
    commit sha the revision resolved to). All files of a Hub load come from that one commit. Errors
    are :mod:`zoo.errors` types naming the repo, revision and file.
    """
    from zoo import hub
    from zoo.api import check_device

    device = check_device(device)
    kind, where, revision = parse_source(name_or_path, revision)
    name = Path(where).resolve().name if kind == "folder" else os.fspath(name_or_path)
    source, commit = where, None
    if kind == "name":
        data = card_data(where)
        arch = arch or data.get("arch")
        folder = _card_folders()[where]
        if revision is not None and (folder / WEIGHTS_NAME).is_file():
            raise ConfigError(
                f"{where} is bundled with tokenzoo (its weights are in {folder}), so it has no revisions; "
                f"drop revision={revision!r} (--revision), or load a Hub repo with 'hf-hub:org/repo@{revision}'"
            )
        if data.get("upstream_files") and not (folder / WEIGHTS_NAME).is_file():
            # An official checkpoint in upstream's layout: fetched, verified and converted once (zoo.official).
            from zoo.official import converted_folder

            if revision is not None:
                raise ConfigError(f"{where}: its card pins the upstream files; revision= applies to hf-hub: sources")
            card = folder / CARD_NAME
            folder = converted_folder(where, data, local_files_only, cache_dir, card=card)
            kind = "converted"
        elif not (folder / WEIGHTS_NAME).is_file():
            repo = data.get("hub_repo")
            if not repo:
                raise ModelFileNotFoundError(
                    where,
                    WEIGHTS_NAME,
                    hint=data.get("weights_hint", "Its card says how to obtain the weights."),
                )
            revision = revision or data.get("revision")
            kind, where = "hub", repo
    if kind == "hub":
        source = f"{HUB_PREFIX}{where}"
        options = dict(local_files_only=local_files_only, cache_dir=cache_dir)
        config_path = hub.download_file(where, CONFIG_NAME, revision, **options)
        commit = hub.snapshot_of(config_path, CONFIG_NAME).name
        arch = arch or arch_of_config(hub.read_config(config_path, source))
        if not arch:
            raise ConfigError(
                f"{source}: config.json names no 'arch' and is no upstream layout tokenzoo knows; "
                "pass arch=... or load it by its card name"
            )
        files = tuple(dict.fromkeys((CONFIG_NAME, *get_arch(arch).hub_files)))
        # Every file at the commit config.json came from, even if the branch moves meanwhile.
        folder = hub.download_model(where, commit, files=files, shown_revision=revision or "main", **options)
        revision = revision or "main"
    elif kind == "folder":
        folder = Path(where)
        if not folder.is_dir():
            raise ModelFileNotFoundError(where, CONFIG_NAME, hint="The folder does not exist.")
    arch = _arch_of_folder(folder, arch, source, revision)
    model = get_arch(arch).from_folder(folder, source=source, revision=revision, device=device, dtype=dtype)
    model.name, model.source, model.revision = name, source if commit else str(folder), commit
    return model.eval()
