"""The recipe of an official checkpoint, as its card's YAML states it (see zoo.official for the YAML and
what is done with it): which upstream files, where, their sha256, and the converter they feed.

Pure data and parsing, used by the cards (the "Weights" section) and by ``zoo.official`` (the download,
verification, conversion and cache).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from zoo.errors import ConfigError
from zoo.families import CONVERTERS

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


def weights_section(name: str, data: dict[str, Any]) -> str:
    """The "Weights" section of an official model converted from upstream files (the recipe zoo.official follows)."""
    recipe = recipe_of(name, data)
    rows = []
    for f in recipe.files:
        where = f"`hf-hub:{f.repo}@{f.revision}`" if f.on_hub else f"<{f.url}>"
        what = f"`{f.filename}`" if f.filename else f"one file matching `{f.pattern}` in `{f.folder or '/'}`"
        digest = f"`{f.sha256}`" if f.sha256 else "pinned on first use"
        role = "checkpoint" if f.option is None else f"option `{f.option}`"
        rows.append(f"| {what} | {where} | {digest} | {role} |")
    options = ", ".join(f"{k}={v!r}" for k, v in recipe.options.items()) or "none"
    lines = [
        "## Weights",
        "| upstream file | where | sha256 | feeds |\n|---|---|---|---|\n" + "\n".join(rows),
    ]
    if all(f.on_hub for f in recipe.files):
        lines.append(
            f"`zoo.load({name!r})` (or `tokenzoo encode {name} ...`) downloads the file(s) above through "
            "huggingface_hub, checks the sha256, converts them once with the converter "
            f"`{recipe.converter}` (options: {options}) and keeps the converted safetensors folder in the "
            "tokenzoo cache (`$TOKENZOO_CACHE`, default `~/.cache/tokenzoo`); later loads, offline ones included "
            "(`HF_HUB_OFFLINE=1`), read the cache and convert nothing. The commit each file came from is pinned "
            f"in `pins/{name}.json` there."
        )
    else:
        fetched = [f"`{f.filename or f.pattern}`" for f in recipe.files if f.on_hub]
        where = (
            f"Only {', '.join(fetched)} is on the Hugging Face Hub (tokenzoo fetches it); the other file(s) are not"
            if fetched
            else "The weights are not on the Hugging Face Hub"
        )
        lines.append(
            f"{where}, so tokenzoo cannot fetch them. Download the file(s) off the Hub above, then convert once "
            f"into the tokenzoo cache (converter `{recipe.converter}`, options: {options}):\n\n"
            f"```bash\n{convert_command(recipe)}\n```\n\n"
            f"after which `zoo.load({name!r})` loads the converted copy."
        )
    if any(f.sha256 is None and f.on_hub and not f.filename for f in recipe.files):
        lines.append(
            "No sha256 is recorded for a file picked by pattern (its name could not be checked offline): the "
            "first download pins the file's name, commit and sha256, and every later download must match them."
        )
    if any(f.sha256 is None and f.on_hub and f.filename for f in recipe.files):
        lines.append(
            "No sha256 is recorded for a Hub file named without one (it could not be read offline): the first "
            "download pins its commit and sha256, and every later download must match them."
        )
    if any(f.sha256 is None and not f.on_hub for f in recipe.files):
        lines.append(
            "No sha256 is recorded for a file off the Hub (it could not be read offline): the first conversion "
            "pins the sha256 of the file given, and a later conversion must be given the same file."
        )
    return "\n\n".join(lines)
