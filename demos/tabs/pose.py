"""Pose tab: a 2D keypoint clip (upload a .npy (F, J, 2|3) or pick a sample) -> 3D skeleton, kept frames.

The 3D poses come from the family's ``lift`` verb where its ``tasks`` declare one, else from
``reconstruct(batch, encode(batch))``; the kept frames from ``Tokens.meta["kept_frame_indices"]`` (HoT's
representative frames). Bones are drawn from the model's ``skeleton_parents`` (a parent index per
joint, -1 for the root) when it declares them; otherwise the joints are drawn as points.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

from demos.tabs import load_model
from demos.tabs.common import chosen_item, figure_pixels, sample_choices


def _clip(model: Any, path: str | None, sample: str) -> Any:
    return chosen_item(
        model, path, sample, "clips", "Upload a 2D keypoint file (.npy, frames x joints x 2) or pick a sample clip."
    )


def render(poses: np.ndarray, kept: list[int], frame: int, parents: Any) -> np.ndarray:
    """(F, J, 3) poses -> an RGB picture: the skeleton at ``frame`` and the clip's timeline, kept frames marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 4.5), dpi=80)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    pose = poses[frame]
    if parents is not None:
        for joint, parent in enumerate(parents):
            if parent >= 0:
                ax.plot(*[(pose[joint, d], pose[parent, d]) for d in (0, 2, 1)], color="tab:blue")
    ax.scatter(pose[:, 0], pose[:, 2], pose[:, 1], color="tab:red" if frame in kept else "tab:gray", s=12)
    span = float(np.abs(poses).max()) or 1.0
    ax.set(xlim=(-span, span), ylim=(-span, span), zlim=(span, -span), title=f"frame {frame}")
    timeline = fig.add_subplot(1, 2, 2)
    timeline.vlines(range(len(poses)), 0, 1, color="lightgray")
    timeline.vlines(kept, 0, 1, color="tab:red", label=f"kept frames ({len(kept)})")
    timeline.axvline(frame, color="black", linestyle="--", label="shown frame")
    timeline.set(yticks=[], xlabel="frame", title="kept frames")
    timeline.legend(loc="upper right", fontsize=8)
    return figure_pixels(fig)


def lift_clip(model_name: str, path: str | None, sample: str, frame: float) -> tuple[np.ndarray, str]:
    """-> (skeleton picture, Markdown summary) for one clip."""
    if not model_name:
        raise gr.Error("Choose a model first.")
    model = load_model(model_name)
    clip = _clip(model, path, sample)
    try:
        batch = model.collate([clip])
        tokens = model.encode(batch)
        poses = model.lift(batch) if "lift" in model.tasks else model.reconstruct(batch, tokens)
    except Exception as err:  # shown to the user as the tab's error message
        raise gr.Error(f"{model_name} could not lift this clip: {err}") from err
    poses = poses[0].detach().float().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses[0])
    kept_meta = tokens.meta.get("kept_frame_indices")
    kept = sorted(set(kept_meta[0].tolist())) if isinstance(kept_meta, torch.Tensor) else list(range(len(poses)))
    frame = max(0, min(int(frame), len(poses) - 1))
    picture = render(poses, kept, frame, model.skeleton_parents)
    summary = (
        f"**{len(poses)} frames**, {poses.shape[1]} joints; **{int(tokens.lengths[0])} tokens** "
        f"(kept frames: {len(kept)})  \nkept: {', '.join(map(str, kept[:40]))}{' ...' if len(kept) > 40 else ''}"
    )
    return picture, summary


def build(models: list[str]) -> None:
    samples = sample_choices(load_model(models[0]))
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="Pose model", elem_id="pose-model")
            upload = gr.File(label="2D keypoints (.npy: frames x joints x 2)", type="filepath", elem_id="pose-file")
            sample = gr.Dropdown(samples, value=samples[-1], label="or a sample clip", elem_id="pose-sample")
            frame = gr.Slider(0, 242, value=0, step=1, label="frame to show", elem_id="pose-frame")
            button = gr.Button("Lift to 3D", variant="primary", elem_id="pose-lift")
        with gr.Column():
            picture = gr.Image(label="3D skeleton and kept frames", interactive=False, elem_id="pose-plot")
            summary = gr.Markdown(elem_id="pose-summary")
    button.click(lift_clip, [model, upload, sample, frame], [picture, summary], api_name="pose_lift")
