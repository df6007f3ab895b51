"""The tab any modality gets before it has its own: upload a file, see its token ids as a grid.

It reaches the family only through the hooks in :mod:`zoo.batch` (``load_item``, ``collate``) and
``encode``, so a new family shows up in the app the moment one of its models is registered.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from demos.tabs import load_model
from zoo import batch as hooks

IDS_PER_ROW = 16


def encode_file(model_name: str, path: str | None) -> tuple[list[list[int]], str]:
    """-> (ids in rows of IDS_PER_ROW, a Markdown summary) of the first sample."""
    if not model_name:
        raise gr.Error("Choose a model first.")
    if not path:
        raise gr.Error("Upload an input file first.")
    model = load_model(model_name)
    try:
        tokens = model.encode(hooks.collate(model, [hooks.load_item(model, path)]))
    except Exception as err:  # shown to the user as the tab's error message
        raise gr.Error(f"{model_name} could not encode this file: {err}") from err
    if tokens.ids is None:
        width = tokens.embeddings.shape[-1]
        return [], f"**{int(tokens.lengths[0])} continuous tokens** of width {width} (no ids to show)"
    ids = tokens.ids[0][tokens.mask[0]].tolist()
    rows = [ids[i : i + IDS_PER_ROW] for i in range(0, len(ids), IDS_PER_ROW)]
    rows = [row + [None] * (IDS_PER_ROW - len(row)) for row in rows]
    codebook = hooks.codebook_size(model, tokens)
    summary = f"**{len(ids)} tokens**" + (f" from a codebook of {codebook:,}" if codebook else "")
    return rows, summary


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
        button.click(encode_file, [model, upload], [grid, summary], api_name=f"{modality}_encode")

    return build
