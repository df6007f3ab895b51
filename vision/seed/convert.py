"""Upstream SEED checkpoints -> tokenzoo.

Upstream's ``Blip2QformerQuantizer.state_dict()`` maps onto ``vision.seed.model.SEED`` by the rename
table ``RENAMES`` (the Q-Former and the codebook); every other key keeps its upstream name (the timm
``Eva`` ViT, ``ln_vision``, the task layers, the de-tokenizer). Every size comes from the weight
shapes; what no weight holds (attention head counts, the causal switch) comes from the caller:
``RELEASE`` for the published tokenizer, the fixture's config.json in the parity tests.

The release ships in two pieces, and ``load_release`` joins them:
- ``seed_quantizer.pt`` (AILab-CVC/seed-tokenizer-2): a pickled bare state_dict without the ViT
  (``visual_encoder.*``) and with BLIP-2 tensors the inference model does not have (the Q-Former's
  text branch and heads). Upstream loads it with ``strict=False``, so those are ignored; we ignore
  exactly the keys its model lacks, name them in a log line, and refuse a file that lacks any key
  the model needs.
- the EVA ViT-g weights, LAVIS ``eva_vit_g.pth``: a bare float16 state_dict without prefix. It may
  hold more blocks than SEED runs (EVA-CLIP-g has 40; BLIP-2 and SEED use 39): the block count comes
  from the release config, and the dropped blocks are named in a log line. The image size comes from
  the shape of ``pos_embed``.

Pickles are opened only here, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vision.seed.model import SEED, SEEDConfig
from zoo.errors import CheckpointMismatchError, ConfigError, ModelFileNotFoundError

logger = logging.getLogger(__name__)

# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1

LAYER = r"Qformer\.bert\.encoder\.layer\.(\d+)\."
# Upstream key (regex) -> ours. Keys that match none keep their name.
RENAMES = [
    (r"Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.embed_norm."),
    (LAYER + r"(attention|crossattention)\.self\.(query|key|value)\.", r"qformer.layers.\1.\2.\3."),
    (LAYER + r"(attention|crossattention)\.output\.dense\.", r"qformer.layers.\1.\2.dense."),
    (LAYER + r"(attention|crossattention)\.output\.LayerNorm\.", r"qformer.layers.\1.\2.norm."),
    (LAYER + r"intermediate_query\.dense\.", r"qformer.layers.\1.intermediate_query."),
    (LAYER + r"output_query\.dense\.", r"qformer.layers.\1.output_query."),
    (LAYER + r"output_query\.LayerNorm\.", r"qformer.layers.\1.output_norm."),
    (r"quantize\.embedding\.weight$", "quantize.embed"),
]
# In upstream's model but not ours: the position ids of the position embeddings upstream deletes.
UNUSED_UPSTREAM = ("Qformer.bert.embeddings.position_ids",)

# What no weight of the release says: its constructor arguments (create_eva_vit_g, bert-base-uncased,
# the hard-coded 12 de-tokenizer heads) and the 32 queries that switch the causal mask on.
RELEASE = {
    "vit_depth": 39,
    "vit_heads": 16,
    "qformer_heads": 12,
    "detok_heads": 12,
    "cross_attention_freq": 2,
    "causal_queries": True,
}
VIT = "visual_encoder."


def rename(key: str) -> str:
    for pattern, replacement in RENAMES:
        new, count = re.subn("^" + pattern, replacement, key)
        if count:
            return new
    return key


def _indices(keys, prefix: str) -> list[int]:
    found = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return sorted(found)


def _need(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointMismatchError("seed", "checkpoint", missing=[key])
    return tuple(shapes[key])


def config_from_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    *,
    vit_heads: int,
    qformer_heads: int,
    detok_heads: int,
    causal_queries: bool,
    cross_attention_freq: int | None = None,
    vit_depth: int | None = None,
    **extra: Any,
) -> SEEDConfig:
    """SEEDConfig from an upstream state_dict's shapes (upstream names) plus what no weight holds.

    ``vit_depth`` defaults to the number of ViT blocks present; ``cross_attention_freq`` to the
    period the cross-attention layers show (checked against it when given). ``extra`` sets other
    fields (decoding defaults).
    """
    keys = list(shapes)
    vit_width = _need(shapes, VIT + "cls_token")[-1]
    patch = _need(shapes, VIT + "patch_embed.proj.weight")[-1]
    grid = round((_need(shapes, VIT + "pos_embed")[1] - 1) ** 0.5)
    if grid * grid + 1 != shapes[VIT + "pos_embed"][1]:
        raise ConfigError(
            f"visual_encoder.pos_embed has {shapes[VIT + 'pos_embed'][1]} positions, not a square grid + CLS"
        )
    blocks = _indices(keys, VIT + "blocks.")
    layers = _indices(keys, "Qformer.bert.encoder.layer.")
    cross = _indices([k for k in keys if ".crossattention." in k], "Qformer.bert.encoder.layer.")
    freq = _cross_attention_period(cross, len(layers), cross_attention_freq)
    queries = _need(shapes, "query_tokens")
    codebook = _need(shapes, "quantize.embedding.weight")
    detok = _indices(keys, "blocks_image.")
    recon = _indices(keys, "blocks.")
    if recon != detok:
        raise ConfigError(f"blocks has {len(recon)} blocks, blocks_image {len(detok)}; upstream builds both alike")
    downs = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"image_down\.(\d+)\.weight", k)))
    down_dims = tuple(shapes[f"image_down.{i}.weight"][0] for i in downs)
    projection = _need(shapes, "distill_image_proj.weight")
    if projection[1] != queries[1] * down_dims[-1]:
        raise ConfigError(
            f"distill_image_proj takes {projection[1]} inputs, not {queries[1]} queries x {down_dims[-1]}"
        )
    return SEEDConfig(
        image_size=grid * patch,
        patch_size=patch,
        vit_width=vit_width,
        vit_depth=len(blocks) if vit_depth is None else vit_depth,
        vit_heads=vit_heads,
        vit_mlp_hidden=_need(shapes, VIT + "blocks.0.mlp.fc1.weight")[0],
        qformer_width=queries[-1],
        qformer_layers=len(layers),
        qformer_heads=qformer_heads,
        qformer_intermediate=_need(shapes, "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight")[0],
        cross_attention_freq=freq,
        num_query_tokens=queries[1],
        causal_queries=causal_queries,
        codebook_size=codebook[0],
        codebook_dim=codebook[1],
        detok_depth=len(detok),
        detok_heads=detok_heads,
        image_down_dims=down_dims,
        generation_dim=projection[0],
        **extra,
    )


def _cross_attention_period(cross: list[int], layers: int, given: int | None) -> int:
    """The f with cross-attention exactly in layers i % f == 0 (the given one, if it fits)."""
    candidates = [given] if given else range(1, layers + 1)
    for f in candidates:
        if cross == [i for i in range(layers) if i % f == 0]:
            return f
    raise ConfigError(
        f"cross-attention in Q-Former layers {cross} of {layers} does not follow cross_attention_freq={given}"
    )


def convert_state_dict(state: Mapping[str, torch.Tensor], model: SEED, ignore_unknown: bool = False):
    """Upstream state_dict -> (ours, ignored keys). Unknown keys raise unless ``ignore_unknown``."""
    expected = set(model.state_dict())
    converted, ignored = {}, []
    for key, value in state.items():
        if key in UNUSED_UPSTREAM:
            continue
        ours = rename(key)
        if ours in expected:
            converted[ours] = value
        else:
            ignored.append(key)
    if ignored and not ignore_unknown:
        raise CheckpointMismatchError("seed", "checkpoint", unexpected=ignored)
    return converted, sorted(ignored)


def load_upstream_state(state: Mapping[str, torch.Tensor], config: SEEDConfig, source: str = "checkpoint") -> SEED:
    """Build SEED from ``config`` and load an upstream state_dict into it strictly (float32)."""
    from zoo.hub import load_state_dict_strict

    model = SEED(config)
    converted, _ = convert_state_dict(state, model)
    load_state_dict_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}, source)
    return model.eval()


# ---- the release files --------------------------------------------------------------------------
def load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state_dict, read with ``weights_only=True`` (tensors, OrderedDict and storages only)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(str(path.parent), path.name, hint="No such checkpoint.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):  # LAVIS-style {"model": ...}
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path.name} is not a state_dict of tensors")
    return dict(state)


def vit_state(eva: Mapping[str, torch.Tensor], depth: int, where: str) -> dict[str, torch.Tensor]:
    """The LAVIS EVA ViT state_dict (no prefix) -> ``visual_encoder.*`` keys for ``depth`` blocks.

    Blocks at or beyond ``depth`` are dropped and named in a log line; fewer blocks is an error.
    """
    present = _indices(eva, "blocks.")
    if len(present) < depth:
        raise ConfigError(f"{where} holds {len(present)} ViT blocks; SEED runs {depth}")
    dropped = [i for i in present if i >= depth]
    if dropped:
        logger.warning(
            "%s: dropping ViT blocks %s (%d tensors): SEED runs blocks 0..%d, BLIP-2's penultimate features",
            where,
            dropped,
            sum(1 for k in eva if re.match(rf"blocks\.({'|'.join(map(str, dropped))})\.", k)),
            depth - 1,
        )
    kept = {}
    for key, value in eva.items():
        m = re.match(r"blocks\.(\d+)\.", key)
        if m and int(m.group(1)) >= depth:
            continue
        kept[VIT + key] = value
    return kept


def load_release(quantizer: Path, vit: Path, **overrides: Any) -> SEED:
    """``seed_quantizer.pt`` + ``eva_vit_g.pth`` -> SEED (float32), with ``RELEASE`` for what no weight says."""
    settings = {**RELEASE, **overrides}
    release = load_pickle(quantizer)
    stray_vit = sorted(k for k in release if k.startswith(VIT))
    if stray_vit:
        raise ConfigError(
            f"{Path(quantizer).name} holds ViT weights ({stray_vit[0]}, ...); pass the ViT only with --vit"
        )
    state = {**release, **vit_state(load_pickle(vit), settings["vit_depth"], Path(vit).name)}
    config = config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, **settings)
    model = SEED(config)
    converted, ignored = convert_state_dict(state, model, ignore_unknown=True)
    if ignored:
        logger.warning(
            "%s: ignoring %d tensors the SEED tokenizer does not use (as upstream's strict=False load does): %s",
            Path(quantizer).name,
            len(ignored),
            ", ".join(ignored),
        )
    from zoo.hub import load_state_dict_strict

    load_state_dict_strict(
        model, {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}, Path(quantizer).name
    )
    return model.eval()


def convert_checkpoint(arch: str, src: Path, out: Path, **options: Any) -> Path:
    """``tokenzoo convert seed-tokenizer-2 seed_quantizer.pt --vit eva_vit_g.pth --out DIR``.

    Options: ``vit`` (the EVA ViT-g checkpoint; required), ``name`` (card title), and any key of
    ``RELEASE`` (what no weight holds: block count, head counts, ...) for a release of other sizes.
    """
    from vision.seed.card import release_card

    if arch not in ("seed", "seed-tokenizer-2"):
        raise ConfigError(f"vision.seed.convert handles 'seed' and 'seed-tokenizer-2', not {arch!r}")
    if not options.get("vit"):
        raise ConfigError(
            "SEED's release keeps the ViT apart: pass the EVA ViT-g weights too, "
            "tokenzoo convert seed-tokenizer-2 seed_quantizer.pt --vit eva_vit_g.pth --out DIR"
        )
    overrides = {k: v for k, v in options.items() if k not in ("vit", "name")}
    unknown = sorted(set(overrides) - set(RELEASE))
    if unknown:
        raise ConfigError(
            f"unknown SEED conversion option(s) {', '.join(unknown)}; it takes vit, name and {', '.join(RELEASE)}"
        )
    model = load_release(Path(src), Path(options["vit"]), **overrides)
    model.save_pretrained(out, card=release_card(options.get("name", "seed-tokenizer-2"), Path(src).name))
    return Path(out)
