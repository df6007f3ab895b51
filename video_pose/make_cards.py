"""Write the README-only cards of the official HoT / MixSTE / MotionBERT checkpoints into hub_cards/.

    python -m video_pose.make_cards

The weights are not bundled, and not on the Hugging Face Hub (upstream publishes them on Google Drive /
OneDrive only). Each card holds the recipe zoo.official follows once a user has downloaded the file:
``tokenzoo convert NAME FILE`` converts it into the tokenzoo cache with the card's options (HoT's
``prune_before_block`` is upstream's ``--layer_index``, which no checkpoint records), after which
``zoo.load(NAME)`` loads it; ``zoo.load(NAME)`` before that prints this command. Parameter and FLOP figures
are counted here by video_pose.flops; parity figures are measured on the HoT parity fixtures.
"""

from __future__ import annotations

from pathlib import Path

from video_pose.flops import flops_table
from zoo.cards import make_card, write_card

ROOT = Path(__file__).resolve().parent.parent

# Settings the checkpoints do not record, per arch: the released models' values (HoT's README commands).
RELEASE_OPTIONS = {
    "mixste": {"num_heads": 8},
    "hot-mixste": {"num_heads": 8, "prune_before_block": 3, "knn_k": 2},
    "tpc-mixste": {"num_heads": 8, "prune_before_block": 7, "kept_frames": 61, "knn_k": 2},
    "motionbert": {"num_heads": 8},
}
PARITY_FIXTURE = {"mixste": "mixste", "hot-mixste": "hot_mixste", "tpc-mixste": "tpc_mixste"}


def measured_parity(arch: str) -> str:
    """Our model against upstream's on the HoT parity fixture of ``arch`` (converted from its weights), now."""
    import json

    import torch
    from safetensors.torch import load_file

    from video_pose.convert import convert_state_dict, read_upstream_state_dict
    from zoo.parity import parity_root

    if arch not in PARITY_FIXTURE:
        return (
            "not measured for plain MotionBERT (no fixture); its DSTformer blocks are the ones HoT-MotionBERT's "
            "parity fixture checks (tests/test_video_pose_parity.py)"
        )
    folder = parity_root() / "hot" / PARITY_FIXTURE[arch]
    if not (folder / "config.json").is_file():
        return "not measured (no parity fixture at hand when this card was written)"
    config, io = json.loads((folder / "config.json").read_text()), load_file(str(folder / "io.safetensors"))
    c = config["constants"]
    options = {"num_heads": c["num_heads"]}
    if "token_num" in c:
        options.update(kept_frames=c["token_num"], prune_before_block=c["layer_index"], knn_k=c.get("knn_k", 2))
    model = convert_state_dict(arch, read_upstream_state_dict(folder / "weights.safetensors"), **options)
    torch.manual_seed(config["seeds"]["forward_seed"])  # TPC's tie-break noise, drawn as upstream draws it
    with torch.no_grad():
        out, _ = model(io["input_2d"], trace={})
    diff = (out - io["output"]).abs().max().item()
    return (
        f"3D output within {diff:.1e} (max abs) of upstream's on the public parity fixture (a random "
        f"{c.get('channel', c.get('dim_feat'))}-wide, {c['frames']}-frame model; tolerance 1e-5), kept-frame "
        "indices equal (tests/test_video_pose_parity.py)"
    )


def main() -> None:

    HOT = "NationalGAILab/HoT"
    REV = "873b5bda0d38cc30ca808c519c87d2e1f22a3292"
    rows = {r["arch"]: r for r in flops_table()}

    def figures(arch, extra=""):
        r = rows[arch]
        return (
            f"\n## Size and cost (counted here, batch 1, 243 frames)\n\n{r['params']:,} parameters; "
            f"{r['flops_linear'] / 1e9:.2f} GFLOPs counting nn.Linear only (the paper's convention), "
            f"{r['flops_total'] / 1e9:.2f} GFLOPs counting every matmul (torch.utils.flop_counter).{extra}\n"
        )

    hot_where = (
        "HoT publishes its checkpoints only in a Google Drive folder linked from the README of "
        f'github.com/{HOT} ("pretrained models"), one `*.pth` per model under '
        "`checkpoint/pretrained/{mixste,hot_mixste,tpc_mixste}/`: a plain state_dict saved with torch.save "
        "(no wrapper, no `module.` prefix, CUDA tensors; the converter maps them to the CPU)."
    )
    io_note = (
        "\n## Inputs and outputs\n\n(B, F<=243, 17, 2) screen-normalised 2D keypoints in H3.6M-17 order "
        "(`video_pose.skeleton.normalize_screen_coordinates`; COCO detections via `coco_to_h36m`), e.g. CPN "
        "detections as in training. Output: root-relative 3D joints in metres, camera frame (VideoPose3D "
        "convention). Clips longer than 243 frames: `model.lift(kp2d)` slides windows.\n"
    )
    cards = {
        "mixste-h36m-243": dict(
            arch="mixste",
            license="mit",
            summary="MixSTE (CVPR 2022) as re-trained by the HoT authors: 243-frame seq2seq 2D-to-3D lifter on "
            "Human3.6M (CPN detections). The baseline of HoT's tables.",
            folder="mixste",
            cfg="",
        ),
        "hot-mixste-h36m-243": dict(
            arch="hot-mixste",
            license="mit",
            summary="HoT on MixSTE (CVPR 2024): token pruning cluster keeps 81 of 243 frames from block 3, token "
            "recovering attention restores all 243 before the head. Human3.6M, CPN detections.",
            folder="hot_mixste",
            cfg="",
        ),
        "tpc-mixste-h36m-243": dict(
            arch="tpc-mixste",
            license="mit",
            summary="TPC on MixSTE (CVPR 2024), seq2frame: 61 of 243 frames kept from block 7 (the centre frame "
            "always), the head predicts the kept frames; the centre frame is the estimate. Human3.6M, CPN detections.",
            folder="tpc_mixste",
            cfg="",
        ),
    }
    for name, c in cards.items():
        release = f"checkpoint/pretrained/{c['folder']}/model.pth"
        body = (
            f"\n## Where the weights are\n\n{hot_where} Save it as `{release}` (upstream names it "
            "`model_<epoch>_<MPJPE x 100>.pth`) and convert it once with the command under Weights above. "
            "The converter reads sizes from the weight shapes; what no checkpoint records comes from the card's "
            "converter options, this release's values"
            + (
                " (`prune_before_block` is upstream's `--layer_index`, `kept_frames` its `--token_num`)"
                if c["arch"] != "mixste"
                else ""
            )
            + ".\n\n## Parity with upstream\n\n"
            + measured_parity(c["arch"])
            + ".\n"
            + io_note
            + figures(c["arch"])
        )
        card = make_card(
            name=name,
            arch=c["arch"],
            modality="pose",
            license=c["license"],
            summary=c["summary"],
            upstream_repo=HOT,
            upstream_revision=REV,
            paper="https://arxiv.org/abs/2311.12028",
            weights="Official checkpoint from the HoT authors' Google Drive, converted by tokenzoo "
            "(video_pose.convert); not bundled.",
            converter=c["arch"],
            converter_options=RELEASE_OPTIONS[c["arch"]],
            upstream_files=[{"url": f"https://github.com/{HOT}#pretrained-models", "filename": release}],
            body=body,
        )
        write_card(ROOT / "hub_cards", name, card)

    MB = "Walter0807/MotionBERT"
    mb_where = (
        "MotionBERT publishes its fine-tuned 3D pose checkpoints on OneDrive, linked from "
        f"github.com/{MB}'s docs/pose3d.md: `FT_MB_lite_MB_ft_h36m_global_lite/best_epoch.bin` (MotionBERT-Lite) "
        "and `FT_MB_release_MB_ft_h36m_global/best_epoch.bin` (MotionBERT). Each file is "
        "`{'model_pos': state_dict, ...}` with a `module.` prefix; the converter unwraps both."
    )
    mb_io = (
        "\n## Inputs and outputs\n\n(B, F<=243, 17, 3): x, y and detector confidence in H3.6M-17 order. MotionBERT's "
        "own pipeline normalises 2D by the image size into [-1, 1] and predicts 3D in the same normalised pixel "
        "units (its evaluation rescales per clip); it does not output metres. Shorter clips use the first F rows "
        "of the temporal embedding, as the official model does.\n"
    )
    for name, arch, folder, size, _unused in [
        (
            "motionbert-lite-h36m",
            "motionbert",
            "FT_MB_lite_MB_ft_h36m_global_lite",
            "MotionBERT-Lite (dim_feat 256, mlp_ratio 4, depth 5): the size HoT's MotionBERT experiments use",
            "",
        ),
        (
            "motionbert-h36m",
            "motionbert",
            "FT_MB_release_MB_ft_h36m_global",
            "MotionBERT (dim_feat 512, mlp_ratio 2, depth 5)",
            "",
        ),
    ]:
        release = f"{folder}/best_epoch.bin"
        body = (
            f"\n## Where the weights are\n\n{mb_where} The file also pickles `min_loss` as a numpy float64, the "
            "one extra global the converter allows beyond tensors.\n\n## Parity with upstream\n\n"
            + measured_parity(arch)
            + ".\n"
            + mb_io
            + (
                figures("motionbert")
                if "lite" in name
                else "\n## Size\n\nAbout 42.3 M parameters per the MotionBERT paper (not counted here; the converter "
                "reads the sizes from the file).\n"
            )
        )
        card = make_card(
            name=name,
            arch=arch,
            modality="pose",
            license="apache-2.0",
            summary=f"{size}, fine-tuned for 2D-to-3D lifting on Human3.6M (243 frames). DSTformer with dual "
            "spatial-temporal streams.",
            upstream_repo=MB,
            paper="https://arxiv.org/abs/2210.06551",
            weights="Official checkpoint from MotionBERT's OneDrive, converted by tokenzoo (video_pose.convert); "
            "not bundled.",
            converter=arch,
            converter_options=RELEASE_OPTIONS[arch],
            upstream_files=[{"url": f"https://github.com/{MB}/blob/main/docs/pose3d.md", "filename": release}],
            body=body,
        )
        write_card(ROOT / "hub_cards", name, card)


if __name__ == "__main__":
    main()
