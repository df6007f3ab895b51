"""Upstream TokenUnify checkpoints -> a tokenzoo model folder (README.md + config.json + model.safetensors).

Accepted sources:
- a safetensors file holding upstream's state_dict (names as ``src/segmamba.py`` / ``src/segmamba_ar.py``);
- an upstream training checkpoint (``util_mamba/misc.save_model``): a pickled dict with ``model``,
  ``optimizer``, ``epoch``, ``scaler`` and ``args`` (an ``argparse.Namespace``). It is read with
  ``torch.load(weights_only=True)``; the only class allowed beyond tensors and containers is
  ``argparse.Namespace``. A bare pickled state_dict works too.

``module.`` prefixes (DataParallel / DDP) are stripped. Nothing else is renamed: our module names are
upstream's. Dropped on purpose: ``optimizer``, ``scaler``, ``epoch`` and ``args`` (training state, not
weights). The architecture is read off the weight shapes; the load into it is strict.

    tokenzoo convert tokenunify checkpoint-399.pth --out tokenunify-100m
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointMismatchError, ConfigError, CorruptFileError, ModelFileNotFoundError

# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1
UPSTREAM_REPO = "ydchen0806/TokenUnify"
UPSTREAM_REVISION = "221674f4c9b87efc730370dcf0443cf0f334c928"


def read_upstream_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """The model weights of an upstream file, ``module.`` prefixes stripped."""
    src = Path(src)
    if not src.is_file():
        raise ModelFileNotFoundError(str(src.parent), src.name)
    if src.suffix == ".safetensors":
        from zoo.hub import read_safetensors

        state = read_safetensors(src)
    else:
        from zoo.pickles import ARGPARSE_NAMESPACE, load_weights_only

        obj = load_weights_only(src, extras=(ARGPARSE_NAMESPACE,))
        if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
            obj = obj["model"]  # training checkpoint; optimizer/scaler/epoch/args are dropped
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CorruptFileError(src.name, "holds neither a state_dict nor a dict with a 'model' state_dict")
        state = obj
    return {re.sub(r"^(module\.)+", "", k): v.contiguous() for k, v in state.items()}


def infer_config(state: dict[str, torch.Tensor], **options: Any):
    """A TokenUnifyConfig that fits the shapes in ``state``; ``options`` override any field."""
    from em_volume.tokenunify import TokenUnifyConfig

    def shape(key):
        if key not in state:
            raise CheckpointMismatchError("tokenunify", "state_dict", missing=[key])
        return tuple(state[key].shape)

    feat = [shape("vit.downsample_layers.0.0.weight")[0]] + [
        shape(f"vit.downsample_layers.{i}.1.weight")[0] for i in (1, 2, 3)
    ]
    depths = [len({k.split(".")[3] for k in state if k.startswith(f"vit.stages.{i}.")}) for i in range(4)]
    a_log = next((state[k] for k in state if k.endswith("mamba.A_log")), None)
    conv = next((state[k] for k in state if k.endswith("mamba.conv1d.weight")), None)
    first_in = next((k for k in state if k.endswith("mamba.in_proj.weight")), None)
    fields: dict[str, Any] = {
        "in_chans": shape("vit.downsample_layers.0.0.weight")[1],
        "out_chans": shape("out.conv.conv.weight")[0],
        "depths": tuple(depths),
        "feat_size": tuple(feat),
        "hidden_size": shape("encoder5.layer.conv1.conv.weight")[0],
        "kernel_size": shape("encoder1.layer.conv1.conv.weight")[2:],
        "next_token_head": any(k.startswith("preciever.") for k in state),
    }
    if a_log is not None:
        fields["d_state"] = a_log.shape[1]
        fields["d_conv"] = conv.shape[-1]
        stage = int(first_in.split(".")[2])
        fields["expand"] = state[first_in].shape[0] // (2 * feat[stage])
    if fields["next_token_head"] and "head_input_size" not in options:
        n_in = shape("preciever.mlp.weight")[1]
        default = TokenUnifyConfig.head_input_size
        if math.prod((s + 7) // 8 for s in default) != n_in:
            raise ConfigError(
                f"the next-token head takes {n_in} features, which does not fit head_input_size {default}; "
                "pass head_input_size=(D, H, W) (the pre-training crop size)"
            )
    if fields["out_chans"] == fields["in_chans"] and "objective" not in options:
        fields["objective"] = "mixture" if fields["next_token_head"] else "random"
    fields.update(options)
    for key in ("depths", "feat_size", "kernel_size", "head_input_size", "crop_size"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return TokenUnifyConfig(**fields)


def convert_checkpoint(arch: str, src: Path, out: Path, **options: Any) -> Path:
    """Convert an upstream TokenUnify checkpoint at ``src`` into a model folder at ``out``.

    ``options`` are TokenUnifyConfig fields that the weights cannot tell (``nslices``,
    ``head_input_size``, ``crop_size``, ``objective``...); a ``name`` and ``license`` go to the card.
    """
    if arch != "tokenunify":
        raise ConfigError(f"em_volume.convert handles arch 'tokenunify', not {arch!r}")
    from em_volume.tokenunify import TokenUnify
    from zoo.cards import make_card
    from zoo.hub import load_state_dict_strict

    name = options.pop("name", Path(out).name)
    state = read_upstream_state_dict(Path(src))
    config = infer_config(state, **options)
    model = TokenUnify(config)
    load_state_dict_strict(model, state, Path(src).name, source=str(src))
    card = make_card(
        name=name,
        arch="tokenunify",
        modality="em_volume",
        license="mit",
        summary=(
            f"TokenUnify converted from upstream checkpoint {Path(src).name} "
            f"(config: {json.dumps(model.config_dict())})."
        ),
        upstream_repo=UPSTREAM_REPO,
        upstream_revision=UPSTREAM_REVISION,
        paper="https://arxiv.org/abs/2405.16847",
        weights=(
            f"converted with `tokenzoo convert tokenunify {Path(src).name}`; "
            "keys unchanged apart from 'module.' prefixes"
        ),
    )
    return model.save_pretrained(Path(out), card=card)
