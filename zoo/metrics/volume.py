"""Segmentation metrics for label volumes: variation of information (split / merge) and adapted Rand error.

Both come from scikit-image (``skimage.metrics``), log base 2, with ground-truth label 0 (boundary /
unlabelled) ignored, as in the EM connectomics benchmarks (CREMI, SNEMI3D) and TokenUnify's evaluation.

- VOI split = H(seg | gt): how much a true object is cut into pieces (over-segmentation).
- VOI merge = H(gt | seg): how much distinct true objects are fused (under-segmentation).
- ARAND = 1 - F-score of the Rand precision and recall over voxel pairs (0 = perfect).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import InputError


def _labels(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.size == 0:
        raise InputError(f"{name} is empty")
    if x.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer labels, got dtype {x.dtype}")
    if x.dtype.kind == "i" and x.min() < 0:
        raise InputError(f"{name} holds negative labels")
    return x.astype(np.uint64, copy=False)


def _pair(gt: Any, seg: Any) -> tuple[np.ndarray, np.ndarray]:
    gt, seg = _labels(gt, "ground truth"), _labels(seg, "segmentation")
    if gt.shape != seg.shape:
        raise InputError(f"ground truth {gt.shape} and segmentation {seg.shape} differ in shape")
    if not (gt != 0).any():
        raise InputError("ground truth has no labelled voxel (all 0)")
    return gt, seg


def variation_of_information(gt: Any, seg: Any) -> dict[str, float]:
    """{"voi_split", "voi_merge", "voi"} in bits, gt label 0 ignored."""
    from skimage.metrics import variation_of_information as skimage_voi

    gt, seg = _pair(gt, seg)
    split, merge = skimage_voi(gt.ravel(), seg.ravel(), ignore_labels=[0])  # (H(seg|gt), H(gt|seg))
    return {"voi_split": float(split), "voi_merge": float(merge), "voi": float(split + merge)}


def adapted_rand_error(gt: Any, seg: Any) -> float:
    """Adapted Rand error (0 = perfect, 1 = worst), gt label 0 ignored."""
    from skimage.metrics import adapted_rand_error as skimage_arand

    gt, seg = _pair(gt, seg)
    return float(skimage_arand(gt.ravel(), seg.ravel(), ignore_labels=[0])[0])


def segmentation_scores(gt: Any, seg: Any) -> dict[str, float]:
    """VOI split/merge/total and ARAND in one dict."""
    return {**variation_of_information(gt, seg), "arand": adapted_rand_error(gt, seg)}
