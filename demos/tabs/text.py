"""Text tab: text -> tokens coloured by id, their ids, and fertility (tokens per word)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import torch

from demos.tabs import load_model
from zoo.api import Tokens
from zoo.errors import ZooError
from zoo.metrics.text import count_words

SAMPLE_TEXT = "Tokenizers turn text into ids. Grüße aus Zürich — 東京 too!"
MAX_TOKENS_SHOWN = 2000  # the piece view decodes prefixes; keep it snappy


def token_pieces(model: Any, ids: list[int]) -> list[tuple[str, str]]:
    """(text piece, id label) per token, grouping tokens that only decode together (split UTF-8): each
    piece is what the prefix decoding gains when the token is added."""

    def decode(prefix: list[int]) -> str:
        return model.decode(Tokens(ids=torch.tensor([prefix], dtype=torch.int64)))[0]

    pieces, group, previous = [], [], ""
    for position, token in enumerate(ids):
        group.append(token)
        text = decode(ids[: position + 1])
        if text.endswith("\ufffd") and position + 1 < len(ids):
            continue  # a multi-byte character still incomplete: keep grouping
        pieces.append((text[len(previous) :], " ".join(map(str, group))))
        group, previous = [], text
    return pieces


def fertility(num_tokens: int, text: str) -> float | None:
    """Tokens per word as ``zoo.metrics.text`` counts words (None for text without words)."""
    words = count_words(text)
    return num_tokens / words if words else None


def tokenize(model_name: str, text: str) -> tuple[list[tuple[str, str]], str, str]:
    """The text tab's event: -> (coloured pieces, statistics in Markdown, ids as text)."""
    if not model_name:
        raise gr.Error("Choose a tokenizer first.")
    model = load_model(model_name)
    try:
        tokens = model.encode([text])
    except ZooError as err:
        raise gr.Error(str(err)) from err
    ids = tokens.ids[0][tokens.mask[0]].tolist()
    shown = ids[:MAX_TOKENS_SHOWN]
    pieces = token_pieces(model, shown)
    words_ratio = fertility(len(ids), text)
    num_bytes = len(text.encode("utf-8"))
    stats = f"**{len(ids)} tokens** for {len(text)} characters, {num_bytes} bytes, {count_words(text)} words  \n"
    if words_ratio is not None:
        stats += f"fertility (tokens per word): **{words_ratio:.2f}**  \n"
    if ids:
        stats += f"bytes per token: {num_bytes / len(ids):.2f}"
    if len(ids) > MAX_TOKENS_SHOWN:
        stats += f"  \n(showing the first {MAX_TOKENS_SHOWN} tokens)"
    return pieces, stats, " ".join(map(str, ids))


def build(models: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="Tokenizer", elem_id="text-model")
            text = gr.Textbox(value=SAMPLE_TEXT, lines=4, label="Text", elem_id="text-input")
            button = gr.Button("Tokenize", variant="primary", elem_id="text-tokenize")
        with gr.Column():
            pieces = gr.HighlightedText(
                label="Tokens (one colour per id)",
                show_legend=False,
                show_inline_category=False,
                combine_adjacent=False,
                elem_id="text-tokens",
            )
            stats = gr.Markdown(elem_id="text-stats")
            ids = gr.Textbox(label="Token ids", interactive=False, elem_id="text-ids")
    button.click(tokenize, [model, text], [pieces, stats, ids], api_name="text_tokenize")
