"""Upstream checkpoints -> zoo model folders (README.md + config.json + model.safetensors).

Accepted inputs:

* HoT's releases (Google Drive, ``checkpoint/pretrained/{mixste,hot_mixste,tpc_mixste}/*.pth``): a plain
  ``state_dict`` saved with ``torch.save``; with a ``module.`` prefix if it was saved from DataParallel.
* MotionBERT's ``best_epoch.bin`` / ``latest_epoch.bin``: ``{"model_pos": state_dict, ...}`` with ``module.``,
  the optimizer state, and ``min_loss`` as a numpy float64 (the one extra pickle global allowed here).
* A safetensors file holding an upstream state_dict (the parity fixtures).

Pickles are opened with ``torch.load(weights_only=True)`` here and nowhere else. Our modules keep upstream's
parameter names, so conversion is a key-for-key copy; sizes are read from the weight shapes. What the
shapes cannot tell (``num_heads``, ``prune_before_block``, TPC-MixSTE's ``kept_frames``) comes from the
config defaults (the released models) or from ``**options``.

Keys dropped on purpose: ``total_ops`` / ``total_params`` buffers that ``thop.profile`` adds to every
module (a model saved after profiling carries them); they are counters, not weights.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from zoo.errors import CheckpointMismatchError, ConfigError, CorruptFileError, ModelFileNotFoundError

log = logging.getLogger(__name__)

# The only classes convert.py builds: an allowlist, never a name read from a file.
ARCH_CLASSES = {
    "mixste": "video_pose.mixste:MixSTE",
    "hot-mixste": "video_pose.hot:HoTMixSTE",
    "tpc-mixste": "video_pose.hot:TPCMixSTE",
    "motionbert": "video_pose.motionbert:MotionBERT",
    "hot-motionbert": "video_pose.motionbert:HoTMotionBERT",
}
UPSTREAM = {
    "mixste": ("NationalGAILab/HoT", "mit"),
    "hot-mixste": ("NationalGAILab/HoT", "mit"),
    "tpc-mixste": ("NationalGAILab/HoT", "mit"),
    "motionbert": ("Walter0807/MotionBERT", "apache-2.0"),
    "hot-motionbert": ("NationalGAILab/HoT", "mit"),
}
# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1
THOP_KEYS = re.compile(r"(^|\.)(total_ops|total_params)$")
WRAPPER_KEYS = ("model_pos", "state_dict", "model")


def model_class(arch: str) -> type:
    import importlib

    if arch not in ARCH_CLASSES:
        raise ConfigError(f"video_pose.convert knows no arch {arch!r}; choose one of {', '.join(ARCH_CLASSES)}")
    module, name = ARCH_CLASSES[arch].split(":")
    return getattr(importlib.import_module(module), name)


def read_upstream_state_dict(src: str | Path) -> dict[str, Tensor]:
    """An upstream checkpoint file -> a flat state_dict with upstream key names (no wrapper, no ``module.``)."""
    src = Path(src)
    if not src.is_file():
        raise ModelFileNotFoundError(str(src.parent), src.name, hint="Give the path of the downloaded checkpoint.")
    if src.suffix == ".safetensors":
        from zoo.hub import read_safetensors

        state: Any = read_safetensors(src)
    else:
        from zoo.pickles import NUMPY_SCALARS, load_weights_only

        state = load_weights_only(src, extras=(NUMPY_SCALARS,))  # MotionBERT pickles min_loss as numpy float64
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CorruptFileError(str(src), "it holds no state_dict of tensors (nor one under 'model_pos')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    dropped = sorted(k for k in state if THOP_KEYS.search(k))
    if dropped:
        log.info("dropping %d thop profiling buffers (%s, ...)", len(dropped), dropped[0])
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not THOP_KEYS.search(k)}


def _count(state: dict[str, Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def infer_config(arch: str, state: dict[str, Tensor], **options):
    """The config of ``arch`` whose sizes fit ``state``'s shapes; ``options`` set what shapes cannot tell."""
    cls = model_class(arch)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) for {arch}: {', '.join(unknown)}; known: {', '.join(sorted(fields))}")

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointMismatchError(arch, "checkpoint", missing=[key])
        return tuple(state[key].shape)

    if arch.endswith("mixste"):
        sizes = dict(
            dim=shape("Spatial_patch_to_embedding.weight")[0],
            in_channels=shape("Spatial_patch_to_embedding.weight")[1],
            num_joints=shape("Spatial_pos_embed")[1],
            num_frames=shape("Temporal_pos_embed")[1],
            depth=_count(state, r"STEblocks\.(\d+)\."),
            mlp_hidden_dim=shape("STEblocks.0.mlp.fc1.weight")[0],
        )
    else:
        sizes = dict(
            dim=shape("joints_embed.weight")[0],
            in_channels=shape("joints_embed.weight")[1],
            num_joints=shape("pos_embed")[1],
            num_frames=shape("temp_embed")[1],
            depth=_count(state, r"blocks_st\.(\d+)\."),
            mlp_hidden_dim=shape("blocks_st.0.mlp_s.fc1.weight")[0],
            dim_rep=shape("pre_logits.fc.weight")[0],
        )
    if "pos_embed_token" in state:
        sizes["kept_frames"] = shape("pos_embed_token")[1]
    return cls.config_class(**{**sizes, **options})


def convert_state_dict(arch: str, state: dict[str, Tensor], **options):
    """Build ``arch`` sized from ``state`` and load ``state`` strictly; returns the model in eval mode."""
    from zoo.hub import load_state_dict_strict

    cls = model_class(arch)
    model = cls(infer_config(arch, state, **options))
    load_state_dict_strict(model, state, "checkpoint")
    return model.eval()


def convert_checkpoint(arch: str, src: Path, out: Path, **options) -> Path:
    """Convert the upstream checkpoint ``src`` of ``arch`` into a zoo model folder at ``out``; returns ``out``.

    ``options`` are config fields the weights cannot tell, under our names or upstream's command-line names
    (``UPSTREAM_OPTION_NAMES``: HoT's ``--layer_index`` is ``prune_before_block``): ``prune_before_block``,
    ``kept_frames`` (TPC-MixSTE; HoT's is read off ``pos_embed_token``), ``knn_k``, ``num_heads``. HoT records
    none of them in its checkpoints, so the values used are written on the card. ``name`` titles the card.
    """
    from zoo.cards import make_card

    src, out = Path(src), Path(out)
    name = options.pop("name", out.name)
    options = upstream_options(arch, options)
    model = convert_state_dict(arch, read_upstream_state_dict(src), **options)
    repo, license = UPSTREAM[arch]
    params = sum(p.numel() for p in model.parameters())
    settings = settings_text(model.config, options)
    card = make_card(
        name=name,
        arch=arch,
        modality="pose",
        license=license,
        summary=f"{arch} converted from the upstream checkpoint {src.name} ({params / 1e6:.2f} M parameters).",
        upstream_repo=repo,
        weights=f"Converted by video_pose.convert (version {CONVERTER_VERSION}) from {src.name} (keys copied one "
        f"for one). {settings}",
        converted_with={k: getattr(model.config, k) for k in SETTINGS if hasattr(model.config, k)},
    )
    model.save_pretrained(out, card=card)
    return out


# Settings the weights do not record (upstream passes them on the command line); the card states them.
SETTINGS = ("prune_before_block", "kept_frames", "knn_k", "num_heads")
# Upstream's argument names (HoT common/arguments.py) -> ours.
UPSTREAM_OPTION_NAMES = {"layer_index": "prune_before_block", "token_num": "kept_frames"}


def upstream_options(arch: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options under our names; an upstream name and ours for the same field must agree."""
    renamed: dict[str, Any] = {}
    for key, value in options.items():
        ours = UPSTREAM_OPTION_NAMES.get(key, key)
        if ours in renamed and renamed[ours] != value:
            raise ConfigError(f"{arch}: {key}={value!r} contradicts {ours}={renamed[ours]!r}")
        renamed[ours] = value
    if arch.startswith(("hot-", "tpc-")) and "prune_before_block" not in renamed:
        log.warning(
            "%s: prune_before_block (upstream --layer_index) is not recorded in checkpoints; using the released "
            "model's value. Pass prune_before_block=N if the model was trained with another --layer_index.",
            arch,
        )
    return renamed


def settings_text(config: Any, given: dict[str, Any]) -> str:
    """One sentence stating the settings the weights do not record, and whether each was given or a default."""
    parts = [
        f"{k}={getattr(config, k)} ({'given' if k in given else 'default'})" for k in SETTINGS if hasattr(config, k)
    ]
    return "Settings not recorded in the checkpoint: " + ", ".join(parts) + "." if parts else ""
