"""Cards for the four released S3Tokenizer checkpoints (hub_cards/s3tokenizer-{v1,v1_25hz,v2,v3}/README.md).

The releases are ONNX graphs that tokenzoo does not redistribute; each card holds the recipe
``zoo.load(name)`` follows (zoo.official): the Hugging Face repo and file, its SHA-256 exactly as
upstream's downloader records it (s3tokenizer 0.3.0, ``_SHA256S``), the converter and its options. It
also states the size (counted here) and the parity with upstream measured on the tiny parity fixture.
Regenerate with ``python -m audio.s3tokenizer.official_cards`` (the parity figures need $TOKENZOO_PARITY_DIR).
"""

from __future__ import annotations

from pathlib import Path

from zoo.cards import make_card, write_card

ROOT = Path(__file__).resolve().parents[2]
RELEASES = {
    "v1": dict(
        upstream_name="speech_tokenizer_v1",
        modelscope="iic/cosyvoice-300m",
        hf_repo="FunAudioLLM/CosyVoice-300M",
        file="speech_tokenizer_v1.onnx",
        sha256="23b5a723ed9143aebfd9ffda14ac4c21231f31c35ef837b6a13bb9e5488abb1e",
        paper="https://arxiv.org/abs/2407.05407",
        layers=6,
        tokens="VQ id in [0, 4096), 50 per second of 16 kHz speech",
        summary="S3Tokenizer v1 (CosyVoice 1): a Whisper-style encoder cut from SenseVoice-Large with a VQ of 4096 "
        "codes at 50 tokens/s (600 bits/s).",
    ),
    "v1_25hz": dict(
        upstream_name="speech_tokenizer_v1_25hz",
        modelscope="iic/CosyVoice-300M-25Hz",
        hf_repo="FunAudioLLM/CosyVoice-300M-25Hz",
        file="speech_tokenizer_v1.onnx",
        sha256="56285ddd4a83e883ee0cb9f8d69c1089b53a94b1f78ff7e4a0224a27eb4cb486",
        paper="https://arxiv.org/abs/2407.05407",
        layers=6,
        tokens="VQ id in [0, 4096), 25 per second of 16 kHz speech",
        summary="S3Tokenizer v1 at 25 Hz (CosyVoice-300M-25Hz): v1's encoder with a stride-2 first convolution, "
        "VQ 4096, 25 tokens/s (300 bits/s). Its release file has the same name as v1's.",
    ),
    "v2": dict(
        upstream_name="speech_tokenizer_v2_25hz",
        modelscope="iic/CosyVoice2-0.5B",
        hf_repo="FunAudioLLM/CosyVoice2-0.5B",
        file="speech_tokenizer_v2.onnx",
        sha256="d43342aa12163a80bf07bffb94c9de2e120a8df2f9917cd2f642e7f4219c6f71",
        paper="https://arxiv.org/abs/2412.10117",
        layers=6,
        tokens="FSQ id in [0, 6561), 25 per second of 16 kHz speech",
        summary="S3Tokenizer v2 (CosyVoice 2): rotary positions, FSMN memory blocks and FSQ with 8 dimensions of "
        "3 levels (6561 ids) at 25 tokens/s (317 bits/s).",
    ),
    "v3": dict(
        upstream_name="speech_tokenizer_v3_25hz",
        modelscope="FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
        hf_repo="FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
        file="speech_tokenizer_v3.onnx",
        sha256="23236a74175dbdda47afc66dbadd5bcb41303c467a57c261cb8539ad9db9208d",
        paper="https://arxiv.org/abs/2505.17589",
        layers=12,
        tokens="FSQ id in [0, 6561), 25 per second of 16 kHz speech",
        summary="S3Tokenizer v3 (Fun-CosyVoice 3): v2's architecture with 12 blocks, FSQ 6561 ids at 25 tokens/s.",
    ),
}


def parameter_count(variant: str, layers: int) -> tuple[int, int]:
    """(parameters, buffers) of the released size of ``variant``, counted on the meta device."""
    import torch

    from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig

    fsq = variant in ("v2", "v3")
    config = S3TokenizerConfig(variant=variant, n_audio_layer=layers, n_codebook_size=6561 if fsq else 4096)
    with torch.device("meta"):
        model = S3Tokenizer(config)
    return sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())


def measured_parity(variant: str) -> str:
    """Token ids against upstream s3tokenizer 0.3.0 on the parity fixture of ``variant``, counted now."""
    import json

    import torch
    from safetensors.torch import load_file

    from audio.s3tokenizer.convert import upstream_fixture_model
    from zoo.parity import parity_root

    folder = parity_root() / "s3tokenizer" / variant
    if not (folder / "config.json").is_file():
        return "not measured (no parity fixture at hand when this card was written)"
    info = json.loads((folder / "config.json").read_text())["config"]
    model, io = upstream_fixture_model(folder), load_file(str(folder / "io.safetensors"))
    clips = sorted({k.split(".")[0] for k in io if k.startswith("clip") and k.endswith(".codes")})
    equal = total = 0
    for clip in clips:
        mel = io[f"{clip}.mel"]
        ids, _ = model.quantize(mel[None], torch.tensor([mel.shape[-1]]))
        equal += int((ids[0] == io[f"{clip}.codes"]).sum())
        total += io[f"{clip}.codes"].numel()
    return (
        f"{equal} of {total} token ids equal to upstream s3tokenizer 0.3.0's on the public parity fixture "
        f"({len(clips)} clips; a random {info['n_audio_layer']}-block, {info['n_audio_state']}-wide {variant} "
        "model), and the same ids after converting that model from an ONNX graph exported in the release's "
        "layout (tests/test_official_layouts.py)"
    )


def write_cards(root: Path = ROOT / "hub_cards") -> list[Path]:
    paths = []
    for variant, r in RELEASES.items():
        name = f"s3tokenizer-{variant}"
        params, buffers = parameter_count(variant, r["layers"])
        body = (
            f"\n## Release\n\n| | |\n|---|---|\n| upstream name | `{r['upstream_name']}` |\n"
            f"| file | `{r['file']}` in `{r['hf_repo']}` / ModelScope `{r['modelscope']}` |\n"
            f"| sha256 (as s3tokenizer 0.3.0 records it) | `{r['sha256']}` |\n"
            f"| blocks | {r['layers']} x 1280 wide, 20 heads |\n"
            f"| size | {params / 1e6:.2f} M parameters (+{buffers / 1e6:.2f} M in buffers), counted here |\n\n"
            f"## Parity with upstream\n\n{measured_parity(variant)}.\n\n"
            "The variant is recorded in config.json, so a 25 Hz file can never load as a 50 Hz model (v1 and "
            "v1_25hz ship under the same file name). The head count (20) is not visible in the graph's weights; "
            "the card passes it to the converter.\n\n"
            "Decoding: this is an encoder only. TouchTTS / CosyVoice turn these tokens back into speech.\n\n"
            "License: the CosyVoice code and the S3Tokenizer package are Apache-2.0 and the model pages list "
            "Apache-2.0; check the model repository before redistributing converted weights.\n"
        )
        card = make_card(
            name=name,
            arch="s3tokenizer",
            modality="audio",
            license="apache-2.0",
            summary=r["summary"],
            tokens=r["tokens"],
            upstream_repo="xingchensong/S3Tokenizer",
            upstream_revision="PyPI s3tokenizer 0.3.0",
            paper=r["paper"],
            weights=f"Converted by tokenzoo (audio.s3tokenizer.convert) from the released ONNX graph {r['file']} "
            f"(sha256 {r['sha256']}); no weights are bundled.",
            converter=name,
            converter_options={"variant": variant, "n_audio_head": 20},
            upstream_files=[{"repo": r["hf_repo"], "filename": r["file"], "revision": "main", "sha256": r["sha256"]}],
            body=body,
        )
        paths.append(write_card(root, name, card))
    return paths


if __name__ == "__main__":
    for path in write_cards():
        print(path)
