"""The selective-scan backends agree with the sequential reference, forward and backward, short and long."""

from __future__ import annotations

import math

import pytest
import torch

from em_volume.mamba import Mamba, cuda_scan_available, linear_scan, selective_scan


def scan_inputs(batch, channels, states, length, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)
    return {
        "u": make(batch, channels, length),
        "delta": make(batch, channels, length, scale=0.5),
        "A": -torch.exp(make(channels, states, scale=0.5)),
        "B": make(batch, states, length),
        "C": make(batch, states, length),
        "D": make(channels),
        "z": make(batch, channels, length),
        "delta_bias": make(channels, scale=0.3),
    }


def run(inputs, backend, weight):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
    ((y * weight).sum() + last.sum()).backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


def assert_close(a, b, rtol=1e-4):
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= rtol * scale + 1e-12, ((a - b).abs().max().item(), scale)


@pytest.mark.parametrize("length", [1, 5, 64, 337])  # 337 is prime: the chunked scan pads
def test_chunked_scan_matches_reference_forward_and_every_gradient(length):
    inputs = scan_inputs(2, 6, 4, length, seed=length)
    weight = torch.randn(2, 6, length, generator=torch.Generator().manual_seed(1))
    y_ref, last_ref, grads_ref = run(inputs, "reference", weight)
    y, last, grads = run(inputs, "chunked", weight)
    assert_close(y, y_ref)
    assert_close(last, last_ref)
    for name in inputs:
        assert_close(grads[name], grads_ref[name], rtol=1e-3)


@pytest.mark.slow
def test_chunked_scan_matches_reference_gradients_on_a_long_sequence():
    length = 2048
    inputs = scan_inputs(1, 2, 4, length, seed=7)
    weight = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(2))
    y_ref, _, grads_ref = run(inputs, "reference", weight)
    y, _, grads = run(inputs, "chunked", weight)
    assert_close(y, y_ref)
    for name in inputs:
        assert_close(grads[name], grads_ref[name], rtol=1e-3)


def test_chunked_scan_matches_reference_forward_on_a_very_long_sequence():
    inputs = scan_inputs(1, 2, 4, 40_000, seed=3)
    with torch.no_grad():
        y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference")
        y = selective_scan(**inputs, delta_softplus=True, backend="chunked")
    assert_close(y, y_ref)


def test_chunked_scan_stays_finite_where_a_log_space_cumsum_overflows():
    # strong decay over 65k steps: sum of delta*A reaches about -1e5, far past exp's float32 range
    length = 65_536
    inputs = scan_inputs(1, 2, 2, length, seed=4)
    inputs["A"] = torch.full((2, 2), -16.0)
    inputs["delta"] = torch.full((1, 2, length), 0.1)
    inputs["delta_bias"] = None
    with torch.no_grad():
        y = selective_scan(**inputs, backend="chunked")
    assert torch.isfinite(y).all()
    # with decay exp(-1.6) per step the state forgets fast: y_t depends on the last few steps only
    tail = {k: (v[..., -50:] if v is not None and v.dim() == 3 else v) for k, v in inputs.items()}
    with torch.no_grad():
        y_tail = selective_scan(**tail, backend="reference")
    assert_close(y[..., -10:], y_tail[..., -10:])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [3, 40, 257, 1000])
def test_linear_scan_equals_the_plain_recurrence(length, reverse):
    g = torch.Generator().manual_seed(length)
    a, x = (
        torch.rand(length, 3, generator=g, dtype=torch.float64),
        torch.randn(length, 3, generator=g, dtype=torch.float64),
    )
    expected = torch.zeros_like(x)
    state = torch.zeros(3, dtype=torch.float64)
    for t in reversed(range(length)) if reverse else range(length):
        state = a[t] * state + x[t]
        expected[t] = state
    assert torch.allclose(linear_scan(a, x, reverse=reverse), expected, atol=1e-12)


def test_selective_scan_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**scan_inputs(1, 2, 2, 4), backend="triton")


@pytest.mark.skipif(not cuda_scan_available(), reason="needs CUDA and mamba-ssm (pip install tokenzoo[gpu])")
def test_mamba_ssm_kernel_matches_reference_forward_and_gradients():
    device = torch.device("cuda")
    inputs = scan_inputs(2, 8, 4, 512, seed=5, device=device)
    weight = torch.randn(2, 8, 512, device=device)
    y_ref, last_ref, grads_ref = run(inputs, "reference", weight)
    y, last, grads = run(inputs, "mamba_ssm", weight)
    assert_close(y, y_ref)
    assert_close(last, last_ref)
    for name in inputs:
        assert_close(grads[name], grads_ref[name], rtol=1e-3)


def test_mamba_initialises_dt_a_and_d_as_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba(32, d_state=16, bimamba_type="v3")
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound
    for name in ("A_log", "A_b_log", "A_s_log"):
        assert torch.allclose(getattr(m, name), torch.log(torch.arange(1, 17.0)).expand(64, 16))
    for name in ("D", "D_b", "D_s"):
        assert torch.equal(getattr(m, name), torch.ones(64))
    # the extra directions keep nn.Linear's default init: bias bound 1/sqrt(dt_rank), not softplus^-1(dt)
    assert m.dt_proj_b.bias.abs().max() <= 1 / math.sqrt(m.dt_rank)
    assert (torch.nn.functional.softplus(m.dt_proj_b.bias) > 0.1).any()


def test_mamba_parameter_names_follow_mamba_ssm():
    names = set(Mamba(16).state_dict())
    assert names == {
        "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
        "A_log", "D", "out_proj.weight",
    }  # fmt: skip


def test_three_direction_mamba_backends_agree_through_the_whole_layer():
    torch.manual_seed(0)
    layer = Mamba(8, d_state=4, bimamba_type="v3", scan_backend="reference").double()
    x = torch.randn(2, 50, 8, dtype=torch.float64, requires_grad=True)
    y_ref = layer(x)
    y_ref.square().sum().backward()
    grad_ref = x.grad.clone()
    x.grad = None
    layer.scan_backend = "chunked"
    y = layer(x)
    y.square().sum().backward()
    assert_close(y.detach(), y_ref.detach(), rtol=1e-10)
    assert_close(x.grad, grad_ref, rtol=1e-10)


def test_three_direction_mamba_rejects_a_length_not_divisible_by_nslices():
    with pytest.raises(ValueError, match="nslices=5"):
        Mamba(8, bimamba_type="v3")(torch.randn(1, 12, 8))
