"""Side by side: the same inputs through several models of one modality, one table.

``tokenzoo compare MODEL... --inputs FILES`` (or ``zoo.tools.compare.compare``) loads each model, reads
every input with the model's own ``load_item`` (the hooks ``zoo.api.ZooModel`` declares), and reports per model:

- tokens per item (mean valid tokens),
- bits per unit: tokens * log2(K) / input size, in the family's unit (byte, pixel, second, frame, voxel),
- codebook usage (fraction of the K ids seen) and perplexity (effective number of ids),
- reconstruction quality, with its protocol (``reconstruction_quality`` hook: PSNR, MPJPE, exact
  round trips...), where the model ``supports_decode``,
- encode and decode time per item (after one warm-up batch; wall clock on the model's device),
- modality extras from the ``compare_metrics(items, token_batches) -> dict`` hook (fertility for text).

The table comes out as Markdown and as JSON (``{"modality", "items", "rows": [...]}``). Without
``--inputs`` the first model's ``sample_inputs`` are used for all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from zoo.api import Tokens, ZooModel
from zoo.errors import ConfigError, InputError
from zoo.tools.inputs import resolve_inputs
from zoo.tools.options import add_model_options, model_options

logger = logging.getLogger(__name__)


def token_statistics(valid_ids: torch.Tensor, codebook_size: int | None, units: float | None) -> dict[str, Any]:
    """Bits per unit, codebook usage and perplexity of a flat tensor of valid ids (the one place
    compare computes token metrics: ``zoo.metrics.tokens``)."""
    from zoo.metrics import tokens as metrics

    stats: dict[str, Any] = {"bits_per_unit": None, "codebook_usage": None, "codebook_perplexity": None}
    if codebook_size is None or valid_ids.numel() == 0:
        return stats
    ids = valid_ids.reshape(1, -1)
    stats["codebook_usage"] = metrics.codebook_usage(ids, codebook_size)
    stats["codebook_perplexity"] = metrics.codebook_perplexity(ids, codebook_size)
    if units:
        stats["bits_per_unit"] = metrics.bits_per_unit(ids, codebook_size, units)
    return stats


def units_from_meta(token_batches: list[Tokens]) -> tuple[float, str] | None:
    """Input size from what encode recorded (the meta keys ``zoo.api`` documents): seconds from
    ``num_samples`` + ``sample_rate``, pixels from ``image_size``; else None."""
    total, unit = 0.0, None
    for tokens in token_batches:
        meta = tokens.meta
        if isinstance(meta.get("num_samples"), torch.Tensor) and meta.get("sample_rate"):
            total, unit = total + float(meta["num_samples"].sum()) / float(meta["sample_rate"]), "second"
        elif isinstance(meta.get("image_size"), (list, tuple)) and len(meta["image_size"]) == 2:
            h, w = meta["image_size"]
            total, unit = total + tokens.batch_size * float(h) * float(w), "pixel"
        else:
            return None
    return (total, unit) if unit else None


def _sync(model: ZooModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def compare_one(model: ZooModel, name: str, items: list[Any], batch_size: int = 8) -> dict[str, Any]:
    """One row of the table: ``model`` on ``items`` (raw items its hooks understand)."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    collated = [model.collate(chunk) for chunk in batches]
    model.encode(collated[0])  # warm-up: first-call allocations and lazy imports do not count
    _sync(model)
    start = time.perf_counter()
    token_batches: list[Tokens] = [model.encode(batch) for batch in collated]
    _sync(model)
    encode_seconds = time.perf_counter() - start

    lengths = torch.cat([t.lengths.cpu() for t in token_batches])
    discrete = all(t.ids is not None for t in token_batches)
    valid_ids = torch.cat([t.ids[t.mask].cpu() for t in token_batches]) if discrete else torch.empty(0)
    sizes = [model.input_units(item) for item in items]
    units = sum(s[0] for s in sizes) if sizes and all(s is not None for s in sizes) else None
    unit = sizes[0][1] if units else None
    if units is None and (from_meta := units_from_meta(token_batches)) is not None:
        units, unit = from_meta
    codebook = model.codebook_size if discrete else None
    row: dict[str, Any] = {
        "model": name,
        "arch": model.arch,
        "items": len(items),
        "tokens_per_item": float(lengths.float().mean()),
        "unit": unit,
        "codebook_size": codebook,
        **token_statistics(valid_ids, codebook, units),
        "encode_ms_per_item": 1000 * encode_seconds / len(items),
        "decode_ms_per_item": None,
        "quality": None,
        "extra": dict(model.compare_metrics(items, token_batches)),
    }
    if model.supports_decode:
        _sync(model)
        start = time.perf_counter()
        reconstructions = [r for b, t in zip(collated, token_batches) for r in model.reconstruct(b, t)]
        _sync(model)
        row["decode_ms_per_item"] = 1000 * (time.perf_counter() - start) / len(items)
        row["quality"] = model.reconstruction_quality(items, reconstructions)
    return row


def compare(
    models: Sequence[str | os.PathLike | ZooModel],
    inputs: Sequence[str | os.PathLike] | str | None = None,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> dict[str, Any]:
    """The comparison table of ``models`` (all of one modality) on ``inputs`` (files) or sample inputs;
    ``device``, ``dtype``, ``revision`` and ``local_files_only`` are ``zoo.load``'s, for every model
    named by a string."""
    import zoo

    if not models:
        raise ConfigError("compare needs at least one model")
    loaded: list[tuple[str, ZooModel]] = []
    for spec in models:
        if not isinstance(spec, ZooModel):
            spec = zoo.load(spec, device=device, dtype=dtype, revision=revision, local_files_only=local_files_only)
        model = spec
        loaded.append((model.name or model.arch, model.eval()))
    modalities = sorted({m.modality for _, m in loaded})
    if len(modalities) > 1:
        raise ConfigError(
            "compare puts models of one modality side by side; got "
            + ", ".join(f"{n} ({m.modality})" for n, m in loaded)
        )
    if inputs is None:
        paths = None
        shared_items = loaded[0][1].sample_inputs()
        if not shared_items:
            raise ConfigError(f"{loaded[0][0]} has no sample inputs to compare on; give inputs (--inputs FILES)")
    else:
        paths = resolve_inputs(inputs)
    rows = []
    for name, model in loaded:
        if paths is None:
            items = shared_items
        else:
            try:
                items = [model.load_item(p) for p in paths]
            except Exception as err:
                raise InputError(f"{name} cannot read the inputs: {err}") from err
        rows.append(compare_one(model, name, items, batch_size=batch_size))
    return {
        "modality": modalities[0],
        "inputs": paths if paths is not None else "sample_inputs of " + loaded[0][0],
        "items": rows[0]["items"],
        "rows": rows,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def to_markdown(table: dict[str, Any]) -> str:
    """The table as GitHub Markdown, with each quality protocol spelled out below it."""
    columns = ["model", "tokens/item", "bits/unit", "codebook usage", "perplexity", "quality", "encode ms/item"]
    extra = sorted({key for row in table["rows"] for key in row.get("extra", {})})
    columns += ["decode ms/item", *extra]
    head = "| " + " | ".join(columns) + " |\n|---|" + "---:|" * 4 + "---|" + "---:|" * (2 + len(extra)) + "\n"
    lines, protocols = [], {}
    for row in table["rows"]:
        bits = f"{_fmt(row['bits_per_unit'])} /{row['unit']}" if row["bits_per_unit"] is not None else "–"
        usage = (
            f"{_fmt(row['codebook_usage'])} of {row['codebook_size']:,}" if row["codebook_usage"] is not None else "–"
        )
        quality = "–"
        if row["quality"]:
            q = row["quality"]
            protocols.setdefault(q["protocol"], len(protocols) + 1)
            quality = f"{q['name']} {_fmt(q['value'])} [{protocols[q['protocol']]}]"
        cells = [
            row["model"],
            _fmt(row["tokens_per_item"]),
            bits,
            usage,
            _fmt(row["codebook_perplexity"]),
            quality,
            _fmt(row["encode_ms_per_item"]),
            _fmt(row["decode_ms_per_item"]),
            *(_fmt(row.get("extra", {}).get(key)) for key in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = "".join(f"\n[{i}] {protocol}" for protocol, i in protocols.items())
    title = f"{table['modality']}: {table['items']} items\n\n"
    return title + head + "\n".join(lines) + "\n" + (notes + "\n" if notes else "")


# ---- command line ------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    """Add ``compare`` to a ``tokenzoo`` argparse subparsers object."""
    p = subparsers.add_parser(
        "compare",
        help="the same inputs through several models of one modality: one table (Markdown + JSON)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("models", nargs="+", help="registered names, hf-hub:org/repo@rev, or model folders")
    p.add_argument("--inputs", nargs="+", default=None, help="files, folders, globs or @list files")
    p.add_argument("--batch-size", type=int, default=8)
    add_model_options(p)
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    p.add_argument("--markdown", default=None, help="also write the Markdown table here")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from zoo.api import check_output_file
    from zoo.files import atomic_write

    outputs = [check_output_file(p, f"--{k}") for k, p in (("json", args.json), ("markdown", args.markdown)) if p]
    table = compare(args.models, args.inputs, batch_size=args.batch_size, **model_options(args))  # after the checks
    markdown = to_markdown(table)
    texts = {"json": json.dumps(table, indent=1) + "\n", "markdown": markdown}
    for key, path in zip([k for k in ("json", "markdown") if getattr(args, k)], outputs):
        atomic_write(path, lambda tmp, text=texts[key]: tmp.write_text(text, encoding="utf-8"))
    print(markdown, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.tools.compare ...``."""
    from zoo.tools.options import module_main

    return module_main("compare", add_cli, argv)


if __name__ == "__main__":
    sys.exit(main())
