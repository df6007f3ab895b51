"""Side by side: the same inputs through several models of one modality, one table.

``tokenzoo compare MODEL... --inputs FILES`` (or ``zoo.compare.compare``) loads each model, reads
every input with the model's own ``load_item`` (hooks in :mod:`zoo.batch`), and reports per model:

- tokens per item (mean valid tokens),
- bits per unit: tokens * log2(K) / input size, in the family's unit (byte, pixel, second, frame, voxel),
- codebook usage (fraction of the K ids seen) and perplexity (effective number of ids),
- reconstruction quality, with its protocol (``reconstruction_quality`` hook: PSNR, MPJPE, exact
  round trips...), where the model decodes,
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
from pathlib import Path
from typing import Any

import torch

from zoo import batch as hooks
from zoo.api import Tokens, ZooModel
from zoo.errors import ConfigError, InputError, NotSupportedError

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


def extra_metrics(model: ZooModel, items: list[Any], token_batches: list[Tokens]) -> dict[str, float]:
    """Modality-specific columns: the model's ``compare_metrics`` hook, else fertility for text."""
    if hasattr(model, "compare_metrics"):
        return dict(model.compare_metrics(items, token_batches))
    if model.modality == "text" and all(isinstance(item, str) for item in items):
        from zoo.metrics.text import count_words

        words = sum(count_words(item) for item in items)
        tokens = sum(int(t.mask.sum()) for t in token_batches)
        return {"fertility": tokens / words} if words else {}
    return {}


def units_from_meta(token_batches: list[Tokens]) -> tuple[float, str] | None:
    """Input size from what encode recorded: seconds of audio or pixels of images, else None."""
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
    collated = [hooks.collate(model, chunk) for chunk in batches]
    model.encode(collated[0])  # warm-up: first-call allocations and lazy imports do not count
    _sync(model)
    start = time.perf_counter()
    token_batches: list[Tokens] = [model.encode(batch) for batch in collated]
    _sync(model)
    encode_seconds = time.perf_counter() - start

    lengths = torch.cat([t.lengths.cpu() for t in token_batches])
    discrete = all(t.ids is not None for t in token_batches)
    valid_ids = torch.cat([t.ids[t.mask].cpu() for t in token_batches]) if discrete else torch.empty(0)
    sizes = [hooks.input_units(model, item) for item in items]
    units = sum(s[0] for s in sizes) if sizes and all(s is not None for s in sizes) else None
    unit = sizes[0][1] if units else None
    if units is None and (from_meta := units_from_meta(token_batches)) is not None:
        units, unit = from_meta
    codebook = hooks.codebook_size(model, token_batches[0])
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
        "extra": extra_metrics(model, items, token_batches),
    }
    try:
        _sync(model)
        start = time.perf_counter()
        if hasattr(model, "reconstruct"):
            decoded = None
            reconstructions = [r for b, t in zip(collated, token_batches) for r in hooks.reconstruct(model, b, t)]
        else:  # decode once; keep the raw output for the default image quality
            decoded = [model.decode(tokens) for tokens in token_batches]
            reconstructions = [r for output in decoded for r in model.postprocess(output)]
        _sync(model)
        row["decode_ms_per_item"] = 1000 * (time.perf_counter() - start) / len(items)
        if hasattr(model, "reconstruction_quality") or decoded is None or model.modality != "image":
            row["quality"] = hooks.reconstruction_quality(model, items, reconstructions)
        else:
            row["quality"] = image_quality(collated, decoded)
    except NotSupportedError as err:
        logger.info("%s does not decode: %s", name, err)
    return row


def image_quality(batches: list[Any], decoded: list[Any]) -> dict[str, Any] | None:
    """Default image quality: PSNR of decode(encode(x)) against the preprocessed input x in [-1, 1]."""
    try:
        from zoo.metrics.image import psnr
    except ImportError:
        return None
    values = []
    for x, y in zip(batches, decoded):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape:
            return None
        values.append(psnr(y.float().cpu().clamp(-1, 1), x.float().cpu(), data_range=2.0).reshape(-1))
    return {
        "name": "PSNR dB",
        "value": float(torch.cat(values).mean()),
        "protocol": "PSNR of decode(encode(x)) vs the preprocessed input x (range [-1, 1], data_range 2), "
        "mean over images, default decode settings",
    }


def compare(
    models: Sequence[str | os.PathLike | ZooModel],
    inputs: Sequence[str | os.PathLike] | str | None = None,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The comparison table of ``models`` (all of one modality) on ``inputs`` (files) or sample inputs."""
    import zoo

    if not models:
        raise ConfigError("compare needs at least one model")
    loaded: list[tuple[str, ZooModel]] = []
    for spec in models:
        model = spec if isinstance(spec, ZooModel) else zoo.load(spec, device=device)
        loaded.append((hooks.model_identity(spec)[0] if not isinstance(spec, ZooModel) else model.arch, model.eval()))
    modalities = sorted({m.modality for _, m in loaded})
    if len(modalities) > 1:
        raise ConfigError(
            "compare puts models of one modality side by side; got "
            + ", ".join(f"{n} ({m.modality})" for n, m in loaded)
        )
    if inputs is None:
        paths = None
        shared_items = hooks.sample_inputs(loaded[0][1])
    else:
        paths = hooks.resolve_inputs(inputs)
    rows = []
    for name, model in loaded:
        if paths is None:
            items = shared_items
        else:
            try:
                items = [hooks.load_item(model, p) for p in paths]
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
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    p.add_argument("--markdown", default=None, help="also write the Markdown table here")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    table = compare(args.models, args.inputs, batch_size=args.batch_size, device=args.device)
    markdown = to_markdown(table)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    print(markdown, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.compare")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["compare", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
