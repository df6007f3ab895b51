"""The learning-rate schedule the tiny-model trainers share: linear warm-up, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, progress: float, floor: float = 0.0) -> float:
    """The factor on the peak learning rate at optimiser step ``step`` (0-based) with ``progress`` in [0, 1]
    of the run done: it rises linearly over ``warmup`` steps and decays on a half cosine to ``floor``."""
    progress = min(max(progress, 0.0), 1.0)
    return min(1.0, (step + 1) / warmup) * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
