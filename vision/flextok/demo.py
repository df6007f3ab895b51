"""FlexTok demo: tokenize the bundled images with flextok-tiny at several k, decode, draw a grid.

    python -m vision.flextok.demo [OUT_DIR]

The grid has one row per image: the original, then the reconstruction from the first k tokens for
each k. Coarse to fine: few tokens give the layout and colours, more tokens the details.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MODEL = "flextok-tiny"


def run(out_dir: Path) -> list[dict]:
    import zoo
    from vision.base import picture_grid
    from vision.flextok.train_tiny import card_ks
    from zoo.metrics.image import psnr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load(MODEL)
    paths = sorted(SAMPLES.glob("*.png"))
    images = model.preprocess(paths)
    start = time.perf_counter()
    tokens = model.encode(images)
    encode_seconds = time.perf_counter() - start
    ks = card_ks(model.config.num_registers)
    recons, rows = [], []
    pixels = images.shape[-1] * images.shape[-2]
    bits_per_token = math.log2(model.fsq.codebook_size)
    for k in ks:
        start = time.perf_counter()
        recon = model.decode(tokens.truncate(k), seed=0).clamp(-1, 1)
        seconds = (time.perf_counter() - start + encode_seconds) / len(paths)
        recons.append(recon)
        value = psnr(recon, images).mean().item()
        rows.append(
            {
                "model": MODEL,
                "modality": "image",
                "input": f"{len(paths)} bundled {images.shape[-2]}x{images.shape[-1]} images",
                "tokens": k,
                "bits_per_unit": round(k * bits_per_token / pixels, 4),
                "unit": "pixel",
                "quality": f"PSNR {value:.1f} dB (k={k})",
                "seconds_per_item": round(seconds, 3),
            }
        )
    grid = picture_grid([images, *recons])
    grid.save(out_dir / "flextok_tiny_grid.png")
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
    for row in run(out):
        print(row)
    print(f"grid written to {out / 'flextok_tiny_grid.png'}")
