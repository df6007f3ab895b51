"""Throughput of our S3Tokenizer v2 against the `s3tokenizer` package, same weights, same batch, one run.

    python bench/s3tokenizer.py                # full-size v2 (1280 wide, 20 heads, 6 blocks), batch of 8
    python bench/s3tokenizer.py --width 512    # a narrower model when the machine is busy

Weights: the released ONNX file cannot be downloaded here, so upstream's S3TokenizerV2 is built at
full size with a fixed seed (LayerNorms perturbed so none is an identity) and ours loads its
state_dict through audio.s3tokenizer.convert. Input: 8 speech-like clips of mixed lengths (1-8 s by default),
the same float32 waveforms for both. Each side does the whole job: waveform -> log-mel -> ids.
Upstream: its log_mel_spectrogram clip by clip, `padding`, then one `quantize` call on the padded batch.
Ours: `model.encode(list_of_clips)`. Runs alternate and the best of --repeats is kept (a busy
machine only slows runs down). Token ids are compared in the same run.

Where our speed comes from: (1) clips are encoded in passes of similar length, so padded frames
(which upstream computes and then throws away) are mostly not computed; (2) fused
scaled-dot-product attention instead of explicit softmax(QK^T) matrices.

The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# This file is named like the upstream package: drop bench/ from the path so `import s3tokenizer` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def speechlike(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 100 + 80 * torch.rand(1, generator=g)
    wave = sum(torch.sin(2 * torch.pi * k * f0 * t + k) / k for k in range(1, 8))
    envelope = (0.5 + 0.5 * torch.sin(2 * torch.pi * (2 + 3 * torch.rand(1, generator=g)) * t)) ** 2
    return (0.2 * wave * envelope + 0.005 * torch.randn(t.shape, generator=g)).float()


def build_upstream(width: int, heads: int, layers: int, seed: int):
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    torch.manual_seed(seed)
    config = ModelConfig(n_audio_state=width, n_audio_head=heads, n_audio_layer=layers)
    model = S3TokenizerV2("speech_tokenizer_v2_25hz", config).eval()
    g = torch.Generator().manual_seed(seed + 500)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "_ln." in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    return model


def run_upstream(model, clips):
    import s3tokenizer

    mels = [s3tokenizer.log_mel_spectrogram(c) for c in clips]
    mel, mel_len = s3tokenizer.padding(mels)
    codes, lengths = model.quantize(mel, mel_len)
    return [codes[i, : int(n)].long() for i, n in enumerate(lengths)]


def run_ours(model, clips):
    tokens = model.encode(clips)
    return [tokens.ids[i, : int(n)] for i, n in enumerate(tokens.lengths)]


def time_split(model, clips) -> dict[str, float]:
    """Fractions of our encode time by stage, from the torch profiler's per-op self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.encode(clips)
    buckets = {"linear_matmul": 0.0, "attention": 0.0, "conv": 0.0, "stft_mel": 0.0, "other": 0.0}
    total = 0.0
    for event in prof.key_averages():
        t = event.self_cpu_time_total
        name = event.key
        total += t
        if any(k in name for k in ("addmm", "aten::mm", "aten::bmm", "matmul", "linear")):
            buckets["linear_matmul"] += t
        elif "attention" in name or "softmax" in name:
            buckets["attention"] += t
        elif "conv" in name:
            buckets["conv"] += t
        elif any(k in name for k in ("fft", "stft", "log10", "abs", "clamp")):
            buckets["stft_mel"] += t
        else:
            buckets["other"] += t
    return {k: round(v / max(total, 1.0), 3) for k, v in buckets.items()}


def memory_run(minutes: float) -> None:
    """Peak resident memory while encoding ``minutes`` of audio as ONE clip (tiny v2 model, 30 s windows)."""
    import resource

    from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig

    torch.manual_seed(0)
    model = S3Tokenizer(S3TokenizerConfig(variant="v2", n_audio_state=128, n_audio_head=2, n_audio_layer=2)).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wave = torch.empty(int(minutes * 60 * 16000))  # (N,) float32, filled a minute at a time
    for i in range(0, wave.numel(), 60 * 16000):
        piece = speechlike(60.0, seed=i)
        wave[i : i + piece.numel()] = piece[: wave.numel() - i]
    start = time.perf_counter()
    tokens = model.encode(wave)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    input_mb = wave.numel() * 4 / 2**20
    print(
        f"{minutes:.0f} min of audio ({input_mb:.0f} MB float32): {int(tokens.lengths[0])} tokens in {elapsed:.1f} s; "
        f"peak RSS {peak:.0f} MB (before the input existed: {before:.0f} MB)"
    )
    print(
        json.dumps(
            {
                "bench": "s3tokenizer_memory",
                "minutes": minutes,
                "tokens": int(tokens.lengths[0]),
                "peak_rss_mb": round(peak),
                "rss_before_input_mb": round(before),
                "input_mb": round(input_mb),
                "seconds": round(elapsed, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="S3Tokenizer v2 throughput vs the s3tokenizer package")
    parser.add_argument(
        "--memory-minutes",
        type=float,
        default=None,
        help="instead: peak memory while encoding this many minutes as one clip",
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=str, default="1.2,7.9,3.1,5.6,2.4,6.8,4.3,1.7")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.memory_minutes:
        return memory_run(args.memory_minutes)

    from audio.s3tokenizer.convert import model_from_state

    heads = args.width // 64
    upstream = build_upstream(args.width, heads, args.layers, args.seed)
    ours = model_from_state("v2", upstream.state_dict(), heads)
    seconds = [float(s) for s in args.seconds.split(",")]
    clips = [speechlike(s, seed=i) for i, s in enumerate(seconds)]
    audio_seconds = sum(seconds)

    run_ours(ours, clips)  # warm-up both (allocator, thread pools)
    run_upstream(upstream, clips)
    ours_times, upstream_times = [], []
    ids_equal = True
    for _ in range(args.repeats):
        start = time.perf_counter()
        a = run_upstream(upstream, clips)
        upstream_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = run_ours(ours, clips)
        ours_times.append(time.perf_counter() - start)
        ids_equal &= all(torch.equal(x, y) for x, y in zip(a, b))
    t_up, t_ours = min(upstream_times), min(ours_times)
    mismatches = sum(int((x != y).sum()) if x.shape == y.shape else len(x) for x, y in zip(a, b))
    split = time_split(ours, clips)

    print(f"S3Tokenizer v2, width {args.width}, {heads} heads, {args.layers} blocks, threads {torch.get_num_threads()}")
    print(f"batch of {len(clips)} clips: {', '.join(f'{s:.1f}' for s in seconds)} s ({audio_seconds:.1f} s of audio)")
    print(f"{'':<22}{'best s':>10}{'audio s / s':>14}")
    print(f"{'s3tokenizer 0.3.0':<22}{t_up:>10.3f}{audio_seconds / t_up:>14.1f}")
    print(f"{'tokenzoo':<22}{t_ours:>10.3f}{audio_seconds / t_ours:>14.1f}")
    print(f"speedup {t_up / t_ours:.2f}x; ids equal: {ids_equal} ({mismatches} differing ids)")
    print("where our time goes (profiler self CPU time): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in split.items()))
    print(
        json.dumps(
            {
                "bench": "s3tokenizer",
                "speedup_vs_upstream": round(t_up / t_ours, 3),
                "ids_equal": bool(ids_equal),
                "ours_audio_seconds_per_second": round(audio_seconds / t_ours, 2),
                "upstream_audio_seconds_per_second": round(audio_seconds / t_up, 2),
                "batch": len(clips),
                "audio_seconds": round(audio_seconds, 2),
                "width": args.width,
                "layers": args.layers,
                "threads": torch.get_num_threads(),
                "time_split": split,
            }
        )
    )


if __name__ == "__main__":
    main()
