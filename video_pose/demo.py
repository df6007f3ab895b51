"""Demo: lift a held-out synthetic clip with the bundled tiny MixSTE and HoT-MixSTE, and draw the result.

    python -c "import pathlib, video_pose.demo as d; print(d.run(pathlib.Path('out')))"

The clip comes from ``video_pose.synth``'s test split (a subject and a camera azimuth no training clip has).
Both models lift it with sliding 27-frame windows; the picture shows the 2D input and both 3D outputs
against the ground truth at one frame, and which frames HoT kept in the first window.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MODELS = ("mixste-tiny", "hot-mixste-tiny")
CLIP_FRAMES = 81
CLIP_SEED = 3


def _draw(path: Path, kp2d, truth, preds: dict, kept, frame: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from video_pose.skeleton import H36M_PARENTS, H36M_RIGHT

    def bones(ax, pose, style, three_d=False, label=None):
        for j, parent in enumerate(H36M_PARENTS):
            if parent < 0:
                continue
            color = "tab:red" if j in H36M_RIGHT else "tab:blue"
            pts = [pose[[parent, j], k] for k in range(3 if three_d else 2)]
            if three_d:  # camera frame: x right, y down, z forward -> plot x, z (depth), -y (up)
                ax.plot(pts[0], pts[2], -pts[1], style, color=color, label=label if j == 1 else None)
            else:
                ax.plot(pts[0], pts[1], style, color=color)

    fig = plt.figure(figsize=(16, 4.5))
    ax = fig.add_subplot(1, 4, 1)
    bones(ax, kp2d[frame], "-")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_title(f"2D input, frame {frame}")
    for i, (name, pred) in enumerate(preds.items()):
        ax = fig.add_subplot(1, 4, 2 + i, projection="3d")
        bones(ax, truth[frame], "--", three_d=True, label="truth")
        bones(ax, pred[frame], "-", three_d=True, label=name)
        ax.set_title(f"{name} (solid) vs truth (dashed)")
        ax.set(xlim=(-0.9, 0.9), ylim=(-0.9, 0.9), zlim=(-0.9, 0.9))
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=10, azim=-80)
    ax = fig.add_subplot(1, 4, 4)
    ax.eventplot([list(range(27)), kept.tolist()], colors=["lightgray", "tab:green"], lineoffsets=[1, 0])
    ax.set_yticks([0, 1], ["kept by HoT", "all frames"])
    ax.set_xlabel("frame of the first window")
    ax.set_title("token pruning cluster")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(out_dir: Path) -> list[dict]:
    """Lift one held-out clip with both tiny models; returns one row per model and saves a picture."""
    import zoo
    from video_pose.synth import make_split
    from zoo.metrics.pose import mpjpe, p_mpjpe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = make_split("test", 1, CLIP_FRAMES, seed=CLIP_SEED)
    kp2d, truth = torch.from_numpy(clip.kp2d), torch.from_numpy(clip.pose3d)
    rows, preds, kept = [], {}, None
    for name in MODELS:
        model = zoo.load(name)
        start = time.perf_counter()
        pred = model.lift(kp2d, generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        tokens = model.encode(kp2d[:, : model.config.num_frames], generator=torch.Generator().manual_seed(0))
        n, window = tokens.num_positions, model.config.num_frames
        if name.startswith("hot"):
            kept = tokens.meta["kept_frame_indices"][0]
        preds[name] = pred[0].numpy()
        err, perr = 1000 * mpjpe(pred, truth).item(), 1000 * p_mpjpe(pred, truth).item()
        rows.append(
            {
                "model": name,
                "modality": "pose",
                "input": f"held-out synthetic {clip.motion[0]} clip, {CLIP_FRAMES} frames, azimuth "
                f"{clip.azimuth_deg[0]:.0f} deg",
                "tokens": f"{n} of {window} frames per window ({n * 17} joint tokens of width {model.config.dim})",
                # Continuous tokens: bits of the float32 pose tokens per input frame.
                "bits_per_unit": round(n * tokens.embeddings.shape[-1] * 32 / window, 1),
                "unit": "frame (float32 tokens)",
                "quality": f"MPJPE {err:.1f} mm, P-MPJPE {perr:.1f} mm",
                "seconds_per_item": round(seconds, 4),
            }
        )
        log.info("%s", rows[-1])
    frame = CLIP_FRAMES // 2
    _draw(out_dir / "hot_pose_lift.png", clip.kp2d[0], clip.pose3d[0], preds, kept, frame)
    return rows


if __name__ == "__main__":
    import pathlib

    for row in run(pathlib.Path("out")):
        print(row)
