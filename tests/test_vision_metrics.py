"""zoo.metrics.image: PSNR and SSIM agree with scikit-image and behave at their limits."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.metrics.image import psnr, ssim


def _pair(seed=0, shape=(2, 3, 24, 20)):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    return a, (a + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)


def test_psnr_matches_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pair()
    expected = [peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=1.0) for i in range(2)]
    assert psnr(a, b, data_range=1.0).tolist() == pytest.approx(expected, abs=1e-9)


def test_ssim_matches_scikit_image_with_gaussian_weights():
    from skimage.metrics import structural_similarity

    a, b = _pair()
    expected = [
        structural_similarity(
            a[i].numpy(),
            b[i].numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for i in range(2)
    ]
    assert ssim(a, b, data_range=1.0).tolist() == pytest.approx(expected, abs=1e-6)


def test_identical_images_have_infinite_psnr_and_unit_ssim():
    a, _ = _pair()
    assert torch.isinf(psnr(a, a)).all()
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0])


def test_psnr_of_a_constant_offset_follows_the_formula():
    a = torch.zeros(1, 3, 16, 16)
    assert psnr(a + 0.2, a, data_range=2.0).item() == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.04)).item())


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(InputError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15))


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(InputError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
