"""TouchTTS on the CPU: LM tokens/s with and without the KV cache, flow real-time factor, streaming latency.

    flock /tmp/tokenzoo-cpu.lock python bench/touchtts.py [--seconds 10] [--default-seconds 2] [--skip-default]

Two sizes, random weights (speed does not depend on them), float32, batch 1:
- tiny: the tiny configuration (2-layer, 64-wide Qwen2 trunks, 6561 speech tokens), a ``--seconds`` utterance;
- default: the documented full size, Qwen2.5-0.5B's shape for both trunks with Qwen2.5's 151,670 text rows
  + 6561 speech tokens, a ``--default-seconds`` utterance (a 10 s one takes minutes on two cores).
Random weights would mostly sample text ids, so the text rows of the tied embedding are zeroed: every
sampled id is then a speech id and the utterance has exactly 25 tokens per second.

Figures, each measured in the same run as its peer:
- LM tokens/s generating the utterance's tokens with the KV cache vs recomputing the prefix every step;
- flow real-time factor (seconds of compute per second of speech), offline and streamed in chunks;
- first-chunk latency of streamed synthesis (text in, first mel piece out: LM, flow) over the
  whole-utterance latency (text in, all mel out, offline). The vocoder is not included on either
  side (it lives in audio/touchtts/vocoder.py and vocodes streamed pieces with a few frames of context).
The last line is one JSON object: the headline figures are the tiny size's, ``default`` holds the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio.touchtts.lm import LMConfig  # noqa: E402
from audio.touchtts.model import TouchTTS, TouchTTSConfig, tiny_config  # noqa: E402

QWEN25_TEXT_ROWS = 151_665 + 5  # Qwen2.5's tokenizer + the five audio tokens add_speech_tokens.py adds
TEXT = "the quick brown fox jumps over the lazy dog"  # 43 text ids: a limit of 30 x 43 new tokens


def build(size: str) -> TouchTTS:
    if size == "tiny":
        config = tiny_config()
    else:
        default = TouchTTSConfig()
        config = dataclasses.replace(default, lm=dataclasses.replace(default.lm, text_vocab_size=QWEN25_TEXT_ROWS))
    model = TouchTTS(config).eval()
    with torch.no_grad():  # every sampled id a speech id: see the module docstring
        model.lm.llm.model.embed_tokens.weight[: model.lm.speech_start].zero_()
    return model


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def lm_tokens_per_second(model: TouchTTS, tokens: int, use_cache: bool) -> float:
    ids, lengths, text_lengths = model._prompts([TEXT])
    generators = model._generators(0, 1)
    with torch.inference_mode():
        seconds, (out, n) = timed(
            lambda: model.lm.generate(
                ids, lengths, text_lengths, generators, use_cache=use_cache, max_new_tokens=tokens
            )
        )
    assert int(n[0]) == tokens
    return tokens / seconds


def flow_rtf(model: TouchTTS, tokens: int, streamed: bool) -> float:
    codes = torch.randint(0, model.codebook_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    audio_seconds = model.config.flow.mel_frames(tokens) * model.config.flow.hop_length / model.sample_rate
    with torch.inference_mode():
        if streamed:
            stream = model.flow.stream(model.config.stream_chunk_frames, model.config.stream_left_chunks)
            seconds, _ = timed(lambda: (stream.push(codes[0]), stream.finish()))
        else:
            seconds, _ = timed(lambda: model.flow.sample(codes, torch.tensor([tokens])))
    return seconds / audio_seconds


def latencies(model: TouchTTS, tokens: int) -> tuple[float, float, float]:
    """(first streamed mel piece, whole streamed utterance, whole offline utterance), in seconds."""
    start = time.perf_counter()
    first = None
    for _ in model.stream_mel(TEXT, max_tokens=tokens):
        first = first if first is not None else time.perf_counter() - start
    streamed = time.perf_counter() - start
    start = time.perf_counter()
    model.decode_mel(model.encode(TEXT, max_tokens=tokens))
    return first, streamed, time.perf_counter() - start


def measure(size: str, seconds: float) -> dict:
    tokens = int(seconds * 25)
    _, model = timed(lambda: build(size))
    lm_tokens_per_second(model, 4, True)  # warm-up
    cached = lm_tokens_per_second(model, tokens, use_cache=True)
    uncached = lm_tokens_per_second(model, tokens, use_cache=False)
    offline_rtf = flow_rtf(model, tokens, streamed=False)
    streamed_rtf = flow_rtf(model, tokens, streamed=True)
    first, streamed, whole = latencies(model, tokens)
    audio_seconds = model.config.flow.mel_frames(tokens) * model.config.flow.hop_length / model.sample_rate
    row = {
        "size": size,
        "audio_seconds": round(audio_seconds, 2),
        "lm_tokens_per_s_cached": round(cached, 1),
        "lm_tokens_per_s_uncached": round(uncached, 1),
        "kv_cache_speedup": round(cached / uncached, 2),
        "flow_rtf_offline": round(offline_rtf, 3),
        "flow_rtf_streamed": round(streamed_rtf, 3),
        "first_chunk_s": round(first, 3),
        "whole_utterance_s": round(whole, 3),
        "rtf_streaming": round(streamed / audio_seconds, 3),
        "first_chunk_latency_ratio": round(first / whole, 3),
    }
    print(
        f"{size:8s} {audio_seconds:5.1f} s | LM {cached:7.1f} tok/s cached vs {uncached:7.1f} uncached "
        f"(x{cached / uncached:.2f}) | flow RTF offline {offline_rtf:.3f}, streamed {streamed_rtf:.3f} | "
        f"first piece {first:.3f} s of {whole:.3f} s whole (ratio {first / whole:.3f}), "
        f"streamed RTF {streamed / audio_seconds:.3f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length at the tiny size")
    parser.add_argument("--default-seconds", type=float, default=2.0, help="utterance length at the default size")
    parser.add_argument("--skip-default", action="store_true", help="measure the tiny size only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads", flush=True)
    print(f"LM limit for the text: {LMConfig().max_new_per_text_token} x {len(TEXT)} new tokens", flush=True)
    tiny = measure("tiny", args.seconds)
    default = None if args.skip_default else measure("default", args.default_seconds)
    result = {
        "bench": "touchtts",
        "kv_cache_speedup": tiny["kv_cache_speedup"],
        "rtf_streaming": tiny["rtf_streaming"],
        "first_chunk_latency_ratio": tiny["first_chunk_latency_ratio"],
        "seconds": tiny["audio_seconds"],
        "tiny": tiny,
        "default": default,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
