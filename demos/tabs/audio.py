"""Audio tab: record or upload -> token ids, token rate and bitrate."""

from __future__ import annotations

import math

import gradio as gr

from demos.tabs.common import encode_file, id_grid


def tokenize_audio(model_name: str, path: str | None) -> tuple[list, str]:
    """-> (ids grid, Markdown summary with the token rate and bits per second)."""
    model, _, tokens = encode_file(model_name, path)
    count = int(tokens.lengths[0])
    summary = f"**{count} tokens**"
    samples, rate = tokens.meta.get("num_samples"), tokens.meta.get("sample_rate")
    if samples is not None and rate:
        seconds = float(samples[0]) / float(rate)
        summary += f" for {seconds:.2f} s: **{count / seconds:.1f} tokens per second**"
        codebook = model.codebook_size if tokens.ids is not None else None
        if codebook:
            summary += f", {count * math.log2(codebook) / seconds:.0f} bits per second"
    if tokens.meta.get("token_rate"):
        summary += f"  \nnominal token rate: {tokens.meta['token_rate']} Hz"
    return id_grid(tokens, per_row=25), summary


def build(models: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="Speech tokenizer", elem_id="audio-model")
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio-input")
            button = gr.Button("Tokenize", variant="primary", elem_id="audio-tokenize")
        with gr.Column():
            summary = gr.Markdown(elem_id="audio-summary")
            grid = gr.Dataframe(label="Token ids", interactive=False, elem_id="audio-ids")
    button.click(tokenize_audio, [model, audio], [grid, summary], api_name="audio_tokenize")
