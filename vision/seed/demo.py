"""SEED demo: tokenize the bundled scenes with seed-tiny, draw them back from their 32 tokens, one grid.

    python -m vision.seed.demo [OUT_DIR]

The grid has one row per image: the picture, then its reconstruction from the 32 tokens at two seeds.
SEED's tokens are semantic: the drawing keeps what the picture shows (count, colour, shape, place), not its
pixels.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import torch

MODEL = "seed-tiny"


def run(out_dir: Path) -> list[dict]:
    import zoo
    from vision.base import picture_grid

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load(MODEL)
    paths = model.sample_inputs()
    images = model.preprocess(paths)
    start = time.perf_counter()
    tokens = model.encode(images)
    drawings = [model.decode(tokens, seed=0)]
    seconds = (time.perf_counter() - start) / len(paths)  # one encode and one decode per image
    drawings.append(model.decode(tokens, seed=1))
    similarity = model.embedding_similarity(paths, model.postprocess(drawings[0]))
    ids = tokens.ids.flatten()
    picture_grid([model.pixel_targets(images), *drawings]).save(out_dir / "seed_tiny_grid.png")
    size = model.config.image_size
    return [
        {
            "model": MODEL,
            "modality": "image",
            "input": f"{len(paths)} bundled {size}x{size} scenes",
            "tokens": tokens.num_positions,
            "bits_per_unit": round(tokens.num_positions * math.log2(model.codebook_size) / size**2, 4),
            "unit": "pixel",
            "quality": f"reconstruction embedding cosine {similarity.mean():.2f}, codebook usage "
            f"{ids.unique().numel()}/{model.codebook_size}",
            "seconds_per_item": round(seconds, 3),
        }
    ]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
    with torch.no_grad():
        for row in run(out):
            print(row)
    print(f"grid written to {out / 'seed_tiny_grid.png'}")
