"""Audio tab: record or upload -> token ids, token rate and bitrate; and, where a text-to-speech model is
registered (one whose class declares the ``synthesize`` task), text -> speech streamed chunk by chunk, and
speech tokens -> speech (the decoder S3 tokenizers lack)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import gradio as gr
import numpy as np
import torch

from demos.tabs import load_model
from demos.tabs.common import encode_file, id_grid
from zoo.api import Tokens


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


def _pcm16(wave: torch.Tensor) -> np.ndarray:
    return (wave.detach().float().clamp(-1, 1).cpu().numpy() * 32767).round().astype(np.int16)


def synthesize_stream(model_name: str, text: str) -> Iterator[tuple[int, np.ndarray]]:
    """Text -> (sample rate, PCM16 piece) for each piece the model streams, as soon as it is ready."""
    if not model_name:
        raise gr.Error("Choose a text-to-speech model first.")
    model = load_model(model_name)
    try:
        pieces = model.synthesize(text, stream=True, seed=0)
        for piece in pieces:
            yield model.sample_rate, _pcm16(piece)
    except gr.Error:
        raise
    except Exception as err:  # shown to the user as the tab's error message
        raise gr.Error(f"{model_name} could not synthesise this text: {err}") from err


def tokens_to_speech(tts_name: str, tokenizer_name: str, ids_text: str, path: str | None) -> tuple:
    """Speech tokens (typed ids, else the uploaded audio's ids from the tokenizer) -> (speech, summary)."""
    if not tts_name or not tokenizer_name:
        raise gr.Error("Choose a speech tokenizer and a text-to-speech model first.")
    tts = load_model(tts_name)
    if ids_text and ids_text.strip():
        tokenizer = load_model(tokenizer_name)
        try:
            ids = torch.tensor([[int(v) for v in ids_text.replace(",", " ").split()]], dtype=torch.int64)
        except ValueError as err:
            raise gr.Error("Token ids must be whole numbers separated by spaces or commas.") from err
        meta = {"codebook_size": tokenizer.codebook_size, "token_rate": tokenizer.token_rate}
        tokens = Tokens(ids=ids, meta=meta)
    else:
        _, _, tokens = encode_file(tokenizer_name, path)
    try:
        waves, lengths = tts.decode(tokens, seed=0)
    except Exception as err:  # a tokenizer of another vocabulary, ids out of range: said on the page
        raise gr.Error(f"{tts_name} could not speak these tokens: {err}") from err
    count, wave = int(tokens.lengths[0]), waves[0, : int(lengths[0])]
    summary = f"**{count} tokens** -> {len(wave) / tts.sample_rate:.2f} s of speech"
    return (tts.sample_rate, _pcm16(wave)), summary


def build(models: list[str]) -> None:
    speakers = [name for name in models if "synthesize" in load_model(name).tasks]
    tokenizers = [name for name in models if name not in speakers]
    if tokenizers:
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(tokenizers, value=tokenizers[0], label="Speech tokenizer", elem_id="audio-model")
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio-input"
                )
                button = gr.Button("Tokenize", variant="primary", elem_id="audio-tokenize")
            with gr.Column():
                summary = gr.Markdown(elem_id="audio-summary")
                grid = gr.Dataframe(label="Token ids", interactive=False, elem_id="audio-ids")
        button.click(tokenize_audio, [model, audio], [grid, summary], api_name="audio_tokenize")
    if not speakers:
        return
    gr.Markdown("### Text to speech (streamed chunk by chunk)")
    with gr.Row():
        with gr.Column():
            tts = gr.Dropdown(speakers, value=speakers[0], label="Text-to-speech model", elem_id="audio-tts-model")
            text = gr.Textbox(label="Text", value="large help once week", elem_id="audio-tts-text")
            speak = gr.Button("Speak", variant="primary", elem_id="audio-tts-speak")
        with gr.Column():
            spoken = gr.Audio(label="Speech", streaming=True, autoplay=True, elem_id="audio-tts-output")
    speak.click(synthesize_stream, [tts, text], [spoken], api_name="audio_synthesize")
    if not tokenizers:
        return
    gr.Markdown("### Speech tokens to speech")
    with gr.Row():
        with gr.Column():
            source = gr.Dropdown(tokenizers, value=tokenizers[0], label="Speech tokenizer", elem_id="audio-s3-model")
            ids = gr.Textbox(label="Token ids (or leave empty and upload audio)", elem_id="audio-s3-ids")
            clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio-s3-in")
            decode = gr.Button("Speak these tokens", variant="primary", elem_id="audio-s3-decode")
        with gr.Column():
            decoded = gr.Audio(label="Speech from tokens", elem_id="audio-s3-output")
            said = gr.Markdown(elem_id="audio-s3-summary")
    decode.click(tokens_to_speech, [tts, source, ids, clip], [decoded, said], api_name="audio_tokens_to_speech")
