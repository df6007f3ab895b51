"""Model cards for FlexTok: the tiny model trained here and the official EPFL-VILAB checkpoints.

python -m vision.flextok.card     # rewrites the README.md of every official card in hub_cards/
"""

from __future__ import annotations

from pathlib import Path

from vision.flextok.config import LICENSE_NOTE
from zoo.cards import make_card, write_card

PAPER = "https://arxiv.org/abs/2502.13967"
UPSTREAM = "apple/ml-flextok"
UPSTREAM_REVISION = "87d00cc8babf4a25ffce0f3f0c4d8b529d3d6abf"

# Official tokenizers: card name -> (Hub repo, encoder depth, decoder depth, training data).
OFFICIAL = {
    "flextok-d12-d12-in1k": ("EPFL-VILAB/flextok_d12_d12_in1k", 12, 12, "ImageNet-1k"),
    "flextok-d18-d18-in1k": ("EPFL-VILAB/flextok_d18_d18_in1k", 18, 18, "ImageNet-1k"),
    "flextok-d18-d28-in1k": ("EPFL-VILAB/flextok_d18_d28_in1k", 18, 28, "ImageNet-1k"),
    "flextok-d18-d28-dfn": ("EPFL-VILAB/flextok_d18_d28_dfn", 18, 28, "DFN (web image-text pairs)"),
}
# Standalone VAEs (diffusers AutoencoderKL, latent channels 4/8/16); FlexTok tokenizers embed the c16 one.
OFFICIAL_VAES = {
    "flextok-vae-c4": ("EPFL-VILAB/flextok_vae_c4", 4),
    "flextok-vae-c8": ("EPFL-VILAB/flextok_vae_c8", 8),
    "flextok-vae-c16": ("EPFL-VILAB/flextok_vae_c16", 16),
}

LICENSE_BODY = f"""
## License

The weights are Apple's, under the **Apple Machine Learning Research Model License** (`apple-amlr`):
research purposes only, no commercial use; derivatives are limited to research; redistribution must include
the agreement. {LICENSE_NOTE} Upstream code (apple/ml-flextok) is under Apple's non-commercial Sample Code
License; tokenzoo does not include it (this is a clean reimplementation).
"""


def _count(model_class, config) -> int:
    import torch

    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def tokenizer_size(enc: int, dec: int) -> str:
    """Parameters of a released FlexTok (width 64 x depth, 64-wide heads, the c16 VAE), counted on the meta device."""
    from vision.flextok.config import FlexTokConfig
    from vision.flextok.model import FlexTok

    config = FlexTokConfig(encoder_dim=64 * enc, encoder_depth=enc, decoder_dim=64 * dec, decoder_depth=dec)
    return f"{_count(FlexTok, config) / 1e9:.2f} B parameters (counted here; the VAE included)"


def _fixture():
    from safetensors.torch import load_file

    from vision.flextok.convert import load_upstream
    from zoo.parity import parity_root

    folder = parity_root() / "flextok"
    if not (folder / "config.json").is_file():
        return None, None, None
    return folder, load_upstream(folder / "weights.safetensors"), load_file(str(folder / "io.safetensors"))


def measured_parity() -> str:
    """Token ids against upstream's on the FlexTok parity fixture, measured now."""
    import json

    folder, model, io = _fixture()
    if folder is None:
        return "not measured (no parity fixture at hand when this card was written)"
    ids = model.encode(io["images"]).ids
    equal, total = int((ids == io["token_ids"]).sum()), io["token_ids"].numel()
    upstream = json.loads((folder / "config.json").read_text())["upstream_config"]
    depths = upstream["encoder"]["module_dict"]["enc_transformer"].get("depth", "?")
    return (
        f"{equal} of {total} token ids equal to upstream's on the public parity fixture (a random model with "
        f"encoder depth {depths}, {io['images'].shape[0]} images), loaded from the fixture in the repo layout "
        "EPFL-VILAB publishes (tests/test_flextok_hub.py)"
    )


def vae_parity() -> str:
    """The VAE's latents against upstream's on the FlexTok parity fixture (its VAE is this architecture)."""
    import torch

    folder, model, io = _fixture()
    if folder is None:
        return "not measured (no parity fixture at hand when this card was written)"
    with torch.no_grad():
        latents = model.vae.encode(io["images"]).latent_dist.mode() * model.config.vae_scaling_factor
    diff = (latents - io["vae_latents"]).abs().max().item()
    return (
        f"Latents within {diff:.1e} (max abs) of upstream's on the public parity fixture (a random VAE of this "
        f"architecture with {latents.shape[1]} latent channels; tolerance 1e-5), also loaded from the diffusers "
        "folder layout EPFL-VILAB publishes (tests/test_flextok_hub.py)"
    )


def vae_size(channels: int) -> str:
    from vision.flextok.vae import FlexTokVAE, FlexTokVAEConfig

    return f"{_count(FlexTokVAE, FlexTokVAEConfig(latent_channels=channels)) / 1e6:.1f} M parameters (counted here)"


def official_card(name: str):
    repo, enc, dec, data = OFFICIAL[name]
    summary = (
        f"FlexTok d{enc}-d{dec} trained on {data}: a 1-D tokenizer that turns a 256x256 image into 1 to 256 ordered "
        f"tokens (FSQ, 64,000 ids), coarse to fine, and decodes any prefix with a rectified-flow decoder. "
        f"Encoder depth {enc}, decoder depth {dec}, width 64 x depth; 16-channel VAE."
    )
    body = (
        "\n## Loading\n\n`zoo.load(NAME)` fetches the upstream repo as published (config.json + model.safetensors with "
        "its metadata) and builds the model through tokenzoo's allowlisted config parser "
        "(`vision/flextok/convert.py`); nothing from the config is instantiated. A downloaded folder loads the same "
        "way (`zoo.load('local-dir:PATH')`), or converts to a zoo folder with "
        "`tokenzoo convert flextok PATH --out DIR`.\n\nDecoding on CPU is slow at this size (25 steps x 2 CFG "
        "passes); use a GPU.\n"
        f"\n## Size\n\n{tokenizer_size(enc, dec)}.\n\n## Parity with upstream\n\n{measured_parity()}.\n" + LICENSE_BODY
    ).replace("NAME", repr(name))
    return published_card(name, "flextok", repo, "upstream", summary, body)


def vae_card(name: str):
    repo, channels = OFFICIAL_VAES[name]
    summary = (
        f"FlexTok's {channels}-channel VAE (SDXL-VAE architecture, f8), a diffusers AutoencoderKL. It is the "
        "'Stage 0' autoencoder; the FlexTok tokenizers carry the 16-channel one inside their own checkpoint."
    )
    body = (
        "\n## Loading\n\nThe repo is a diffusers folder (config.json + diffusion_pytorch_model.safetensors), "
        f"loaded as published: `zoo.load({name!r})` reads the structural fields of its config.json (refusing any "
        "it does not implement), builds the AutoencoderKL and loads the weights strictly. `encode` returns the "
        "posterior mode as continuous tokens, embeddings (B, h*w, C) in row-major order; `decode` inverts it.\n"
        f"\n## Size\n\n{vae_size(channels)}.\n\n## Parity with upstream\n\n{vae_parity()}.\n" + LICENSE_BODY
    )
    return published_card(name, "flextok-vae", repo, "diffusers", summary, body)


def published_card(name: str, arch: str, repo: str, layout: str, summary: str, body: str):
    """A card for weights EPFL-VILAB publishes on the Hub, loaded from its repo as is."""
    return make_card(
        name=name,
        arch=arch,
        modality="image",
        license="apple-amlr",
        summary=summary,
        upstream_repo=UPSTREAM,
        upstream_revision=UPSTREAM_REVISION,
        paper=PAPER,
        hub_repo=repo,
        revision="main",
        weights=f"Published by EPFL-VILAB at https://huggingface.co/{repo} ({layout} layout, loaded as is).",
        body=body,
    )


def tiny_card(record: dict):
    s = record["sampler"]
    guidance = "no guidance" if s["guidance"] == 1 else f"{'APG' if s['apg'] else 'plain CFG'} {s['guidance']}"
    decoding = f"{s['steps']} Euler steps, {guidance}"
    metrics = []
    for row in record["metrics"]:
        if row["k"] == "vae":
            continue
        protocol = (
            f"{record['held_out_images']} held-out 32x32 images (procedural scenes + crops of scikit-image samples "
            f"never seen in training), first k tokens, {decoding}, seed 0, images in [-1, 1]"
        )
        for metric in ("psnr", "ssim"):
            metrics.append(
                {
                    "name": f"{metric.upper()} k={row['k']}",
                    "type": metric,
                    "value": row[metric],
                    "dataset": "flextok-tiny held-out",
                    "protocol": protocol,
                }
            )
    vae_psnr = next((r["psnr"] for r in record["metrics"] if r["k"] == "vae"), "n/a")
    rows = "\n".join(f"| {r['k']} | {r['psnr']} | {r.get('ssim', '')} |" for r in record["metrics"])
    vae, tok = record["vae"], record["tokenizer"]
    body = f"""
## Coarse to fine

| tokens k | PSNR (dB) | SSIM |
|---|---|---|
{rows}

Decoded with {decoding}, seed 0. (`vae` = the VAE alone, the ceiling for any k.)

## Training

Trained here on CPU by `python -m vision.flextok.train_tiny --vae-steps {vae["steps"]} --tok-steps {tok["steps"]} \
--seed {record["seed"]}` ({record["train_images"]} images: procedural scenes of shapes, gradients and stripes, plus
random crops and flips of the images scikit-image ships). Stage 1, the VAE: {vae["steps"]} AdamW steps of batch
{vae["batch"]}, L1 + 1e-4 KL, {vae["seconds"]} s; latents scaled by {record["vae_scaling_factor"]} (unit std).
Stage 2, FlexTok: {tok["steps"]} steps of batch {tok["batch"]}, {tok["seconds"]} s, rectified-flow loss with uniform
nested dropout and 20% null-condition dropout. Both stages: peak learning rate 1e-3, cosine decay, one CPU thread.
**REPA is omitted** (no DINOv2 weights offline, and it only speeds up training).

This is a demonstration model, far from the paper's quality: 32 px images and 32 tokens. The VAE alone reconstructs
at {vae_psnr} dB PSNR, the ceiling for every k. What the model shows is FlexTok's ordering: quality rises with every
doubling of k. From one or two tokens the rectified-flow decoder draws a plausible image whose colours are often
off; from eight on, colours and layout follow the input. The training record is in `training.json`.
"""
    return make_card(
        name="flextok-tiny",
        arch="flextok",
        modality="image",
        license="apache-2.0",
        summary="A tiny FlexTok (32 px, 32 tokens of 64,000 ids) trained here, for tests and demos.",
        upstream_repo=UPSTREAM,
        upstream_revision=UPSTREAM_REVISION,
        paper=PAPER,
        weights="trained in tokenzoo by vision/flextok/train_tiny.py (no upstream weights)",
        metrics=metrics,
        body=body,
    )


def write_official_cards(root: Path = Path("hub_cards")) -> None:
    for name in OFFICIAL:
        write_card(root, name, official_card(name))
    for name in OFFICIAL_VAES:
        write_card(root, name, vae_card(name))


if __name__ == "__main__":
    write_official_cards()
