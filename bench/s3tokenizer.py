"""Throughput of our S3Tokenizer v2 against the `s3tokenizer` package and against onnxruntime, one run.

    flock /tmp/tokenzoo-cpu.lock python bench/s3tokenizer.py   # full-size v2 vs the package; 512 wide vs ONNX
    python bench/s3tokenizer.py --width 512                   # a narrower model when the machine is busy
    python bench/s3tokenizer.py --onnx-width 1280             # the ONNX comparison at full size (slow on 2 cores)
    python bench/s3tokenizer.py --no-onnx                     # the package comparison only

Weights: the released ONNX file cannot be downloaded here, so upstream's S3TokenizerV2 is built at
full size with a fixed seed (LayerNorms perturbed so none is an identity) and ours loads its
state_dict through audio.s3tokenizer.convert. Input: 8 speech-like clips of mixed lengths (1-8 s by default),
the same float32 waveforms for both. Each side does the whole job: waveform -> log-mel -> ids.
Upstream: its log_mel_spectrogram clip by clip, `padding`, then one `quantize` call on the padded batch.
Ours: `model.encode(list_of_clips)`. Runs alternate and the best of --repeats is kept (a busy
machine only slows runs down). Token ids are compared in the same run.

Where our speed comes from: (1) clips are encoded in passes of similar length, so padded frames
(which upstream computes and then throws away) are mostly not computed; (2) fused
scaled-dot-product attention instead of explicit softmax(QK^T) matrices. At full width the encoder is
matmul-bound (the profiler puts ~88% of our time in Linear layers on a 2-core AVX2 machine), and both sides
run the same fp32 matmuls, so the ratio is capped by the padding upstream computes: for the default clips
(33 s of audio padded to 8 x 7.9 = 63 s) about 1.9x. Grouping with less padding (max_padding 0 or 0.1)
was measured no faster than the default 0.25: short passes use the matmul units less well.

Against onnxruntime (the runtime CosyVoice's front end runs the released ONNX graph with): our model
(v2, --onnx-width wide, --layers blocks, random weights) is exported with torch.onnx.export (TorchScript
exporter, traced on a padded batch so the key-padding mask is in the graph; dynamic batch and frames) and
run by onnxruntime's CPU provider with default session options and with intra-op threads set to the
machine's cores, on --onnx-clips speech-like clips of --onnx-seconds (default 30 clips of 2-20 s).
Every side gets the same log-mels (ours, computed once per call) and must give identical ids. onnxruntime
runs one clip at a time (as CosyVoice's front end does: no padding) and, as a second configuration, in
batches of --batch padded to the longest clip; ours is ``encode`` on batches of --batch clips.
``speedup_vs_onnxruntime`` is against the fastest onnxruntime configuration. With --bf16, ours also runs
under CPU bf16 autocast as a separate mode (never the default), with its id flip rate against fp32.

The last line is one JSON object with the headline figures (and the CPU capability and threads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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


def onnx_clip_seconds(count: int, low: float, high: float, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return [round(low + (high - low) * float(u), 2) for u in torch.rand(count, generator=g)]


class MelToIds(torch.nn.Module):
    """What the released ONNX graph holds: (B, 128, T) log-mels + (B,) frame counts -> ids (B, S), lengths (B,)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mel, mel_len):
        _, ids, lengths = self.model.encode_mel(mel, mel_len)
        return ids, lengths


def export_onnx(model, path: Path) -> None:
    """Our encoder + quantiser as an ONNX graph, traced on a padded batch of two so the mask path is recorded."""
    import warnings

    mel = torch.randn(2, model.config.n_mels, 400)
    mel_len = torch.tensor([400, 257])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python bools taken from tensors
        torch.onnx.export(
            MelToIds(model).eval(),
            (mel, mel_len),
            str(path),
            dynamo=False,
            input_names=["mel", "mel_len"],
            output_names=["ids", "lengths"],
            dynamic_axes={"mel": {0: "B", 2: "T"}, "mel_len": {0: "B"}, "ids": {0: "B", 1: "S"}, "lengths": {0: "B"}},
            opset_version=17,
        )


def onnx_session(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def mels_of(clips) -> tuple[torch.Tensor, torch.Tensor]:
    from audio.features import log_mel_spectrogram
    from audio.io import pad_batch

    return log_mel_spectrogram(*pad_batch(clips))


def run_onnxruntime(session, clips, batch: int | None) -> list[torch.Tensor]:
    """Clip by clip (batch None: CosyVoice's way, no padding) or in batches padded to their longest clip."""
    out = []
    groups = [[c] for c in clips] if batch is None else [clips[i : i + batch] for i in range(0, len(clips), batch)]
    for group in groups:
        mel, mel_len = mels_of(group)
        ids, lengths = session.run(None, {"mel": mel.numpy(), "mel_len": mel_len.numpy()})
        out.extend(torch.from_numpy(ids[i, : int(n)]).long() for i, n in enumerate(lengths))
    return out


def run_ours_batched(model, clips, batch: int, bf16: bool = False) -> list[torch.Tensor]:
    out = []
    for i in range(0, len(clips), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.extend(run_ours(model, clips[i : i + batch]))
    return out


def onnx_comparison(args, threads: int) -> dict:
    """Ours vs onnxruntime on the same weights and clips; the figures for the JSON line."""
    from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig

    torch.manual_seed(args.seed)
    config = S3TokenizerConfig(
        variant="v2", n_audio_state=args.onnx_width, n_audio_head=args.onnx_width // 64, n_audio_layer=args.layers
    )
    model = S3Tokenizer(config).eval()
    low, high = (float(s) for s in args.onnx_seconds.split("-"))
    seconds = onnx_clip_seconds(args.onnx_clips, low, high, args.seed)
    clips = [speechlike(s, seed=100 + i) for i, s in enumerate(seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s3tokenizer_v2.onnx"
        start = time.perf_counter()
        export_onnx(model, path)
        export_s = time.perf_counter() - start
        peers = {
            "onnxruntime, default options, clip by clip": (onnx_session(path, None), None),
            f"onnxruntime, {threads} threads, clip by clip": (onnx_session(path, threads), None),
            f"onnxruntime, default options, batch {args.batch} padded": (onnx_session(path, None), args.batch),
        }

        def runs_on(items):
            out = {
                n: (lambda s=session, b=batch: run_onnxruntime(s, items, b)) for n, (session, batch) in peers.items()
            }
            out["tokenzoo"] = lambda: run_ours_batched(model, items, args.batch)
            if args.bf16:
                out["tokenzoo bf16 autocast"] = lambda: run_ours_batched(model, items, args.batch, bf16=True)
            return out

        for run in runs_on(clips[:2]).values():  # warm-up: allocator, thread pools, onnxruntime's first run
            run()
        runs = runs_on(clips)
        times: dict[str, list[float]] = {name: [] for name in runs}
        results: dict[str, list[torch.Tensor]] = {}
        for _ in range(args.onnx_repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                results[name] = run()
                times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    reference = results["tokenzoo"]

    def differing(ids: list[torch.Tensor]) -> int:
        return sum(int((x != y).sum()) if x.shape == y.shape else max(len(x), len(y)) for x, y in zip(ids, reference))

    total_ids = sum(len(x) for x in reference)
    audio_seconds = sum(seconds)
    peer_names = [n for n in runs if n.startswith("onnxruntime")]
    fastest_peer = min(peer_names, key=best.get)
    print(
        f"\nvs onnxruntime: v2 width {args.onnx_width}, {args.onnx_width // 64} heads, {args.layers} blocks, "
        f"random weights; {len(clips)} clips of {low:g}-{high:g} s ({audio_seconds:.0f} s of audio); "
        f"ONNX export {export_s:.1f} s"
    )
    print(f"{'':<46}{'best s':>9}{'audio s / s':>13}{'differing ids':>15}")
    for name in runs:
        print(f"{name:<46}{best[name]:>9.2f}{audio_seconds / best[name]:>13.1f}{differing(results[name]):>15}")
    speedup = best[fastest_peer] / best["tokenzoo"]
    print(f"speedup vs the fastest onnxruntime configuration ({fastest_peer}): {speedup:.2f}x")
    figures = {
        "speedup_vs_onnxruntime": round(speedup, 3),
        "onnxruntime_ids_equal": all(differing(results[n]) == 0 for n in peer_names),
        "onnx_fastest_peer": fastest_peer,
        "onnx_speedups": {n: round(best[n] / best["tokenzoo"], 3) for n in peer_names},
        "onnx_width": args.onnx_width,
        "onnx_clips": len(clips),
        "onnx_audio_seconds": round(audio_seconds, 1),
        "onnx_batch": args.batch,
    }
    if args.bf16:
        figures["bf16_speedup"] = round(best["tokenzoo"] / best["tokenzoo bf16 autocast"], 3)
        figures["bf16_id_flip_rate"] = round(differing(results["tokenzoo bf16 autocast"]) / max(total_ids, 1), 5)
    return figures


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
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--onnx-width", type=int, default=512, help="model width for the onnxruntime comparison")
    parser.add_argument("--onnx-clips", type=int, default=30)
    parser.add_argument("--onnx-seconds", default="2-20", help="clip lengths drawn uniformly from LOW-HIGH seconds")
    parser.add_argument("--onnx-repeats", type=int, default=1, help="timed rounds (best kept); 2+ on a quiet machine")
    parser.add_argument("--batch", type=int, default=8, help="clips per encode call (ours; onnxruntime's padded runs)")
    parser.add_argument(
        "--bf16", action="store_true", help="also time ours under CPU bf16 autocast (flip rate vs fp32)"
    )
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

    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    print(f"S3Tokenizer v2, width {args.width}, {heads} heads, {args.layers} blocks, threads {torch.get_num_threads()}")
    print(f"batch of {len(clips)} clips: {', '.join(f'{s:.1f}' for s in seconds)} s ({audio_seconds:.1f} s of audio)")
    print(f"{'':<22}{'best s':>10}{'audio s / s':>14}")
    print(f"{'s3tokenizer 0.3.0':<22}{t_up:>10.3f}{audio_seconds / t_up:>14.1f}")
    print(f"{'tokenzoo':<22}{t_ours:>10.3f}{audio_seconds / t_ours:>14.1f}")
    print(f"speedup {t_up / t_ours:.2f}x; ids equal: {ids_equal} ({mismatches} differing ids)")
    print("where our time goes (profiler self CPU time): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in split.items()))
    onnx = {} if args.no_onnx else onnx_comparison(args, threads=os.cpu_count() or 1)
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
                "capability": torch.backends.cpu.get_cpu_capability(),
                "time_split": split,
                **onnx,
            }
        )
    )


if __name__ == "__main__":
    main()
