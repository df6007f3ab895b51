"""Write the README-only cards of the official HoT / MixSTE / MotionBERT checkpoints into hub_cards/.

    python -m video_pose.make_cards

The weights are not bundled (upstream publishes them on Google Drive / OneDrive only); each card says where
they are and how to convert them. Parameter and FLOP figures are counted here by video_pose.flops.
"""

from __future__ import annotations

from pathlib import Path

from video_pose.flops import flops_table
from zoo.cards import make_card


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
        hint = (
            f"Download the .pth from the Google Drive folder linked in github.com/{HOT}'s README "
            f"(checkpoint/pretrained/{c['folder']}/), then: tokenzoo convert {c['arch']} model.pth --out DIR "
            "(or video_pose.convert.convert_checkpoint) and zoo.load(DIR)."
        )
        body = (
            f"\n## Where the weights are\n\n{hot_where}\n\nConvert once:\n\n```bash\ntokenzoo convert {c['arch']} "
            f"checkpoint/pretrained/{c['folder']}/<file>.pth --out {name}\n```\n\n"
            f"then load the folder: `zoo.load('./{name}')`. The converter reads sizes from the weight shapes; "
            "the defaults of "
            f"`{c['arch']}`'s config are this release's (243 frames, 512 channels, 8 heads"
            + (
                ", 81 kept frames before block 3"
                if c["arch"] == "hot-mixste"
                else ", 61 kept frames before block 7"
                if c["arch"] == "tpc-mixste"
                else ""
            )
            + ").\n"
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
            weights="Official checkpoint, not bundled: " + hint,
            weights_hint=hint,
            body=body,
        )
        Path(f"hub_cards/{name}").mkdir(parents=True, exist_ok=True)
        Path(f"hub_cards/{name}/README.md").write_text(str(card))

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
        hint = (
            f"Download {folder}/best_epoch.bin from the OneDrive folder linked in github.com/{MB}/docs/pose3d.md, "
            "then: "
            f"tokenzoo convert {arch} best_epoch.bin --out DIR and zoo.load(DIR). Sizes are read from the weights."
        )
        body = (
            f"\n## Where the weights are\n\n{mb_where}\n\n```bash\n"
            f"tokenzoo convert {arch} {folder}/best_epoch.bin --out {name}\n```\n"
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
            weights="Official checkpoint, not bundled: " + hint,
            weights_hint=hint,
            body=body,
        )
        Path(f"hub_cards/{name}").mkdir(parents=True, exist_ok=True)
        Path(f"hub_cards/{name}/README.md").write_text(str(card))


if __name__ == "__main__":
    main()
