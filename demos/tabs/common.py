"""Small pieces the modality tabs share: encode one uploaded file, ids as a grid, outputs as pictures."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr
import numpy as np
import torch

from demos.tabs import load_model
from zoo.api import Tokens

IDS_PER_ROW = 16
NO_SAMPLE = "(uploaded file)"


def figure_pixels(fig) -> np.ndarray:
    """A matplotlib figure as an (H, W, 3) uint8 picture for a gr.Image; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture


def sample_choices(model: Any) -> list[str]:
    """Dropdown entries: the uploaded file, then "sample 1".. for each sample input."""
    return [NO_SAMPLE] + [f"sample {i + 1}" for i in range(len(model.sample_inputs()))]


def chosen_item(model: Any, path: str | None, sample: str, what: str, upload_hint: str) -> Any:
    """The picked sample (``what`` names it in errors), else the uploaded file read by the family."""
    if sample and sample != NO_SAMPLE:
        samples = model.sample_inputs()
        index = int(sample.split()[-1]) - 1
        if not 0 <= index < len(samples):
            raise gr.Error(f"this model has {len(samples)} sample {what}; {sample!r} is not one of them")
        chosen = samples[index]
        return model.load_item(chosen) if isinstance(chosen, (str, os.PathLike)) else chosen
    if not path:
        raise gr.Error(upload_hint)
    return model.load_item(path)


def encode_file(model_name: str, path: str | None) -> tuple[Any, Any, Tokens]:
    """(model, the batch encode took, Tokens) for one uploaded file; user mistakes become gr.Error."""
    if not model_name:
        raise gr.Error("Choose a model first.")
    if not path:
        raise gr.Error("Upload an input file first.")
    model = load_model(model_name)
    try:
        batch = model.collate([model.load_item(path)])
        return model, batch, model.encode(batch)
    except Exception as err:  # shown to the user as the tab's error message
        raise gr.Error(f"{model_name} could not encode this file: {err}") from err


def id_grid(tokens: Tokens, per_row: int = IDS_PER_ROW) -> list[list[int | None]]:
    """The first sample's valid ids in rows (the token grid's width when meta gives ``grid_size``)."""
    if tokens.ids is None:
        return []
    ids = tokens.ids[0][tokens.mask[0]].tolist()
    grid = tokens.meta.get("grid_size")
    if isinstance(grid, (list, tuple)) and len(grid) == 2 and grid[0] * grid[1] == len(ids):
        per_row = int(grid[1])
    rows = [ids[i : i + per_row] for i in range(0, len(ids), per_row)]
    return [row + [None] * (per_row - len(row)) for row in rows]


def to_picture(x: Any) -> np.ndarray | Any:
    """A decoded image as something gr.Image shows: PIL passes; tensors in [-1, 1] become uint8 HWC."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return x
    array = x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)).float()
    if array.dim() == 3 and array.shape[0] in (1, 3):
        array = array.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.dim() == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return ((array.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def enlarged(picture: Any, min_side: int = 256) -> Any:
    """Small pictures scaled up by an integer factor (nearest neighbour), so tiny models' output is visible."""
    from PIL import Image

    image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
    factor = -(-min_side // max(1, max(image.size)))  # ceil
    return image if factor <= 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)
