"""``tokenzoo publish NAME --repo ORG/NAME``: push an official model's conversion to a Hub repo (maintainers).

The pushed repo holds the converted safetensors folder and the official card with the provenance of the
conversion, so users of that mirror load it with ``zoo.load("hf-hub:ORG/NAME")`` and convert nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from zoo.official import MANIFEST_NAME, converted_folder


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
