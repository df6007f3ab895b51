"""The one table of family strings: architectures, converters, demos and recognised upstream layouts.

A leaf of the core (it imports nothing from zoo): ``zoo.registry`` loads models through it and
``zoo.official`` finds converters in it. Each target is a ``"module:name"`` string imported only when
used, so ``import zoo`` pulls in no family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """Every string that ties one family to the tools, in one record.

    Args:
        name: the family's name (also its demo's output folder, ``out/<name>/``).
        archs: architecture -> ``"module:Class"``, a ZooModel subclass whose ``arch`` is the same name.
        converter: ``"module:function"`` with signature ``convert_checkpoint(arch, src: Path, out: Path,
            **options) -> Path``, writing a zoo model folder from an upstream checkpoint.
        converts: the names ``tokenzoo convert NAME`` accepts for that converter (archs, variants).
        demo: ``"module:function"`` with signature ``run(out_dir: Path) -> list[dict]``: the family's
            rows of the demo table (``zoo.tools.demo.COLUMNS``) on its bundled models and samples.
        upstream_targets: ``_target_`` prefix -> arch, for upstream Hub layouts recognised without an
            ``arch=`` hint (as upstream's own ``from_pretrained`` needs none); the family parses such a
            config through an allowlist, never builds what it names.
    """

    name: str
    archs: Mapping[str, str]
    converter: str | None = None
    converts: tuple[str, ...] = ()
    demo: str | None = None
    upstream_targets: Mapping[str, str] = field(default_factory=dict)


# The one table of family strings. Each target is imported only when it is used, so ``import zoo``
# pulls in no family; tests/test_layout.py keeps every target importable and every class's
# ``arch`` equal to its key.
FAMILIES: tuple[Family, ...] = (
    Family(
        "text",
        archs={
            "byte-tokenizer": "zoo.text.tokenizers:ByteTokenizer",
            "hf-tokenizer": "zoo.text.tokenizers:HFTokenizer",
            "sentencepiece": "zoo.text.tokenizers:SentencePieceTokenizer",
            "tiktoken": "zoo.text.tokenizers:TiktokenTokenizer",
        },
        demo="zoo.text.demo:run",
    ),
    Family(
        "flextok",
        archs={"flextok": "vision.flextok.model:FlexTok", "flextok-vae": "vision.flextok.vae:FlexTokVAE"},
        converter="vision.flextok.convert:convert_checkpoint",
        converts=("flextok",),
        demo="vision.flextok.demo:run",
        upstream_targets={"flextok.flextok_wrapper.": "flextok"},
    ),
    Family(
        "seed",
        archs={"seed": "vision.seed.model:SEED"},
        converter="vision.seed.convert:convert_checkpoint",
        converts=("seed", "seed-tokenizer-2"),  # seed_quantizer.pt + --vit eva_vit_g.pth
        demo="vision.seed.demo:run",
    ),
    Family(
        "video_pose",
        archs={
            "mixste": "video_pose.mixste:MixSTE",
            "hot-mixste": "video_pose.hot:HoTMixSTE",
            "tpc-mixste": "video_pose.hot:TPCMixSTE",
            "motionbert": "video_pose.motionbert:MotionBERT",
            "hot-motionbert": "video_pose.motionbert:HoTMotionBERT",
        },
        converter="video_pose.convert:convert_checkpoint",
        converts=("mixste", "hot-mixste", "tpc-mixste", "motionbert", "hot-motionbert"),
        demo="video_pose.demo:run",
    ),
    Family(
        "s3tokenizer",
        archs={"s3tokenizer": "audio.s3tokenizer.model:S3Tokenizer"},
        converter="audio.s3tokenizer.convert:convert_checkpoint",
        # the variant is read from the file or its name, or named here
        converts=("s3tokenizer", "s3tokenizer-v1", "s3tokenizer-v1_25hz", "s3tokenizer-v2", "s3tokenizer-v3"),
        demo="audio.s3tokenizer.demo:run",
    ),
    Family(
        "touchtts",
        archs={"touchtts": "audio.touchtts.model:TouchTTS"},
        demo="audio.touchtts.demo:run",
    ),
    Family(
        "tokenunify",
        archs={"tokenunify": "em_volume.tokenunify:TokenUnify"},
        converter="em_volume.convert:convert_checkpoint",
        converts=("tokenunify",),
        demo="em_volume.demo:run",
    ),
)

# Views of the table, by the key each tool looks up.
ARCHITECTURES: dict[str, str] = {arch: target for f in FAMILIES for arch, target in f.archs.items()}
CONVERTERS: dict[str, str] = {name: f.converter for f in FAMILIES if f.converter for name in f.converts}
DEMOS: dict[str, str] = {f.name: f.demo for f in FAMILIES if f.demo}
# A config.json whose ``_target_`` (at the top, or under ``"config"`` as PyTorchModelHubMixin nests it)
# starts with a prefix here is that arch's upstream layout.
UPSTREAM_TARGETS: dict[str, str] = {prefix: arch for f in FAMILIES for prefix, arch in f.upstream_targets.items()}
