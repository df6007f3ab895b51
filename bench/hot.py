"""HoT vs its backbone on the CPU (MixSTE and MotionBERT pairs): FLOPs, latency and achieved GFLOP/s, in one run,
and HoT-MixSTE's reduced-precision (bf16) path.

    flock /tmp/tokenzoo-cpu.lock python bench/hot.py [--frames 243] [--repeats 3] [--pairs mixste motionbert]

Every model at its released configuration (MixSTE: C=512, depth 8; HoT keeps 81 of 243 frames from block 3.
MotionBERT: DSTformer C=512, depth 5; HoT keeps 81 from depth 1), random weights (latency and FLOPs do not
depend on them), batch 1, float32, torch's default threads. Runs alternate between all models so that machine
noise hits them alike; the median is reported. FLOPs come from torch.utils.flop_counter (every matmul-type op)
on the meta device. The machine's matmul rate is measured in the same run with a large square matmul, and each
model's achieved GFLOP/s is given against it.

The bf16 path is bf16 autocast over the float32 model (``with torch.autocast(device_type, dtype=torch.bfloat16)``:
matmuls in bf16, weights, norms and softmax in fp32; TPC's frame selection always runs in fp32). Casting the
weights to bf16 (``zoo.load(name, dtype=torch.bfloat16)``) is reported beside it: it is less accurate (measured
on the tiny model: MPJPE +0.17 mm and 15% kept frames flipped, vs +0.04 mm and 9% under autocast).
bf16 pays off only where matmuls run natively in it: on GPUs and on CPUs whose torch reports fast bf16
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: AVX-512 BF16 or AMX). Elsewhere bf16 matmuls are
emulated, tens of times slower than fp32, so ``bf16_speedup`` is timed only where bf16 is fast (or with
--bf16-time) and the JSON says why otherwise; the bf16/fp32 matmul rate ratio is always measured.
Its accuracy is always measured on the tiny model's held-out clips: the MPJPE change and the kept-frame flip
rate (the share of TPC's kept frames that differ from fp32's), same tie-break noise on both sides.

The last line is one JSON object with the headline figures (and the CPU capability and threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from video_pose.flops import count_flops, default_model  # noqa: E402

PAIRS = {"mixste": ("mixste", "hot-mixste"), "motionbert": ("motionbert", "hot-motionbert")}


def matmul_gflops(size: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def bf16_is_fast() -> bool:
    """Whether this CPU's torch runs bf16 matmuls natively (oneDNN with AVX-512 BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_accuracy(model_name: str = "hot-mixste-tiny", clips: int = 256) -> dict:
    """MPJPE (mm) of the tiny model on its held-out clips in fp32, under bf16 autocast and cast to bf16, and
    TPC's kept-frame flip rate (share of fp32's kept frames not kept in bf16); the same tie-break noise for all."""
    import zoo
    from video_pose.synth import make_split
    from video_pose.train_tiny import EVAL_NOISE_SEED, FRAMES, model_inputs
    from zoo.metrics.pose import mpjpe

    test = make_split("test", clips, FRAMES, seed=0)
    pose3d = torch.from_numpy(test.pose3d)
    out = {}
    for mode in ("fp32", "autocast", "cast"):
        dtype = torch.bfloat16 if mode == "cast" else torch.float32
        model = zoo.load(model_name, dtype=dtype)
        kp2d = model_inputs(test, model.config.in_channels).to(dtype)
        generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        noise = torch.rand(kp2d.shape[0], kp2d.shape[1], generator=generator)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            kept = model.forward_features(kp2d, noise=noise)[1]
            pred = model(kp2d, noise=noise)[0].float()
        out[mode] = (1000 * mpjpe(pred, pose3d).item(), kept)
    fp32_mm, fp32_kept = out["fp32"]
    result = {"model": model_name, "clips": clips, "mpjpe_fp32_mm": fp32_mm}
    for mode in ("autocast", "cast"):
        mm, kept = out[mode]
        flips = sum(len(set(a.tolist()) - set(b.tolist())) for a, b in zip(fp32_kept, kept))
        result[mode] = {"mpjpe_mm": mm, "mpjpe_change_mm": mm - fp32_mm, "kept_frame_flip_rate": flips / kept.numel()}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=243)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS))
    parser.add_argument("--bf16-time", action="store_true", help="time HoT-MixSTE in bf16 even where bf16 is slow")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    names = [n for pair in args.pairs for n in PAIRS[pair]]
    channels = {n: default_model(n).config.in_channels for n in names}
    flops = {n: count_flops(default_model(n), (1, args.frames, 17, channels[n])) for n in names}
    models = {n: default_model(n, device="cpu").eval() for n in names}
    inputs = {c: torch.rand(1, args.frames, 17, c) * 2 - 1 for c in set(channels.values())}
    runs = {
        n: (lambda m=models[n], x=inputs[channels[n]]: m(x, generator=torch.Generator().manual_seed(0))) for n in names
    }
    time_bf16 = "hot-mixste" in names and (bf16_is_fast() or args.bf16_time)
    if time_bf16:

        def hot_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return runs["hot-mixste"]()

        runs["hot-mixste bf16"] = hot_bf16
    times: dict[str, list[float]] = {n: [] for n in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for n, run in runs.items():
                start = time.perf_counter()
                run()
                times[n].append(time.perf_counter() - start)
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(512, repeats=1, dtype=torch.bfloat16)  # small: where bf16 is emulated it is slow
    peak_fp32_small = matmul_gflops(512, repeats=1)

    seconds = {n: statistics.median(t) for n, t in times.items()}
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    print(f"batch 1, {args.frames} frames, {args.repeats} timed runs each (median)")
    header = ("model", "params", "GFLOPs", "Linear GFLOPs", "s/clip", "GFLOP/s", "of matmul")
    print(f"{header[0]:<16} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], (8, 8, 14, 8, 8, 10))))
    for n in names:
        f, rate = flops[n], flops[n]["flops_total"] / seconds[n] / 1e9
        print(
            f"{n:<16} {f['params'] / 1e6:>7.2f}M {f['flops_total'] / 1e9:>8.2f} {f['flops_linear'] / 1e9:>14.2f} "
            f"{seconds[n]:>8.3f} {rate:>8.1f} {rate / peak:>9.0%}"
        )
    if time_bf16:
        print(f"{'hot-mixste bf16':<16} {'':>8} {'':>8} {'':>14} {seconds['hot-mixste bf16']:>8.3f}")
    print(f"large matmul (2048^3): {peak:.1f} GFLOP/s; 512^3 matmul fp32 {peak_fp32_small:.1f}, bf16 {peak_bf16:.2f}")

    result: dict = {"bench": "hot"}
    for pair in args.pairs:
        base, hot = PAIRS[pair]
        suffix = "" if pair == "mixste" else f"_{pair}"
        result[f"flops_ratio{suffix}"] = round(flops[hot]["flops_total"] / flops[base]["flops_total"], 4)
        result[f"flops_ratio_linear{suffix}"] = round(flops[hot]["flops_linear"] / flops[base]["flops_linear"], 4)
        result[f"speedup{suffix}"] = round(seconds[base] / seconds[hot], 3)
        for n in (base, hot):
            result[f"seconds_{n.replace('-', '_')}"] = round(seconds[n], 3)
    result["matmul_gflops_per_s"] = round(peak, 1)
    result["bf16_matmul_vs_fp32"] = round(peak_bf16 / peak_fp32_small, 3)
    result["bf16_fast_on_this_cpu"] = bf16_is_fast()
    if time_bf16:
        result["bf16_speedup"] = round(seconds["hot-mixste"] / seconds["hot-mixste bf16"], 3)
    elif "hot-mixste" in names:
        result["bf16_speedup"] = None
        result["bf16_not_timed"] = (
            f"no fast bf16 matmul on this CPU ({torch.backends.cpu.get_cpu_capability()}): a 512^3 bf16 matmul runs at "
            f"{result['bf16_matmul_vs_fp32']:.3f}x fp32's rate; pass --bf16-time to time it anyway"
        )
    accuracy = bf16_accuracy()
    for mode, what in (("autocast", "bf16 autocast"), ("cast", "weights cast to bf16")):
        a = accuracy[mode]
        print(
            f"{what} on {accuracy['model']} ({accuracy['clips']} held-out clips): MPJPE "
            f"{accuracy['mpjpe_fp32_mm']:.3f} mm (fp32) -> {a['mpjpe_mm']:.3f} mm, "
            f"kept-frame flip rate {a['kept_frame_flip_rate']:.4f}"
        )
    result["bf16_mpjpe_change_mm"] = round(accuracy["autocast"]["mpjpe_change_mm"], 4)
    result["bf16_kept_frame_flip_rate"] = round(accuracy["autocast"]["kept_frame_flip_rate"], 4)
    result["bf16_cast_mpjpe_change_mm"] = round(accuracy["cast"]["mpjpe_change_mm"], 4)
    result["bf16_cast_kept_frame_flip_rate"] = round(accuracy["cast"]["kept_frame_flip_rate"], 4)
    result.update(
        frames=args.frames, threads=torch.get_num_threads(), capability=torch.backends.cpu.get_cpu_capability()
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
