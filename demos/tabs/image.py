"""Image tab: upload -> token ids as a grid -> reconstruction from the first k tokens.

Coarse-to-fine tokenizers (FlexTok) decode any prefix, so k trades bits for detail; a tokenizer
that needs every token says so in the summary when k is below its count.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from demos.tabs.common import encode_file, enlarged, id_grid, to_picture
from zoo.errors import ZooError

MAX_K = 256


def tokenize_image(model_name: str, path: str | None, k: float) -> tuple[Any, list, str]:
    """-> (reconstruction from the first k tokens or None, ids grid, Markdown summary)."""
    model, batch, tokens = encode_file(model_name, path)
    count = int(tokens.lengths[0])
    k = max(1, min(int(k), count))
    summary = f"**{count} tokens**"
    codebook = model.codebook_size if tokens.ids is not None else None
    size = tokens.meta.get("image_size")
    if codebook and isinstance(size, (list, tuple)) and len(size) == 2:
        summary += f", {k * math.log2(codebook) / (size[0] * size[1]):.4f} bits per pixel at k={k}"
    picture = None
    try:
        kept = tokens.truncate(k) if k < tokens.num_positions else tokens
        picture = enlarged(to_picture(model.reconstruct(batch, kept)[0]))
        summary += f"  \nreconstruction from the first **{k}** of {count} tokens"
    except (ZooError, RuntimeError, ValueError) as err:
        summary += f"  \nno reconstruction at k={k}: {err}"
    return picture, id_grid(tokens), summary


def build(models: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="Image tokenizer", elem_id="image-model")
            image = gr.Image(type="filepath", label="Image", height=256, elem_id="image-input")
            k = gr.Slider(1, MAX_K, value=MAX_K, step=1, label="k: tokens used to reconstruct", elem_id="image-k")
            button = gr.Button("Tokenize and reconstruct", variant="primary", elem_id="image-tokenize")
        with gr.Column():
            reconstruction = gr.Image(
                label="Reconstruction", interactive=False, height=256, elem_id="image-reconstruction"
            )
            summary = gr.Markdown(elem_id="image-summary")
            grid = gr.Dataframe(label="Token ids", interactive=False, elem_id="image-ids")
    button.click(tokenize_image, [model, image, k], [reconstruction, grid, summary], api_name="image_tokenize")
