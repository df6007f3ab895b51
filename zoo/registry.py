"""Architecture names -> classes (imported lazily), model names -> cards, and ``zoo.load``.

An *architecture* is code: a ``ZooModel`` subclass named ``"module:Class"`` below and imported only
when a model of that arch is loaded, so ``import zoo`` pulls in no family. A *model* is data: a
folder in ``hub_cards/`` holding a README.md card (whose YAML names the arch) and, for the tiny
models we train here, config.json + model.safetensors; cards of official checkpoints name the Hub
repo and revision their weights live at instead.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ConfigError, ModelFileNotFoundError, UnknownModelError

# One line per architecture. The class states the same ``arch``; tests/test_registry.py keeps them in sync.
ARCHITECTURES: dict[str, str] = {
    # text
    "byte-tokenizer": "zoo.text:ByteTokenizer",
    "hf-tokenizer": "zoo.text:HFTokenizer",
    "sentencepiece": "zoo.text:SentencePieceTokenizer",
    "tiktoken": "zoo.text:TiktokenTokenizer",
    # image
    "flextok": "vision.flextok.model:FlexTok",
    "flextok-vae": "vision.flextok.vae:FlexTokVAE",
    # pose
    "mixste": "video_pose.mixste:MixSTE",
    "hot-mixste": "video_pose.hot:HoTMixSTE",
    "tpc-mixste": "video_pose.hot:TPCMixSTE",
    "motionbert": "video_pose.motionbert:MotionBERT",
    "hot-motionbert": "video_pose.motionbert:HoTMotionBERT",
    # audio
    "s3tokenizer": "audio.s3tokenizer:S3Tokenizer",
    "touchtts": "audio.touchtts.model:TouchTTS",
    # em_volume
    "tokenunify": "em_volume.tokenunify:TokenUnify",
}

# Upstream checkpoint converters, one per architecture that has published weights in another layout:
# "module:function" with signature ``convert_checkpoint(arch: str, src: Path, out: Path, **options) -> Path``
# that writes a zoo model folder at ``out`` (README.md card + config.json + model.safetensors).
CONVERTERS: dict[str, str] = {
    "flextok": "vision.flextok.convert:convert_checkpoint",
    "mixste": "video_pose.convert:convert_checkpoint",
    "hot-mixste": "video_pose.convert:convert_checkpoint",
    "tpc-mixste": "video_pose.convert:convert_checkpoint",
    "motionbert": "video_pose.convert:convert_checkpoint",
    "hot-motionbert": "video_pose.convert:convert_checkpoint",
    "s3tokenizer": "audio.convert:convert_checkpoint",  # variant read from the file or its name
    "s3tokenizer-v1": "audio.convert:convert_checkpoint",
    "s3tokenizer-v1_25hz": "audio.convert:convert_checkpoint",
    "s3tokenizer-v2": "audio.convert:convert_checkpoint",
    "s3tokenizer-v3": "audio.convert:convert_checkpoint",
    "tokenunify": "em_volume.convert:convert_checkpoint",
}

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
def cards_dir() -> Path:
    """Where the bundled model folders live: $TOKENZOO_CARDS_DIR or hub_cards/ beside the packages."""
    env = os.environ.get("TOKENZOO_CARDS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "hub_cards"


def _card_folders() -> dict[str, Path]:
    root = cards_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "README.md").is_file()}


def card_data(name: str) -> dict[str, Any]:
    """The YAML header of a bundled model's card, as a dict."""
    from zoo.cards import read_card_data

    folders = _card_folders()
    if name not in folders:
        raise UnknownModelError(name, folders)
    return read_card_data(folders[name] / "README.md")


def list_models(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (like timm), optionally of one modality."""
    names = [n for n in _card_folders() if fnmatch.fnmatch(n, pattern)]
    if modality is not None:
        from zoo.api import MODALITIES

        if modality not in MODALITIES:
            raise ConfigError(f"list_models: modality {modality!r} is not one of {', '.join(MODALITIES)}")
        names = [n for n in names if card_data(n).get("modality") == modality]
    return names


# ---- loading ------------------------------------------------------------------------------------
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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
        if not _REPO_ID.fullmatch(repo):
            raise ConfigError(f"{text!r}: a Hub repo id looks like 'org/name'")
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


def _arch_of_folder(folder: Path, hint: str | None, source: str, revision: str | None) -> str:
    config_path = folder / "config.json"
    if config_path.is_file():
        arch = _read_config(config_path, source).get("arch")
        if arch:
            return arch
    if hint:
        return hint
    card = folder / "README.md"
    if card.is_file():
        from zoo.cards import read_card_data

        arch = read_card_data(card).get("arch")
        if arch:
            return arch
    if not config_path.is_file():
        raise ModelFileNotFoundError(source, "config.json", revision)
    raise ConfigError(f"{source}: neither config.json nor README.md names an 'arch'; pass arch=...")


def _read_config(path: Path, source: str) -> dict[str, Any]:
    from zoo.errors import CorruptFileError

    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptFileError("config.json", f"not valid JSON ({err})", source=source) from err
    if not isinstance(data, dict):
        raise CorruptFileError("config.json", f"holds a {type(data).__name__}, not a JSON object", source=source)
    return data


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
        revision: Hub branch, tag or commit sha (or put it after ``@``).
        local_files_only: use the Hub cache only, as ``HF_HUB_OFFLINE=1`` does (read at call time).
        cache_dir: Hub cache folder (default: huggingface_hub's).
        arch: the architecture, for a folder or repo whose config.json does not name one.

    Weights load strictly from safetensors; the model comes back in eval mode. All files of a Hub
    load come from one commit. Errors are :mod:`zoo.errors` types naming the repo, revision and file.
    """
    from zoo import hub

    kind, where, revision = parse_source(name_or_path, revision)
    source = where
    if kind == "name":
        data = card_data(where)
        arch = arch or data.get("arch")
        folder = _card_folders()[where]
        if not (folder / hub.WEIGHTS_NAME).is_file():
            repo = data.get("hub_repo")
            if not repo:
                raise ModelFileNotFoundError(
                    where,
                    hub.WEIGHTS_NAME,
                    hint=data.get("weights_hint", "Its card says how to obtain the weights."),
                )
            revision = revision or data.get("revision")
            kind, where = "hub", repo
    if kind == "hub":
        source = f"{HUB_PREFIX}{where}"
        options = dict(local_files_only=local_files_only, cache_dir=cache_dir)
        config_path = hub.download_file(where, hub.CONFIG_NAME, revision, **options)
        commit = hub.snapshot_of(config_path, hub.CONFIG_NAME).name
        arch = arch or _read_config(config_path, source).get("arch")
        if not arch:
            raise ConfigError(f"{source}: config.json names no 'arch'; pass arch=... or load it by its card name")
        files = tuple(dict.fromkeys((hub.CONFIG_NAME, *get_arch(arch).hub_files)))
        # Every file at the commit config.json came from, even if the branch moves meanwhile.
        folder = hub.download_model(where, commit, files=files, shown_revision=revision or "main", **options)
        revision = revision or "main"
    elif kind == "folder":
        folder = Path(where)
        if not folder.is_dir():
            raise ModelFileNotFoundError(where, hub.CONFIG_NAME, hint="The folder does not exist.")
    arch = _arch_of_folder(folder, arch, source, revision)
    model = get_arch(arch).from_folder(folder, source=source, revision=revision)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model.eval()
