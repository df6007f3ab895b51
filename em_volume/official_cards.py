"""Cards for the TokenUnify checkpoints the authors publish in the Hugging Face repo cyd0806/TokenUnify.

Fine-tuned segmentation networks sit at the repo root, pre-trained ones under ``Pretrained_weights/``, one
file per scale (100M, 200M, 500M, 1B). Their exact file names could not be read offline, so each card picks
its file by a documented pattern (the scale tag, matched case-insensitively among the weights files of that
folder; exactly one must match) and the first download pins the file name, commit and sha256 (zoo.official).
Each card states the size (counted here for the fine-tuned scales) and the parity with upstream measured on
the tiny parity fixtures. Regenerate with ``python -m em_volume.official_cards``.
"""

from __future__ import annotations

from pathlib import Path

from zoo.cards import make_card, write_card

ROOT = Path(__file__).resolve().parent.parent
HF_REPO = "cyd0806/TokenUnify"
UPSTREAM_REPO = "ydchen0806/TokenUnify"
UPSTREAM_REVISION = "221674f4c9b87efc730370dcf0443cf0f334c928"
PAPER = "https://arxiv.org/abs/2405.16847"
PRETRAINED_FOLDER = "Pretrained_weights"
# card suffix -> (the scale's name in TokenUnifyConfig.SCALES, the tag its file name carries)
RELEASES = {"100m": ("small", "100M"), "200m": ("mid", "200M"), "500m": ("large", "500M"), "1b": ("huge", "1B")}

PRETRAINED_USAGE = """import zoo

model = zoo.load(NAME)
volume = model.sample_inputs()[0]  # a bundled EM volume; or your own (D, H, W) array or .npz/.h5/.tif file
tokens = model.encode(volume)  # embeddings (1, N, C): one token per voxel of the deepest Mamba stage
print(tokens.embeddings.shape, tokens.meta["grid"])"""


def parameter_count(scale: str) -> int:
    """Parameters of the fine-tuned network at ``scale`` (upstream's scale factory), counted on the meta device."""
    import torch

    from em_volume.tokenunify import TokenUnify, TokenUnifyConfig

    with torch.device("meta"):
        model = TokenUnify(TokenUnifyConfig.scale(scale))
    return sum(p.numel() for p in model.parameters())


def measured_parity() -> str:
    """Our network against upstream's on the parity fixture (``tokenunify/model``), measured now."""
    import json

    import torch
    from safetensors.torch import load_file

    from em_volume.convert import infer_config
    from em_volume.tokenunify import TokenUnify
    from zoo.parity import parity_root

    folder = parity_root() / "tokenunify" / "model"
    if not (folder / "config.json").is_file():
        return "not measured (no parity fixture at hand when this card was written)"
    kwargs = json.loads((folder / "config.json").read_text())["constructor"]["kwargs"]
    state, io = load_file(str(folder / "weights.safetensors")), load_file(str(folder / "io.safetensors"))
    model = TokenUnify(infer_config(state))
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        diff = (model.eval()(io["input"]) - io["output"]).abs().max().item()
    return (
        f"Affinities within {diff:.1e} (max abs) of upstream's on the public parity fixture (a random network "
        f"with feat_size {kwargs['feat_size']}, depths {kwargs['depths']}; tolerance 1e-4), also after "
        "converting it from a training checkpoint laid out as the authors save them "
        "(tests/test_official_layouts.py)"
    )


def card(suffix: str, pretrained: bool, parity: str):
    scale, tag = RELEASES[suffix]
    name = f"tokenunify-pretrained-{suffix}" if pretrained else f"tokenunify-{suffix}"
    where = f"`{PRETRAINED_FOLDER}/`" if pretrained else "the repo root"
    file = {"repo": HF_REPO, "pattern": f"*{tag.lower()}*", "revision": "main"}
    if pretrained:
        file = {"repo": HF_REPO, "folder": PRETRAINED_FOLDER, "pattern": f"*{tag.lower()}*", "revision": "main"}
    params = parameter_count(scale)
    if pretrained:
        summary = (
            f"TokenUnify-{tag}, pre-trained (not fine-tuned) by the authors on large EM volumes with mixture token "
            "prediction: the encoder whose tokens the paper studies. Weights are converted on first load."
        )
        size = (
            f"About {params / 1e6:.0f} M parameters if it has the `{scale}` scale's widths (the fine-tuning "
            "factory's, counted here). The exact architecture (widths, depths, decoder kernel, next-token head) is "
            "read off the weights on conversion: the pre-training scripts use other defaults than the factory."
        )
    else:
        summary = (
            f"TokenUnify-{tag}: the authors' Mamba + UNETR network fine-tuned for 3-channel affinities on EM neuron "
            f"segmentation (`TokenUnifyConfig.scale({scale!r})`). Weights are converted on first load."
        )
        size = f"{params / 1e6:.1f} M parameters (upstream's `{scale}` scale factory, counted here)."
    body = (
        f"\n## Which file\n\nThe authors publish one file per scale in {where} of `{HF_REPO}`. Its exact name could "
        f"not be read offline, so the card picks the weights file of that folder whose name contains `{tag}` "
        "(case-insensitive; exactly one must match, else the error lists the candidates), and the first download "
        "pins the file's name, commit and sha256. Upstream training checkpoints (`model`, `optimizer`, `epoch`, "
        "`scaler`, `args` with `module.` prefixes) are read with `torch.load(weights_only=True)`, allowing "
        "`argparse.Namespace` only.\n\n"
        f"## Size\n\n{size}\n\n## Parity with upstream\n\n{parity}.\n\n## Configuration\n\n"
        "Inputs are (B, 1, D, H, W) EM volumes in [0, 1], crops 16x160x160 (D, H, W multiples of 16, "
        "(D/16)(H/16)(W/16) divisible by 5); `segment` slides the crop over volumes of any size.\n"
    )
    return name, make_card(
        name=name,
        arch="tokenunify",
        modality="em_volume",
        license="mit",
        summary=summary,
        tokens="continuous, one embedding per 16x16x16 voxels (deepest Mamba stage)",
        upstream_repo=UPSTREAM_REPO,
        upstream_revision=UPSTREAM_REVISION,
        paper=PAPER,
        weights=f"Published by the authors in {HF_REPO} ({where}); converted by tokenzoo (em_volume.convert), "
        "keys unchanged apart from `module.` prefixes.",
        converter="tokenunify",
        converter_options={},
        upstream_files=[file],
        usage=PRETRAINED_USAGE if pretrained else None,
        body=body,
    )


def write_cards(root: Path = ROOT / "hub_cards") -> list[Path]:
    parity = measured_parity()
    cards = [card(suffix, pretrained, parity) for suffix in RELEASES for pretrained in (False, True)]
    return [write_card(root, name, text) for name, text in cards]


if __name__ == "__main__":
    for path in write_cards():
        print(path)
