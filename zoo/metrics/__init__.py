"""Metrics shared across families, one module per kind of data, so every family reports the same way.

- ``zoo.metrics.tokens``: bits per unit (per byte, pixel, second, frame, voxel), codebook usage and perplexity.
- ``zoo.metrics.text``: fertility, bytes and characters per token, cross-language parity.
- ``zoo.metrics.image``: PSNR, SSIM.
- ``zoo.metrics.pose``: MPJPE (protocol 1), P-MPJPE (protocol 2), mean velocity error.
- ``zoo.metrics.volume``: VOI split/merge, adapted Rand error.
"""
