"""TokenUnify against upstream, data-driven: every fixture folder under $TOKENZOO_PARITY_DIR/tokenunify.

Sizes come from each fixture's config.json and weight shapes, never from this file, so a second fixture
set with other widths, depths, d_state, seeds and inputs runs through the same tests. Tensors are read
through the fixture's ``io`` table (zoo.parity), and tolerances are the ones its config.json states.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from em_volume.mamba import Mamba, MambaLayer, selective_scan
from em_volume.pretext import cover_tokens_numpy, minmax_scale, prefix_tokens_numpy
from tests.helpers import parity_fixture, parity_params
from zoo.parity import ToleranceTable, assert_close

FAMILY = "tokenunify"


def fixture(fixture_dir):
    """(config, upstream weights, described io, stated tolerances) of one fixture folder."""
    fx = parity_fixture(fixture_dir, FAMILY)
    return fx.config, load_file(fx.weights_file), fx.io, ToleranceTable(fx.config["tolerances"])


def kind_of(folder) -> str:
    """What a folder pins down (mamba_layer, mamba_plain, model, pretext): config.json's ``fixture``."""
    config = json.loads((folder / "config.json").read_text())
    return config.get("fixture", folder.name).rsplit("/", 1)[-1]


def folders(kind):
    """Fixture folders of one kind."""
    return parity_params(FAMILY, where=lambda folder: kind_of(folder) == kind) or [
        pytest.param(None, id=f"{kind}-missing")
    ]


def scalar_close(ours, theirs, tol, name):
    assert_close(torch.as_tensor(ours, dtype=theirs.dtype).reshape(theirs.shape), theirs, tol, name)


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
    config, weights, io, tols = fixture(fixture_dir)
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
        assert_close(trace[key], io[key], tols[key], key)
    assert_close(out, io["mamba_output"], tols["mamba_output"], "mamba_output")
    assert_close(layer_out, io["layer_output"], tols["layer_output"], "layer_output")


@pytest.mark.parametrize("fixture_dir", folders("mamba_layer"))
def test_parity_tokenunify_mamba_layer_differs_from_upstream_one_direction_fallback(fixture_dir):
    config, weights, io, tols = fixture(fixture_dir)
    nslices = config["constructor"]["inner"]["kwargs"].get("nslices", 5)
    mamba = Mamba(**mamba_from_weights(weights, "mamba.", "v3", nslices))
    mamba.load_state_dict({k[len("mamba.") :]: v for k, v in weights.items() if k.startswith("mamba.")})
    with torch.no_grad():
        out = mamba(io["mamba_input"])
    control = io["mamba_output_slowpath_NOT_reference"]
    with pytest.raises(AssertionError, match="outside the budget"):
        assert_close(out, control, tols["mamba_output"], "the one-direction fallback")


# ---- the plain Mamba-1 block ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("fixture_dir", folders("mamba_plain"))
def test_parity_tokenunify_plain_mamba_matches_forward_scan_and_last_state(fixture_dir, backend):
    _, weights, io, tols = fixture(fixture_dir)
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
    intermediates = set(io) - {"input", "output", "last_state"} - {k for k in io if k.startswith("step_")}
    assert intermediates and intermediates <= set(trace), sorted(intermediates - set(trace))
    for key in sorted(intermediates):
        assert_close(trace[key], io[key], tols[key], key)
    assert_close(out, io["output"], tols["output"], "output")
    assert_close(last, io["last_state"], tols["last_state"], "last_state")


@pytest.mark.parametrize("fixture_dir", folders("mamba_plain"))
def test_parity_tokenunify_plain_mamba_step_decoding_matches(fixture_dir):
    _, weights, io, tols = fixture(fixture_dir)
    mamba = Mamba(**mamba_from_weights(weights, "", None))
    mamba.load_state_dict(weights, strict=True)
    x = io["input"]
    conv_state, ssm_state = mamba.initial_state(x.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, conv_state, ssm_state = mamba.step(x[:, t : t + 1], conv_state, ssm_state)
            outs.append(y)
    assert_close(torch.cat(outs, dim=1), io["step_output"], tols["step_output"], "step_output")
    assert_close(ssm_state, io["step_final_ssm_state"], tols["step_final_ssm_state"], "step_final_ssm_state")
    assert_close(conv_state, io["step_final_conv_state"], tols["step_final_conv_state"], "step_final_conv_state")


# ---- the whole network, loaded through convert.py --------------------------------------------------
@pytest.mark.parametrize("fixture_dir", folders("model"))
def test_parity_tokenunify_network_matches_every_module_output(fixture_dir, tmp_path):
    import zoo
    from em_volume.convert import convert_checkpoint

    config, _, io, tols = fixture(fixture_dir)
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
    assert_close(output, io["output"], tols["output"], "output")
    for name in hooked:
        assert_close(seen[name], io[name], tols[name], name)


# ---- pre-training: masking replays, AR model with its head, losses --------------------------------
@pytest.mark.parametrize("fixture_dir", folders("pretext"))
def test_parity_tokenunify_masking_replays_upstream_draws_exactly(fixture_dir):
    config, _, io, _ = fixture(fixture_dir)
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
    config, weights, io, tols = fixture(fixture_dir)
    model = _pretext_model(config, weights, io, with_head=True)
    assert tuple(model.config.kernel_size) == tuple(config["constructor"]["rt_model"]["kwargs"]["kernel_size"])
    with torch.no_grad():
        logits = model.forward_logits(io["ar.input"])
        head = model.next_token_logits(logits)
    output, pred = torch.sigmoid(logits), torch.sigmoid(head)
    for name, ours in (("ar.output", output), ("ar.next_token_logits", head), ("ar.next_token_pred", pred)):
        assert_close(ours, io[name], tols[name], name)
    # losses recomputed from our outputs with the paper's definitions
    next_all = F.mse_loss(output, io["ar.x_gt"])
    next_token = F.mse_loss(pred, io["ar.next_token_gt"])
    for name, loss in (("ar.loss_next_all", next_all), ("ar.loss_next_token", next_token)):
        scalar_close(loss, io[name], tols["losses"], name)
    scalar_close(next_all + next_token, io["ar.loss_joint"], tols["losses"], "ar.loss_joint")


def random_token_batch(io) -> list[str]:
    """The masking examples that make rt_model's batch, in order, as config.json's description of
    ``rt_model.output`` lists them ("... on the batch [rt<i>.input for i in [1]] ...")."""
    desc = io.description("rt_model.output").get("desc", "")
    listed = re.search(r"for i in \[([\d,\s]*)\]", desc)
    assert listed, f"config.json does not say which rt<i> examples make rt_model's batch: {desc!r}"
    names = [f"rt{int(i)}" for i in listed[1].split(",") if i.strip()]
    assert len(names) == io["rt_model.output"].shape[0], f"{names} vs a batch of {io['rt_model.output'].shape[0]}"
    return names


@pytest.mark.parametrize("fixture_dir", folders("pretext"))
def test_parity_tokenunify_random_token_model_output_and_loss(fixture_dir):
    config, weights, io, tols = fixture(fixture_dir)
    model = _pretext_model(config, weights, io, with_head=False)
    inputs = torch.stack([io[f"{name}.input"] for name in random_token_batch(io)])[:, None]  # (B, 1, D, H, W)
    with torch.no_grad():
        output = model(inputs)
    assert_close(output, io["rt_model.output"], tols["rt_model.output"], "rt_model.output")
    loss = F.mse_loss(output, io["small.crop"].expand_as(output))
    scalar_close(loss, io["rt_model.loss"], tols["losses"], "rt_model.loss")
