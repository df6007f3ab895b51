"""SEED encode speed at the release shape, against a large matmul in the same run.

    python bench/seed.py [--batches 1,16] [--device cpu]

Shape: the released SEED-LLaMA tokenizer (224 px, EVA ViT-g 1408 x 39 blocks, BERT-base causal Q-Former,
8192 x 32 codebook) with random weights. Timed: encode = CLIP-normalised images -> 32 ids (ViT, ln_vision,
Q-Former, encode_task_layer, VQ search). Reported: images/s at each batch size, FLOPs per image
(torch.utils.flop_counter), achieved GFLOP/s and its fraction of a 2048^3 float32 matmul timed in the same
run (a shared machine drifts: the matmul is re-timed beside each batch and the best rate kept). Prints the
CPU capability and thread count, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import count_flops, matmul_gflops, timed  # noqa: E402  (bench/timing.py, beside this script)

from vision.seed.model import SEED, SEEDConfig  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per batch size (best kept)")
    parser.add_argument("--vit-depth", type=int, default=39, help="39 is the release; fewer only for smoke runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = SEEDConfig(vit_depth=args.vit_depth)
    model = SEED(config, device=device).eval().requires_grad_(False)  # (the FLOP counter's hooks want that)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, {device}")

    def images(b: int) -> torch.Tensor:
        return torch.randn(b, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(b))

    result = {"bench": "seed", "device": str(device), "shape": f"release 224px, ViT-g x {config.vit_depth}"}
    rows = []
    with torch.inference_mode():
        one = images(1).to(device)
        flops = count_flops(lambda: model.tokenize(one))  # also the warm-up
        result["gflops_per_image"] = round(flops / 1e9, 1)
        matmul = matmul_gflops(device)
        for b in [int(v) for v in args.batches.split(",")]:
            x = images(b).to(device)
            seconds = timed(lambda x=x: model.tokenize(x), device, args.repeats)
            matmul = max(matmul, matmul_gflops(device))
            achieved = flops * b / seconds / 1e9
            rows.append((b, b / seconds, achieved))
            result[f"images_per_second_b{b}"] = round(b / seconds, 3)
            result[f"encode_gflops_b{b}"] = round(achieved, 1)
        for b, _, achieved in rows:
            result[f"encode_matmul_fraction_b{b}"] = round(achieved / matmul, 3)
    result["matmul_gflops"] = round(matmul, 1)
    last = rows[-1][0]
    result["encode_matmul_fraction"] = result[f"encode_matmul_fraction_b{last}"]
    result["capability"] = torch.backends.cpu.get_cpu_capability()
    result["threads"] = torch.get_num_threads()
    print(f"FLOPs per image: {flops / 1e9:.1f} G;  matmul {matmul:.1f} GFLOP/s")
    print("| batch | images/s | GFLOP/s | of matmul |\n|---:|---:|---:|---:|")
    for b, rate, achieved in rows:
        print(f"| {b} | {rate:.3f} | {achieved:.1f} | {achieved / matmul:.2f} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
