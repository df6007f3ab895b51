"""EM volume tab: a sample (or uploaded .npy) volume -> slices with their tokens and the segmentation.

One picture per chosen depth: the raw slice, the token grid (``Tokens.meta["grid_size"]`` or
``["grid"]`` = (d, h, w); the id map when the tokens are discrete, the grid cells otherwise), and the
segmentation from the family's ``segment`` verb when its ``tasks`` declare one (labels (D, H, W), or the first
sample and channel of affinities / probabilities).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

from demos.tabs import load_model
from demos.tabs.common import chosen_item, figure_pixels, sample_choices


def _volume(model: Any, path: str | None, sample: str) -> Any:
    return chosen_item(
        model, path, sample, "volumes", "Upload a volume (.npy, depth x height x width) or pick a sample volume."
    )


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def render(volume: np.ndarray, z: int, token_map: np.ndarray | None, grid: Any, labels: np.ndarray | None):
    """(D, H, W) volume -> an RGB picture of slice z, its tokens and its segmentation side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 + (labels is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4), dpi=80)
    depth, height, width = volume.shape
    axes[0].imshow(volume[z], cmap="gray")
    axes[0].set_title(f"slice {z} of {depth}")
    if token_map is not None:
        axes[1].imshow(token_map, cmap="tab20", interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        axes[1].set_title("token ids")
    else:
        axes[1].imshow(volume[z], cmap="gray")
        axes[1].set_title("token patches")
    if grid is not None:
        for y in np.linspace(-0.5, height - 0.5, int(grid[1]) + 1):  # pixel edges sit at half-integers
            axes[1].axhline(y, color="yellow", linewidth=0.6)
        for x in np.linspace(-0.5, width - 0.5, int(grid[2]) + 1):
            axes[1].axvline(x, color="yellow", linewidth=0.6)
    if labels is not None:
        axes[2].imshow(labels[z], cmap="tab20", interpolation="nearest")
        axes[2].set_title("segmentation")
    for ax in axes:
        ax.set(xticks=[], yticks=[])
    return figure_pixels(fig)


def show_volume(model_name: str, path: str | None, sample: str, z: float) -> tuple[np.ndarray, str]:
    """-> (slice picture, Markdown summary) for one volume."""
    if not model_name:
        raise gr.Error("Choose a model first.")
    model = load_model(model_name)
    item = _volume(model, path, sample)
    try:
        batch = model.collate([item])
        tokens = model.encode(batch)
        segmentation = model.segment(batch) if "segment" in model.tasks else None
    except Exception as err:  # shown to the user as the tab's error message
        raise gr.Error(f"{model_name} could not process this volume: {err}") from err
    volume = _as_numpy(item)
    volume = volume.reshape(volume.shape[-3:])
    depth = volume.shape[0]
    z = max(0, min(int(z), depth - 1))
    grid = tokens.meta.get("grid_size", tokens.meta.get("grid"))
    grid = tuple(int(g) for g in grid) if isinstance(grid, (list, tuple)) and len(grid) == 3 else None
    token_map = None
    if grid is not None and tokens.ids is not None and tokens.ids.shape[1] == grid[0] * grid[1] * grid[2]:
        token_map = tokens.ids[0].reshape(grid)[z * grid[0] // depth].cpu().numpy()
    labels = None
    if segmentation is not None:
        labels = _as_numpy(segmentation)
        while labels.ndim > 3:  # (B, C, D, H, W) or (B, D, H, W): the first sample, first channel
            labels = labels[0]
    count = int(tokens.lengths[0])
    summary = f"**{count} tokens** for a {'x'.join(map(str, volume.shape))} volume"
    if grid is not None:
        summary += f" (patch grid {'x'.join(map(str, grid))})"
    summary += "" if labels is not None else "  \nthis model has no segment(); no segmentation shown"
    return render(volume, z, token_map, grid, labels), summary


def build(models: list[str]) -> None:
    samples = sample_choices(load_model(models[0]))
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="Volume model", elem_id="em-model")
            upload = gr.File(label="Volume (.npy: depth x height x width)", type="filepath", elem_id="em-file")
            sample = gr.Dropdown(samples, value=samples[-1], label="or a sample volume", elem_id="em-sample")
            z = gr.Slider(0, 255, value=0, step=1, label="slice (depth)", elem_id="em-slice")
            button = gr.Button("Tokenize and segment", variant="primary", elem_id="em-run")
        with gr.Column():
            picture = gr.Image(label="slice, tokens, segmentation", interactive=False, elem_id="em-plot")
            summary = gr.Markdown(elem_id="em-summary")
    button.click(show_volume, [model, upload, sample, z], [picture, summary], api_name="em_volume_segment")
