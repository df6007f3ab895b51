import pytest
import torch

from zoo.errors import InputError
from zoo.quant import FSQ, VectorQuantizer


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [3] * 8])  # FlexTok 64,000 ids; S3Tokenizer v2 6,561
def test_fsq_every_id_round_trips_exactly(levels):
    fsq = FSQ(levels)
    ids = torch.arange(fsq.codebook_size)
    assert torch.equal(fsq.codes_to_ids(fsq.ids_to_codes(ids)), ids)


@pytest.mark.parametrize("levels,bound_scale", [([8, 8, 8, 5, 5, 5], 1 + 1e-3), ([3] * 8, 1 - 1e-3)])
def test_fsq_codes_of_quantize_are_the_codes_of_its_ids(levels, bound_scale):
    fsq = FSQ(levels, bound_scale=bound_scale)
    codes, ids = fsq.quantize(3 * torch.randn(4, 100, len(levels), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(fsq.ids_to_codes(ids), codes)


def test_fsq_ids_stay_in_range_for_extreme_inputs():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    _, ids = fsq.quantize(1e4 * torch.randn(2, 256, 6))
    assert ids.dtype == torch.int64 and 0 <= ids.min() and ids.max() < fsq.codebook_size


def test_fsq_reaches_every_level_in_each_dimension():
    fsq = FSQ([8, 5])
    _, ids = fsq.quantize(torch.linspace(-6, 6, 2001)[:, None].expand(-1, 2))
    digits = fsq.ids_to_codes(ids) * torch.tensor([4.0, 2.0])
    assert sorted(set(digits[:, 0].tolist())) == [-4, -3, -2, -1, 0, 1, 2, 3]
    assert sorted(set(digits[:, 1].tolist())) == [-2, -1, 0, 1, 2]


def test_fsq_first_dimension_is_the_least_significant_digit():
    fsq = FSQ([3] * 8, bound_scale=0.999)
    z = torch.full((1, 8), -5.0)
    z[0, 0] = 5.0  # digit 2 in dim 0, digit 0 elsewhere
    assert fsq.quantize(z)[1].item() == 2


def test_fsq_gradient_passes_straight_through():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    z = torch.randn(3, 6, requires_grad=True)
    codes, _ = fsq.quantize(z)
    codes.sum().backward()
    assert z.grad is not None and torch.all(z.grad != 0)


def test_fsq_rejects_ids_outside_the_codebook():
    with pytest.raises(InputError, match="6561"):
        FSQ([3] * 8).ids_to_codes(torch.tensor([6561]))


def test_fsq_derived_tables_stay_out_of_the_state_dict():
    assert FSQ([8, 8, 8, 5, 5, 5]).state_dict() == {}


def test_vq_returns_the_nearest_codeword():
    vq = VectorQuantizer(64, 8)
    x = torch.randn(5, 7, 8, generator=torch.Generator().manual_seed(1))
    _, ids = vq.quantize(x)
    brute = torch.cdist(x.reshape(-1, 8), vq.embed).argmin(-1).reshape(5, 7)
    assert torch.equal(ids, brute)


def test_vq_normalize_input_searches_with_unit_vectors():
    vq = VectorQuantizer(32, 4, normalize_input=True)
    x = torch.randn(10, 4)
    assert torch.equal(vq.nearest(x), vq.nearest(100 * x))


def test_vq_gradient_passes_straight_through():
    vq = VectorQuantizer(16, 4)
    x = torch.randn(6, 4, requires_grad=True)
    q, _ = vq.quantize(x)
    (q * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(4.0).expand(6, 4))


def test_vq_output_equals_codewords_of_its_ids():
    vq = VectorQuantizer(16, 4)
    q, ids = vq.quantize(torch.randn(3, 4))
    assert torch.equal(q, vq.ids_to_codes(ids))


@pytest.mark.parametrize("legacy", [False, True])
def test_vq_loss_pulls_codewords_and_inputs_together_with_beta_on_the_right_term(legacy):
    vq = VectorQuantizer(8, 4, learnable=True)
    x = torch.randn(5, 4, requires_grad=True)
    _, ids = vq.quantize(x)
    loss = vq.loss(x, ids, beta=0.25, legacy=legacy)
    loss.backward()
    gap = vq.ids_to_codes(ids).detach() - x.detach()  # e - x
    assert loss.item() == pytest.approx(1.25 * gap.pow(2).mean().item(), rel=1e-6)
    # the input side is pulled by the commitment term, the codebook side by the codebook term
    input_weight, codebook_weight = (1.0, 0.25) if legacy else (0.25, 1.0)
    torch.testing.assert_close(x.grad, -2 * input_weight * gap / gap.numel())
    expected = torch.zeros_like(vq.embed).index_add_(0, ids, 2 * codebook_weight * gap / gap.numel())
    torch.testing.assert_close(vq.embed.grad, expected)
