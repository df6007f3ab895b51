"""`make demo` hook: tokenunify-tiny segments a held-out synthetic EM volume.

Writes ``tokenunify_demo.png`` (raw slice, predicted affinities, segmentation, ground truth) under
``out_dir`` and returns one row with VOI / ARAND and the time per volume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MODEL = "tokenunify-tiny"
VOLUME_SEED = 999  # not among the training / evaluation seeds of em_volume/train_tiny.py


def _colors(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    palette = rng.uniform(0.2, 1.0, (int(labels.max()) + 1, 3))
    palette[0] = 0
    return palette[labels]


def run(out_dir: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import zoo
    from em_volume.segment import widen_border
    from em_volume.synth import SynthConfig, make_volume
    from zoo.metrics.volume import segmentation_scores

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.load(MODEL, device="cpu")
    raw, labels = make_volume(VOLUME_SEED, SynthConfig(shape=(32, 64, 160)))
    gt = widen_border(labels)
    start = time.perf_counter()
    seg, affs = model.segment(raw, return_affinities=True, batch_size=8)
    seconds = time.perf_counter() - start
    tokens = model.encode(raw)
    seg = seg.numpy()
    scores = segmentation_scores(gt, seg)
    z = raw.shape[0] // 2
    panels = [
        (f"raw (z={z})", raw[z], "gray"),
        ("affinities (z, y, x as RGB)", np.moveaxis(affs[:, z].numpy(), 0, -1), None),
        ("segmentation", _colors(seg[z].astype(np.int64) % 4096), None),
        ("ground truth", _colors(gt[z] % 4096), None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (title, image, cmap) in zip(axes, panels):
        ax.imshow(image, cmap=cmap)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(
        f"{MODEL}: VOI {scores['voi']:.3f} (split {scores['voi_split']:.3f}, merge {scores['voi_merge']:.3f}), "
        f"ARAND {scores['arand']:.3f}, {seconds:.1f} s"
    )
    fig.tight_layout()
    picture = out_dir / "tokenunify_demo.png"
    fig.savefig(picture, dpi=80)
    plt.close(fig)
    logger.info("wrote %s", picture)
    return [
        {
            "model": MODEL,
            "modality": "em_volume",
            "input": f"synthetic EM volume {raw.shape[0]}x{raw.shape[1]}x{raw.shape[2]} (seed {VOLUME_SEED})",
            "tokens": int(tokens.embeddings.shape[1]),
            "bits_per_unit": None,  # continuous Mamba features, not discrete ids
            "quality": f"VOI {scores['voi']:.3f} / ARAND {scores['arand']:.3f}",
            "seconds_per_item": round(seconds, 2),
        }
    ]


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run(Path(sys.argv[1] if len(sys.argv) > 1 else "out")), indent=1))
