"""Model cards: a README.md with a YAML header, read and written through huggingface_hub's ModelCard.

The YAML fields tokenzoo relies on:

    library_name: tokenzoo
    arch: hot-mixste            # registry architecture
    modality: pose              # text | image | audio | pose | em_volume
    license: apache-2.0         # the upstream license of the weights
    upstream_repo: NationalGAILab/HoT
    upstream_revision: <commit sha or tag>
    paper: https://arxiv.org/abs/...
    hub_repo: org/name          # official checkpoints: where the weights live (absent for bundled ones)
    revision: <sha>             # pinned revision of hub_repo
    weights: how the weights were made (trained here by ..., converted from ...)
    model-index: metrics with their protocol (ModelCardData eval_results)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REQUIRED_FIELDS = ("library_name", "arch", "modality", "license")


def read_card_data(path: str | Path) -> dict[str, Any]:
    """The YAML header of a card file as a plain dict (empty if the card has none)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(path), ignore_metadata_errors=True)
    return card.data.to_dict()


def make_card(
    *,
    name: str,
    arch: str,
    modality: str,
    license: str,
    summary: str,
    upstream_repo: str | None = None,
    upstream_revision: str | None = None,
    paper: str | None = None,
    weights: str | None = None,
    hub_repo: str | None = None,
    revision: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    body: str = "",
    **extra: Any,
):
    """Build a ModelCard for a zoo model.

    ``metrics`` entries are dicts with ``name``, ``value``, ``type`` (a short metric id),
    ``dataset`` and ``protocol`` (how it was measured, e.g. "held-out synthetic clips, 27 frames").
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_results = [
        EvalResult(
            task_type=m.get("task", "tokenization"),
            dataset_type=m.get("dataset_type", "custom"),
            dataset_name=m["dataset"],
            metric_type=m["type"],
            metric_name=m["name"],
            metric_value=m["value"],
            metric_config=m.get("protocol"),
        )
        for m in metrics or []
    ]
    fields = {
        "arch": arch,
        "modality": modality,
        "upstream_repo": upstream_repo,
        "upstream_revision": upstream_revision,
        "paper": paper,
        "weights": weights,
        "hub_repo": hub_repo,
        "revision": revision,
        **extra,
    }
    data = ModelCardData(
        library_name="tokenzoo",
        license=license if license in _HUB_LICENSES else "other",
        model_name=name,
        eval_results=eval_results or None,
        tags=["tokenzoo", modality, arch],
        **{k: v for k, v in fields.items() if v is not None},
    )
    if license not in _HUB_LICENSES:
        data.license_name = license
    metric_lines = "\n".join(
        f"| {m['name']} | {m['value']} | {m['dataset']} | {m.get('protocol', '')} |" for m in metrics or []
    )
    table = (
        f"\n## Metrics\n\n| metric | value | data | protocol |\n|---|---|---|---|\n{metric_lines}\n" if metrics else ""
    )
    weights_text = f"\n## Weights\n\n{weights}\n" if weights else ""
    text = (
        f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n{summary}\n{weights_text}{table}"
        f"\n## Use\n\n```python\nimport zoo\nmodel = zoo.load({name!r})\ntokens = model.encode(x)\n```\n"
        f"\nLicense of the weights: {license}.\n{body}"
    )
    return ModelCard(text)


def card_license(data: dict[str, Any]) -> str:
    """The license a card states, with custom licenses under their own name."""
    return data.get("license_name") or data.get("license", "unknown")


def card_for_model(model: Any):
    """A minimal card for a model saved without one (fine-tunes and conversions pass their own)."""
    return make_card(
        name=getattr(model, "name", model.arch),
        arch=model.arch,
        modality=model.modality,
        license=getattr(model, "license", "other"),
        summary=f"A {model.arch} model saved by tokenzoo.",
    )


# Licenses the Hub knows by id; anything else is written as `other` + license_name.
_HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-nc-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-sa-4.0",
    "openrail",
    "other",
    "unknown",
}
