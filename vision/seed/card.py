"""Model cards for SEED: the released SEED-LLaMA tokenizer (seed-tokenizer-2) and seed-tiny, trained here.

python -m vision.seed.card     # rewrites hub_cards/seed-tokenizer-2/README.md
"""

from __future__ import annotations

from pathlib import Path

from zoo.cards import make_card, write_card

PAPER = "https://arxiv.org/abs/2310.01218"
UPSTREAM = "AILab-CVC/SEED"
UPSTREAM_REVISION = "93b3cf408196735ec4820ad2eb4d9dc4a670003d"
RELEASE_REPO = "AILab-CVC/seed-tokenizer-2"
QUANTIZER_FILE = "seed_quantizer.pt"
VIT_FILE = "eva_vit_g.pth"
VIT_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
UNCLIP_REPO = "stabilityai/stable-diffusion-2-1-unclip"
# counted from SEEDConfig() on the meta device (vision.seed.model.SEED.empty)
PARAMETERS = 1_149_998_528
VIT_PARAMETERS = 985_894_528
TOKENS = "32 causal ids in [0, 8192) per 224x224 image (416 bits)"

LICENSE_BODY = f"""
## License

The tokenizer weights (`{QUANTIZER_FILE}`, `{RELEASE_REPO}`) are released under **Apache-2.0**, as is
upstream's code (`{UPSTREAM}`; its vendored LAVIS/BLIP-2 files carry BSD-3-Clause). Third-party pieces keep
their own terms:
- the EVA ViT-g weights come from Salesforce LAVIS (`{VIT_FILE}`, BLIP-2's release, BSD-3-Clause code); the
  EVA-CLIP weights they derive from have their own terms, check them before redistributing;
- the pixel decoder, `{UNCLIP_REPO}`, is under the **CreativeML Open RAIL++-M** license, with use-based
  restrictions that apply to the images you make with it; tokenzoo neither bundles nor downloads it;
- the SEED-LLaMA language models that read these tokens are under the LLaMA 2 license.
tokenzoo is a clean reimplementation and contains no upstream code.
"""


# The card's Use snippet: tokens and the unCLIP embedding (images need the unCLIP pipeline, shown after it).
USAGE = """import zoo

model = zoo.load(NAME)
images = model.preprocess(model.sample_inputs())  # (B, 3, 224, 224), CLIP-normalised; or paths of your own images
tokens = model.encode(images)  # ids (B, 32)
embedding = model.decode(tokens, output="embedding")  # (B, 1024) unCLIP image embedding
print(tokens.ids.shape, embedding.shape)"""


def seed_card(**fields):
    """A card for a SEED model: the arch, modality, upstream and paper every SEED card shares, plus ``fields``."""
    return make_card(
        arch="seed",
        modality="image",
        upstream_repo=UPSTREAM,
        upstream_revision=UPSTREAM_REVISION,
        paper=PAPER,
        **fields,
    )


def official_card():
    """hub_cards/seed-tokenizer-2: where the release files are and how to convert them (no weights here)."""
    rows = [
        (
            "tokenizer file",
            f"`{QUANTIZER_FILE}` in `{RELEASE_REPO}`: a pickled float32 state_dict of the Q-Former, codebook and "
            "de-tokenizer, without the ViT, with BLIP-2 tensors the tokenizer does not use (ignored and named "
            "when converting)",
        ),
        (
            "ViT file",
            f"`{VIT_FILE}` (LAVIS, BLIP-2): a bare float16 EVA ViT-g state_dict; SEED runs its first 39 blocks "
            "(the converter drops the rest and names them)",
        ),
        ("decoder", f"`{UNCLIP_REPO}` (diffusers `StableUnCLIPImg2ImgPipeline`), attached with `attach_unclip`"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = f"""
## Release

| | |
|---|---|
{table}

## Decoding to pixels

```python
from diffusers import StableUnCLIPImg2ImgPipeline

model.attach_unclip(StableUnCLIPImg2ImgPipeline.from_pretrained("{UNCLIP_REPO}"))
images = model.decode(tokens, seed=0)  # (B, 3, 768, 768) in [-1, 1]: 20 steps, guidance 10, noise level 0
```

Preprocessing is upstream's: a 224 px squash with PIL bicubic, then CLIP's mean and std.

## Parity with upstream

Token ids equal to upstream's on the public parity fixture (upstream's code at a random tiny configuration: 28 px,
ViT width 32, Q-Former width 48, the release's 8192 x 32 codebook); the 1024-d generation embedding within 2.4e-06
(max abs, scale 3.1; tolerance 5e-5) and every stored intermediate within the fixture's tolerances; the 224 px
preprocessing within 1e-6 (tests/test_seed_parity.py).

## Size and cost

{PARAMETERS:,} parameters ({VIT_PARAMETERS:,} of them in the 39-block EVA ViT-g, about 0.5 TFLOP per image):
encode on a GPU, where the model runs under bf16 autocast, or expect seconds per image on a CPU.
{LICENSE_BODY}"""
    return seed_card(
        name="seed-tokenizer-2",
        license="apache-2.0",
        summary=(
            "The SEED-LLaMA image tokenizer (SEED-2): EVA ViT-g features, a causal Q-Former with 32 queries and a "
            "8192 x 32 codebook give 32 left-to-right ids per image; a de-tokenizer maps the ids to a 1024-d "
            "embedding that Stable Diffusion 2.1 unCLIP turns back into an image."
        ),
        tokens=TOKENS,
        weights=(
            f"Released by Tencent ARC as {QUANTIZER_FILE} ({RELEASE_REPO}) plus the LAVIS EVA ViT-g weights "
            f"({VIT_FILE}); converted by tokenzoo (vision.seed.convert); no weights are bundled."
        ),
        usage=USAGE,
        body=body,
        converter="seed-tokenizer-2",
        converter_options={},
        upstream_files=[
            {"repo": RELEASE_REPO, "filename": QUANTIZER_FILE, "revision": "main"},
            {"url": VIT_URL, "filename": VIT_FILE, "option": "vit"},
        ],
        decoder_repo=UNCLIP_REPO,
    )


def release_card(name: str, source: str):
    """The card of a folder converted from the release files."""
    return seed_card(
        name=name,
        license="apache-2.0",
        summary="The SEED-LLaMA image tokenizer, converted from the release files by tokenzoo.",
        tokens=TOKENS,
        weights=f"converted by vision/seed/convert.py from {source} and the LAVIS EVA ViT-g weights",
        body=LICENSE_BODY,
    )


def tiny_card(record: dict):
    """seed-tiny's card: how it was trained and what it does, with the figures ``train_tiny.evaluate`` measured."""
    f = record["figures"]
    s1, s2, s3 = record["stage1"], record["stage2"], record["stage3"]
    held = f"{f['held_out_images']} held-out 32x32 scenes (pictures never seen in training)"
    recon = f"the first {f['reconstructed_images']} of them drawn at 16 px with 10 DDIM steps, guidance 3, seed 0"
    metrics = [
        {
            "name": "caption retrieval top-1 from tokens",
            "type": "accuracy",
            "value": f["caption_retrieval_top1"],
            "dataset": "seed-tiny held-out scenes",
            "protocol": f"{held}; the 32 ids -> reconstructed causal embeddings -> last query, nearest of all 270 "
            f"captions by the stage-I caption encoder (chance {f['caption_retrieval_chance']})",
        },
        {
            "name": "codebook usage",
            "type": "codebook_usage",
            "value": f["codebook_usage"],
            "dataset": "seed-tiny held-out scenes",
            "protocol": f"{held}; distinct ids / 512",
        },
        {
            "name": "reconstruction embedding cosine",
            "type": "cosine_similarity",
            "value": f["embedding_cosine"],
            "dataset": "seed-tiny held-out scenes",
            "protocol": f"{recon}; cosine between the generation embeddings of each picture and of its drawing, "
            f"re-encoded (unrelated pictures: {f['embedding_cosine_unrelated']})",
        },
        {
            "name": "caption retrieval top-1 from reconstructions",
            "type": "accuracy",
            "value": f["reconstruction_caption_retrieval_top1"],
            "dataset": "seed-tiny held-out scenes",
            "protocol": f"{recon}; the drawings encoded again and their captions retrieved as above",
        },
    ]
    rows = [
        ("caption retrieval from the 32 tokens (top-1 of 270 captions)", f"{f['caption_retrieval_top1']}"),
        ("chance", f"{f['caption_retrieval_chance']}"),
        ("codebook usage on held-out scenes", f"{f['codebook_usage']} of 512 codes"),
        ("generation-embedding cosine, picture vs its reconstruction", f"{f['embedding_cosine']}"),
        ("the same for unrelated pictures", f"{f['embedding_cosine_unrelated']}"),
        ("caption retrieval from the reconstructions", f"{f['reconstruction_caption_retrieval_top1']}"),
        ("PSNR of the reconstructions (for reference: SEED tokens are semantic)", f"{f['psnr']} dB"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = f"""
## What it shows

| figure | value |
|---|---|
{table}

Measured on {held}; reconstructions: {recon}. `tests/test_seed_tiny.py` measures them again.

## Training

Trained here on CPU ({record["threads"]} threads) by

    {record["command"]}

on {record["train_images"]} captioned scenes ("two red circles at the top": count x colour x shape x place, 270
captions, `vision/seed/data.py`).
- Stage I, {s1["steps"]} steps of batch {s1["batch"]} ({s1["seconds"]} s): the ViT, the causal Q-Former and a tiny
  caption encoder learn image-text contrast from the ViT's CLS token and from the last causal query, as SEED's
  first stage does (SEED keeps a pretrained EVA-CLIP ViT frozen; none is available offline, so this one is trained).
- Stage II, {s2["steps"]} steps of batch {s2["batch"]} ({s2["seconds"]} s): ViT and Q-Former frozen; SEED's tokenizer
  loss (VQ, causal-embedding reconstruction, generation embedding regressed onto the stage-I image embedding);
  {s2["code_restarts"]} unused codes restarted on recent inputs.
- Stage III, {s3["steps"]} steps of batch {s3["batch"]} ({s3["seconds"]} s): the pixel decoder, a diffusers
  UNet2DModel conditioned on the generation embedding of the tokens (DDPM loss, 10% null condition).

Peak learning rate 1e-3 with warm-up and cosine decay in every stage; seeds fixed. The caption encoder and the
contrastive heads are kept in `caption_heads.safetensors` (only for measuring retrieval); the training record
is in `training.json`. This is a demonstration model: 32 px scenes, 512 codes, a 2-layer Q-Former.
"""
    return seed_card(
        name="seed-tiny",
        license="apache-2.0",
        summary="A tiny SEED (32 px, 32 causal tokens of 512 ids, a tiny UNet pixel decoder) trained here, for "
        "tests and demos.",
        tokens="32 causal ids in [0, 512) per 32x32 image",
        weights="trained in tokenzoo by vision/seed/train_tiny.py (no upstream weights)",
        metrics=metrics,
        body=body,
    )


def write_official_card(root: Path = Path("hub_cards")) -> Path:
    return write_card(root, "seed-tokenizer-2", official_card())


if __name__ == "__main__":
    write_official_card()
