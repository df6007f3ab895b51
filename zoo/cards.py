"""Model cards: a README.md with a YAML header, written through huggingface_hub's ModelCard / ModelCardData.

The YAML fields tokenzoo relies on (``REQUIRED_FIELDS`` must be present in every card):

    library_name: tokenzoo
    arch: hot-mixste            # registry architecture (zoo.registry.FAMILIES)
    modality: pose              # text | image | audio | pose | em_volume
    license: apache-2.0         # the license of the weights: a Hub license id, or `other` with
    license_name: my-license    #   license_name (and license_link) for a custom license
    tokens: 81 kept frames x 17 joints, 512-d embeddings     # what a token is, for the README table
    upstream_repo: NationalGAILab/HoT
    upstream_revision: <commit sha or tag>
    paper: https://arxiv.org/abs/...
    weights: how the weights were made (trained here by ..., converted from ...)
    hub_repo: org/name          # official checkpoints published in our loadable layout (FlexTok): the repo
    revision: <sha>             # pinned revision of hub_repo
    converter: s3tokenizer-v1   # official checkpoints in upstream's own layout: the recipe zoo.official
    converter_options: {...}    #   follows (converter, its options, the upstream files with repo/filename
    upstream_files: [...]       #   or url, revision, sha256, option); see zoo/official.py
    model-index: metrics, each with the protocol it was measured under (EvalResult.metric_args)

Every card has a "Use" section whose snippet runs as written for its family (``USAGE`` by modality, or the
family's own): tests/test_cards_usage.py runs each one on the bundled tiny model of the same arch.

``models_table()`` renders the README's table of models from hub_cards/;
``python -m zoo.cards --update-readme README.md`` writes it between the README's
``<!-- models-table ... -->`` and ``<!-- /models-table -->`` markers (``--check`` only compares).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError
from zoo.files import CARD_NAME, MODALITIES, WEIGHTS_NAME, atomic_write, cards_dir

REQUIRED_FIELDS = ("library_name", "arch", "modality", "license")
LIBRARY_NAME = "tokenzoo"

# License ids the Hub knows (a subset: the ones tokenizer weights tend to carry); anything else is
# written as `license: other` + `license_name`, as the Hub asks for custom licenses.
HUB_LICENSES = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd-2-clause",
        "bsd-3-clause",
        "cc0-1.0",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nc-nd-4.0",
        "gpl-3.0",
        "lgpl-3.0",
        "agpl-3.0",
        "mpl-2.0",
        "openrail",
        "creativeml-openrail-m",
        "unlicense",
        "other",
        "unknown",
    }
)

# The "Use" snippet per modality; NAME is the model's name. Each runs as written (sample_inputs are the
# model's bundled examples); a family whose models differ passes its own ``usage`` to make_card.
USAGE = {
    "audio": """import zoo

model = zoo.load(NAME)
clips = model.sample_inputs()  # bundled speech; or paths of your own audio files
tokens = model.encode(model.preprocess(clips))
print(tokens.ids.shape, tokens.lengths)  # ids (B, N); an encoder only: there is no decode""",
    "pose": """import zoo

model = zoo.load(NAME)
keypoints = model.preprocess(model.sample_inputs())  # (B, F, 17, C) 2D keypoints; or your own .npz clips
poses = model.lift(keypoints)  # (B, F, 17, 3) 3D joints, any clip length
print(poses.shape)""",
    "em_volume": """import zoo

model = zoo.load(NAME)
volume = model.sample_inputs()[0]  # a bundled EM volume; or your own (D, H, W) array or .npz/.h5/.tif file
labels = model.segment(volume)  # (D, H, W) neuron ids, 0 = boundary
print(labels.shape, int(labels.max()))""",
    "image": """import zoo

model = zoo.load(NAME)
images = model.preprocess(model.sample_inputs())  # (B, 3, H, W) in [-1, 1]; or paths of your own images
tokens = model.encode(images)
reconstructions = model.postprocess(model.decode(tokens))  # PIL images
reconstructions[0].save("reconstruction.png")""",
    "text": """import zoo

model = zoo.load(NAME)
tokens = model.encode(["hello, world", "grüße"])
print(tokens.ids, model.decode(tokens))""",
}


def read_card_data(path: str | Path) -> dict[str, Any]:
    """The YAML header of a local card file as a plain dict (empty if the card has none)."""
    from huggingface_hub.repocard import metadata_load

    return metadata_load(Path(path)) or {}


def make_card(
    *,
    name: str,
    arch: str,
    modality: str,
    license: str,
    summary: str,
    tokens: str | None = None,
    upstream_repo: str | None = None,
    upstream_revision: str | None = None,
    paper: str | None = None,
    weights: str | None = None,
    hub_repo: str | None = None,
    revision: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    license_link: str | None = None,
    body: str = "",
    usage: str | None = None,
    **extra: Any,
):
    """Build the ModelCard (README.md) of a zoo model.

    Args:
        license: a Hub license id (``apache-2.0``, ``mit``, ...) or the name of a custom license,
            which is written as ``license: other`` + ``license_name`` (+ ``license_link``).
        tokens: one line saying what a token is (vocabulary, rate, shape), shown in the README table.
        metrics: dicts with ``name``, ``value``, ``type`` (a short metric id such as ``psnr``),
            ``dataset`` and ``protocol`` (how it was measured, e.g. "held-out synthetic clips, 27 frames");
            optional ``task`` and ``dataset_type``. They become the card's model-index.
        usage: the "Use" snippet (NAME stands for the model's name); default ``USAGE[modality]``.
        extra: further YAML fields (``datasets``, an official model's ``converter``, ``converter_options``
            and ``upstream_files``, ...). A card with ``upstream_files`` gets a "Weights" section saying
            where each file comes from and how ``zoo.load`` fetches, checks and converts it.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if modality not in MODALITIES:
        raise ConfigError(f"make_card: modality {modality!r} is not one of {', '.join(MODALITIES)}")
    if not license:
        raise ConfigError("make_card: license is required (the license of the weights)")
    for i, m in enumerate(metrics or []):
        missing = [k for k in ("name", "value", "type", "dataset", "protocol") if k not in m]
        if missing:
            raise ConfigError(f"make_card: metrics[{i}] lacks {', '.join(missing)}")
    custom_license = license not in HUB_LICENSES
    fields = {
        "arch": arch,
        "modality": modality,
        "tokens": tokens,
        "upstream_repo": upstream_repo,
        "upstream_revision": upstream_revision,
        "paper": paper,
        "weights": weights,
        "hub_repo": hub_repo,
        "revision": revision,
        **extra,
    }
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license="other" if custom_license else license,
        license_name=_license_slug(license) if custom_license else None,
        license_link=license_link,
        model_name=name,
        eval_results=[_eval_result(m) for m in metrics or []] or None,
        tags=[LIBRARY_NAME, modality, arch],
        **{k: v for k, v in fields.items() if v is not None},
    )
    sections = [f"# {name}", summary.strip()]
    facts = [
        ("Architecture", f"`{arch}` ({modality})"),
        ("Tokens", tokens),
        ("Upstream", _upstream_text(upstream_repo, upstream_revision)),
        ("Paper", paper),
        ("Weights on the Hub", f"`hf-hub:{hub_repo}@{revision}`" if hub_repo and revision else hub_repo),
        ("License of the weights", license + (f" ({license_link})" if license_link else "")),
    ]
    sections.append("\n".join(f"- **{k}**: {v}" for k, v in facts if v))
    if weights:
        sections.append(f"## How the weights were made\n\n{weights.strip()}")
    if metrics:
        rows = "\n".join(
            f"| {_cell(m['name'])} | {_cell(m['value'])} | {_cell(m['dataset'])} | {_cell(m['protocol'])} |"
            for m in metrics
        )
        sections.append(f"## Metrics\n\n| metric | value | data | protocol |\n|---|---|---|---|\n{rows}")
    if extra.get("upstream_files"):
        from zoo.recipes import weights_section

        sections.append(weights_section(name, extra))
    snippet = (usage or USAGE[modality]).replace("NAME", repr(name))
    sections.append(f"## Use\n\n```python\n{snippet.strip()}\n```")
    if body.strip():
        sections.append(body.strip())
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n")


def write_card(root: str | Path, name: str, card: Any) -> Path:
    """Write ``card`` as ``root/name/README.md`` (the folder is made if needed); returns the path."""
    path = Path(root) / name / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(card))
    return path


def _eval_result(metric: dict[str, Any]):
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type=metric.get("task", "tokenization"),
        dataset_type=metric.get("dataset_type", "custom"),
        dataset_name=metric["dataset"],
        metric_type=metric["type"],
        metric_name=metric["name"],
        metric_value=metric["value"],
        metric_args={"protocol": metric["protocol"]},
    )


def card_metrics(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics of a card's model-index as ``make_card`` takes them (name, value, type, dataset, protocol)."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if not data.get("model-index"):
        return []
    _, results = model_index_to_eval_results(data["model-index"])
    return [
        {
            "name": r.metric_name or r.metric_type,
            "value": r.metric_value,
            "type": r.metric_type,
            "dataset": r.dataset_name,
            "protocol": (r.metric_args or {}).get("protocol", r.metric_config),
        }
        for r in results
    ]


def card_license(data: dict[str, Any]) -> str:
    """The license a card states, with custom licenses under their own name."""
    return data.get("license_name") or data.get("license", "unknown")


def card_problems(data: dict[str, Any]) -> list[str]:
    """What a card's YAML lacks or gets wrong, as sentences (empty when the card is complete)."""
    problems = [f"no {field!r}" for field in REQUIRED_FIELDS if not data.get(field)]
    if data.get("library_name") not in (None, LIBRARY_NAME):
        problems.append(f"library_name is {data['library_name']!r}, not {LIBRARY_NAME!r}")
    if data.get("modality") and data["modality"] not in MODALITIES:
        problems.append(f"modality {data['modality']!r} is not one of {', '.join(MODALITIES)}")
    if data.get("license") == "other" and not data.get("license_name"):
        problems.append("license is 'other' but license_name does not say which")
    return problems


def card_for_model(model: Any):
    """A minimal card for a model saved without one (fine-tunes and conversions pass their own)."""
    return make_card(
        name=model.name or model.arch,
        arch=model.arch,
        modality=model.modality,
        license=model.license or "unknown",
        summary=f"A `{model.arch}` model saved by tokenzoo. Its maker did not describe it further.",
    )


def _license_slug(license: str) -> str:
    """The Hub wants custom license names as lowercase slugs."""
    return re.sub(r"[^a-z0-9.]+", "-", license.lower()).strip("-") or "custom"


def _upstream_text(repo: str | None, revision: str | None) -> str | None:
    if not repo:
        return None
    link = repo if repo.startswith("http") else f"https://github.com/{repo}"
    return f"[{repo}]({link})" + (f" at `{revision}`" if revision else "")


def _cell(value: Any) -> str:
    """A value made safe for one Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


# ---- the README's models table ------------------------------------------------------------------
TABLE_START = re.compile(r"<!-- models-table\b.*?-->\n?", re.S)
TABLE_END = "<!-- /models-table -->"


def _source(folder: Path, data: dict[str, Any]) -> str:
    """Where a model's weights come from, in a few words."""
    if (folder / WEIGHTS_NAME).is_file():
        return f"bundled (`hub_cards/{folder.name}`)"
    if data.get("hub_repo"):
        rev = str(data.get("revision") or "")
        pin = f"@{rev[:7] if re.fullmatch(r'[0-9a-f]{40}', rev) else rev}" if rev else ""
        return f"[hf-hub:{data['hub_repo']}{pin}](https://huggingface.co/{data['hub_repo']})"
    files = data.get("upstream_files") or []
    if files and all(f.get("repo") for f in files):
        return "converted on first load from " + ", ".join(sorted({f"`{f['repo']}`" for f in files}))
    if files or data.get("weights_hint"):
        return "convert the published checkpoint (see card)"
    return "card only"


def models_table(cards_root: str | Path | None = None) -> str:
    """Markdown table of every model in hub_cards/: model, arch, modality, license, tokens, source."""
    root = Path(cards_root) if cards_root is not None else cards_dir()
    rows = ["| model | arch | modality | license | tokens | source |", "|---|---|---|---|---|---|"]
    folders = sorted(p for p in root.iterdir() if (p / CARD_NAME).is_file()) if root.is_dir() else []
    for folder in folders:
        data = read_card_data(folder / CARD_NAME)
        cells = [
            f"[{folder.name}](hub_cards/{folder.name}/README.md)",
            f"`{data.get('arch', '')}`",
            data.get("modality", ""),
            card_license(data),
            data.get("tokens", ""),
            _source(folder, data),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def update_readme(path: str | Path, table: str | None = None, check: bool = False) -> bool:
    """Put ``table`` (default: ``models_table()``) between the README's models-table markers.

    Returns True if the README was (``check``: would be) changed. Raises ValueError if a marker is missing.
    """
    path = Path(path)
    text = path.read_text()
    start = TABLE_START.search(text)
    end = text.find(TABLE_END, start.end() if start else 0)
    if start is None or end < 0:
        raise ValueError(f"{path} has no '<!-- models-table ... -->' ... '{TABLE_END}' markers")
    table = models_table() if table is None else table
    new = text[: start.end()] + table + text[end:]
    if new == text:
        return False
    if not check:
        atomic_write(path, lambda tmp: tmp.write_text(new))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.cards", description="Render the README's models table.")
    parser.add_argument("--update-readme", metavar="README", help="rewrite the table in this README")
    parser.add_argument("--check", metavar="README", help="exit 1 if this README's table is out of date")
    args = parser.parse_args(argv)
    if args.update_readme:
        changed = update_readme(args.update_readme)
        print(f"{args.update_readme}: models table {'updated' if changed else 'already current'}")
        return 0
    if args.check:
        if update_readme(args.check, check=True):
            print(f"{args.check}: the models table is out of date; run `make readme`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(models_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
