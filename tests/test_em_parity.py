"""TokenUnify against upstream, data-driven: every fixture folder under $TOKENZOO_PARITY_DIR/tokenunify.

Sizes come from each fixture's config.json and weight shapes, never from this file, so a second fixture
set with other widths, depths, d_state, seeds and inputs runs through the same tests. Tolerances are the
fixture README's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from em_volume.mamba import Mamba, MambaLayer, selective_scan
from em_volume.pretext import cover_tokens_numpy, minmax_scale, prefix_tokens_numpy
from tests.helpers import parity_params, require_fixture

FAMILY = "tokenunify"


def fixture(fixture_dir):
    config = json.loads((fixture_dir / "config.json").read_text())
    return config, load_file(fixture_dir / "weights.safetensors"), load_file(fixture_dir / "io.safetensors")


def folders(kind):
    """Fixture folders of one kind (mamba_layer, mamba_plain, model, pretext), matched by name."""
    return parity_params(FAMILY, where=lambda folder: folder.name == kind) or [pytest.param(None, id=f"{kind}-missing")]


def max_diff(a, b):
    return (a.detach().float() - b.float()).abs().max().item()


def mamba_from_weights(weights, prefix, bimamba_type, nslices=5, backend="chunked"):
    d_inner, d_state = weights[f"{prefix}A_log"].shape
    d_model = weights[f"{prefix}in_proj.weight"].shape[1]
    dt_rank = weights[f"{prefix}dt_proj.weight"].shape[1]
    d_conv = weights[f"{prefix}conv1d.weight"].shape[-1]
    return dict(
        d_model=d_model,
        d_state=d_state,
        d_conv=d_conv,
        expand=d_inner // d_model,
        dt_rank=dt_rank,
        bimamba_type=bimamba_type,
        nslices=nslices,
        scan_backend=backend,
    )


# ---- the three-direction Mamba layer ---------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("fixture_dir", folders("mamba_layer"))
def test_parity_tokenunify_mamba_layer_matches_every_intermediate(fixture_dir, backend):
    require_fixture(fixture_dir, FAMILY)
    config, weights, io = fixture(fixture_dir)
    nslices = config["constructor"]["inner"]["kwargs"].get("nslices", 5)
    kw = mamba_from_weights(weights, "mamba.", "v3", nslices, backend)
    layer = MambaLayer(kw["d_model"], kw["d_state"], kw["d_conv"], kw["expand"], nslices, backend)
    layer.mamba = Mamba(**kw)
    layer.load_state_dict(weights, strict=True)
    trace = {}
    with torch.no_grad():
        out = layer.mamba(io["mamba_input"], trace=trace)
        layer_out = layer(io["layer_input"])
    assert torch.equal(trace["perm_s"], io["perm_s"])
    io_only = {"mamba_input", "mamba_output", "layer_input", "layer_output", "mamba_output_slowpath_NOT_reference"}
    intermediates = sorted(set(io) - io_only - {"perm_s"})
    assert set(intermediates) <= set(trace), sorted(set(intermediates) - set(trace))
    for key in intermediates:
        assert max_diff(trace[key], io[key]) < 1e-5, key
    assert max_diff(out, io["mamba_output"]) < 1e-5
    assert max_diff(layer_out, io["layer_output"]) < 1e-5


@pytest.mark.parametrize("fixture_dir", folders("mamba_layer"))
def test_parity_tokenunify_mamba_layer_differs_from_upstream_one_direction_fallback(fixture_dir):
    require_fixture(fixture_dir, FAMILY)
    config, weights, io = fixture(fixture_dir)
    nslices = config["constructor"]["inner"]["kwargs"].get("nslices", 5)
    mamba = Mamba(**mamba_from_weights(weights, "mamba.", "v3", nslices))
    mamba.load_state_dict({k[len("mamba.") :]: v for k, v in weights.items() if k.startswith("mamba.")})
    with torch.no_grad():
        out = mamba(io["mamba_input"])
    assert max_diff(out, io["mamba_output_slowpath_NOT_reference"]) > 1e-2


# ---- the plain Mamba-1 block ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("fixture_dir", folders("mamba_plain"))
def test_parity_tokenunify_plain_mamba_matches_forward_scan_and_last_state(fixture_dir, backend):
    require_fixture(fixture_dir, FAMILY)
    _, weights, io = fixture(fixture_dir)
    mamba = Mamba(**mamba_from_weights(weights, "", None, backend=backend))
    mamba.load_state_dict(weights, strict=True)
    trace = {}
    with torch.no_grad():
        out = mamba(io["input"], trace=trace)
        _, last = selective_scan(
            trace["conv_out"],
            trace["delta_raw"],
            -torch.exp(mamba.A_log),
            trace["B"],
            trace["C"],
            mamba.D,
            trace["xz"].chunk(2, dim=1)[1],
            mamba.dt_proj.bias,
            True,
            return_last_state=True,
            backend=backend,
        )
    for key in ("xz", "conv_out", "delta_raw", "delta", "B", "C", "y_ungated", "y"):
        assert max_diff(trace[key], io[key]) < 1e-5, key
    assert max_diff(out, io["output"]) < 1e-5
    assert max_diff(last, io["last_state"]) < 1e-5


@pytest.mark.parametrize("fixture_dir", folders("mamba_plain"))
def test_parity_tokenunify_plain_mamba_step_decoding_matches(fixture_dir):
    require_fixture(fixture_dir, FAMILY)
    _, weights, io = fixture(fixture_dir)
    mamba = Mamba(**mamba_from_weights(weights, "", None))
    mamba.load_state_dict(weights, strict=True)
    x = io["input"]
    conv_state, ssm_state = mamba.initial_state(x.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, conv_state, ssm_state = mamba.step(x[:, t : t + 1], conv_state, ssm_state)
            outs.append(y)
    assert max_diff(torch.cat(outs, dim=1), io["step_output"]) < 1e-5
    assert max_diff(ssm_state, io["step_final_ssm_state"]) < 1e-5
    assert max_diff(conv_state, io["step_final_conv_state"]) < 1e-5


# ---- the whole network, loaded through convert.py --------------------------------------------------
@pytest.mark.parametrize("fixture_dir", folders("model"))
def test_parity_tokenunify_network_matches_every_module_output(fixture_dir, tmp_path):
    require_fixture(fixture_dir, FAMILY)
    import zoo
    from em_volume.convert import convert_checkpoint

    config, _, io = fixture(fixture_dir)
    kwargs = config["constructor"]["kwargs"]
    model = zoo.load(convert_checkpoint("tokenunify", fixture_dir / "weights.safetensors", tmp_path / "m"))
    assert list(model.config.depths) == kwargs["depths"] and list(model.config.feat_size) == kwargs["feat_size"]
    assert model.config.hidden_size == kwargs["hidden_size"]
    assert sum(p.numel() for p in model.parameters()) == config["derived"]["n_params"]
    seen = {}
    modules = dict(model.named_modules())
    hooked = [k for k in io if k not in ("input", "output")]
    for name in hooked:
        modules[name].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        output = model(io["input"])
    assert max_diff(output, io["output"]) < 1e-4
    for name in hooked:
        tight = name == "out" or name.startswith(("vit.stages.", "vit.mlps."))
        assert max_diff(seen[name], io[name]) < (1e-4 if tight else 1e-3), name


# ---- pre-training: masking replays, AR model with its head, losses --------------------------------
@pytest.mark.parametrize("fixture_dir", folders("pretext"))
def test_parity_tokenunify_masking_replays_upstream_draws_exactly(fixture_dir):
    require_fixture(fixture_dir, FAMILY)
    config, _, io = fixture(fixture_dir)
    crop = minmax_scale(io["small.crop_uint8"].numpy())
    assert np.array_equal(crop, io["small.crop"].numpy())
    calls = config["masking_calls"]
    for i, call in enumerate(calls["rt"]):
        masked, indices, ratio = cover_tokens_numpy(
            crop, call["mask_ratio"], call["fill_mode"] == 1, np.random.RandomState(call["np_seed"])
        )
        assert np.array_equal(indices, io[f"rt{i}.indices"].numpy())
        assert ratio == io[f"rt{i}.mask_ratio_used"].item()
        assert np.array_equal(masked, io[f"rt{i}.input"].numpy())
    for i, call in enumerate(calls["nt"]):
        masked, target, k = prefix_tokens_numpy(
            crop, call["fill_with_noise"] == 1, np.random.RandomState(call["np_seed"])
        )
        assert k == io[f"nt{i}.k"].item()
        assert np.array_equal(masked, io[f"nt{i}.input"].numpy())
        assert np.array_equal(target, io[f"nt{i}.next_token"].numpy())
    ar = calls["ar"]
    x_gt = io["ar.x_gt"][0, 0].numpy()
    masked, target, k = prefix_tokens_numpy(x_gt, ar["fill_with_noise"] == 1, np.random.RandomState(ar["np_seed"]))
    assert k == io["ar.k"].item()
    assert np.array_equal(masked, io["ar.input"][0, 0].numpy())
    assert np.array_equal(target, io["ar.next_token_gt"][0, 0].numpy())


def _pretext_model(config, weights, io, with_head: bool):
    from em_volume.convert import infer_config
    from em_volume.tokenunify import TokenUnify

    state = dict(weights) if with_head else {k: v for k, v in weights.items() if not k.startswith("preciever.")}
    head_size = tuple(io["ar.input"].shape[2:])
    options = {"head_input_size": head_size} if with_head else {}
    model = TokenUnify(infer_config(state, **options))
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("fixture_dir", folders("pretext"))
def test_parity_tokenunify_autoregressive_model_outputs_head_and_losses(fixture_dir):
    require_fixture(fixture_dir, FAMILY)
    config, weights, io = fixture(fixture_dir)
    model = _pretext_model(config, weights, io, with_head=True)
    assert tuple(model.config.kernel_size) == tuple(config["constructor"]["rt_model"]["kwargs"]["kernel_size"])
    with torch.no_grad():
        logits = model.forward_logits(io["ar.input"])
        head = model.next_token_logits(logits)
    output, pred = torch.sigmoid(logits), torch.sigmoid(head)
    assert max_diff(output, io["ar.output"]) < 1e-4
    assert max_diff(head, io["ar.next_token_logits"]) < 1e-5
    assert max_diff(pred, io["ar.next_token_pred"]) < 1e-5
    # losses recomputed from our outputs with the paper's definitions (tolerance 1e-6)
    next_all = F.mse_loss(output, io["ar.x_gt"])
    next_token = F.mse_loss(pred, io["ar.next_token_gt"])
    assert abs(next_all.item() - io["ar.loss_next_all"].item()) < 1e-6
    assert abs(next_token.item() - io["ar.loss_next_token"].item()) < 1e-6
    assert abs((next_all + next_token).item() - io["ar.loss_joint"].item()) < 1e-6


@pytest.mark.parametrize("fixture_dir", folders("pretext"))
def test_parity_tokenunify_random_token_model_output_and_loss(fixture_dir):
    require_fixture(fixture_dir, FAMILY)
    config, weights, io = fixture(fixture_dir)
    model = _pretext_model(config, weights, io, with_head=False)
    batch = io["rt_model.output"].shape[0]
    inputs = torch.stack([io[f"rt{i}.input"] for i in range(1, 1 + batch)])[:, None]
    with torch.no_grad():
        output = model(inputs)
    assert max_diff(output, io["rt_model.output"]) < 1e-4
    loss = F.mse_loss(output, io["small.crop"].expand_as(output))
    assert abs(loss.item() - io["rt_model.loss"].item()) < 1e-6
