"""The tab any modality gets before it has its own: upload a file, see its token ids as a grid.

It reaches the family only through the hooks ``zoo.api.ZooModel`` declares (``load_item``, ``collate``,
``codebook_size``) and ``encode``, so a new family shows up in the app the moment one of its models is
registered.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from demos.tabs.common import encode_file, id_grid


def encode_uploaded(model_name: str, path: str | None) -> tuple[list[list[int | None]], str]:
    """-> (ids in rows, a Markdown summary) of the uploaded file."""
    model, _, tokens = encode_file(model_name, path)
    if tokens.ids is None:
        width = tokens.embeddings.shape[-1]
        return [], f"**{int(tokens.lengths[0])} continuous tokens** of width {width} (no ids to show)"
    codebook = model.codebook_size
    summary = f"**{int(tokens.lengths[0])} tokens**" + (f" from a codebook of {codebook:,}" if codebook else "")
    return id_grid(tokens), summary


def make_builder(modality: str) -> Callable[[list[str]], None]:
    def build(models: list[str]) -> None:
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(models, value=models[0], label="Model", elem_id=f"{modality}-model")
                upload = gr.File(label="Input file", type="filepath", elem_id=f"{modality}-file")
                button = gr.Button("Encode", variant="primary", elem_id=f"{modality}-encode")
            with gr.Column():
                summary = gr.Markdown(elem_id=f"{modality}-summary")
                grid = gr.Dataframe(label="Token ids", interactive=False, elem_id=f"{modality}-ids")
        button.click(encode_uploaded, [model, upload], [grid, summary], api_name=f"{modality}_encode")

    return build
