"""Parity with upstream HoT, driven by every fixture folder under $TOKENZOO_PARITY_DIR/hot.

Each folder's config.json says what it holds: a model fixture (``model``: upstream weights, one forward's
input, output and intermediates) or function-level clustering fixtures (``cases``). Every size comes from
config.json and the weight shapes; tolerances from the fixture README (atol 1e-5, rtol 1e-4; indices exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import parity_params, require_fixture
from video_pose.convert import convert_state_dict, read_upstream_state_dict
from video_pose.flops import count_flops
from video_pose.hot import token_pruning_cluster

ATOL, RTOL = 1e-5, 1e-4


def fixtures_holding(kind: str, tensor: str | None = None) -> list:
    """Fixture params of one kind ("model" or "cases"), optionally only those whose io stores ``tensor``."""

    def holds(fixture_dir: Path) -> bool:
        if kind not in json.loads((fixture_dir / "config.json").read_text()):
            return False
        if tensor is None:
            return True
        with safe_open(str(fixture_dir / "io.safetensors"), framework="pt") as f:
            return tensor in f.keys()

    return parity_params("hot", where=holds)


def load_fixture(fixture_dir: Path) -> tuple[dict, dict]:
    return json.loads((fixture_dir / "config.json").read_text()), load_file(str(fixture_dir / "io.safetensors"))


def model_fixture(fixture_dir):
    require_fixture(fixture_dir, "hot")
    return load_fixture(fixture_dir)


def build_model(fixture_dir: Path, config: dict):
    """Our model of the fixture's arch, sized by its weights and constants, with upstream's weights loaded."""
    constants = config["constants"]
    options = {"num_heads": constants["num_heads"]}
    if "token_num" in constants:
        options.update(kept_frames=constants["token_num"], prune_before_block=constants["layer_index"])
        options["knn_k"] = constants.get("knn_k", 2)
    arch = config["model"].replace("_", "-")
    return convert_state_dict(arch, read_upstream_state_dict(fixture_dir / "weights.safetensors"), **options)


def run_like_upstream(model, config: dict, x: torch.Tensor, **kwargs):
    trace: dict = {}
    torch.manual_seed(config["seeds"]["forward_seed"])  # upstream seeds right before the call
    with torch.no_grad():
        out, _ = model(x, trace=trace, **kwargs)
    return out, trace


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, name: str):
    if theirs.dtype == torch.int64:
        assert ours.dtype == torch.int64, name
        assert torch.equal(ours, theirs), f"{name}: {ours.tolist()} != {theirs.tolist()}"
    else:
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_model_output_matches_upstream(fixture_dir):
    config, io = model_fixture(fixture_dir)
    model = build_model(fixture_dir, config)
    out, _ = run_like_upstream(model, config, io["input_2d"])
    assert_same(out, io["output"], "output")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_index"))
def test_parity_hot_kept_frame_indices_match_upstream_exactly(fixture_dir):
    config, io = model_fixture(fixture_dir)
    _, trace = run_like_upstream(build_model(fixture_dir, config), config, io["input_2d"])
    for name in ("tpc_index", "tpc_index_topk", "tpc_idx_cluster"):
        assert_same(trace[name], io[name], name)


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_every_stored_intermediate_matches_upstream(fixture_dir):
    config, io = model_fixture(fixture_dir)
    _, trace = run_like_upstream(build_model(fixture_dir, config), config, io["input_2d"])
    stored = sorted(set(io) - {"input_2d", "output"})
    assert stored, "the fixture stores no intermediates"
    for name in stored:
        assert name in trace, f"our forward does not expose {name}"
        ours, theirs = trace[name], io[name]
        if name == "tpc_score":  # TPC-MixSTE's forced centre is -inf in both
            assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), name
            ours, theirs = ours.masked_fill(ours.isinf(), 0), theirs.masked_fill(theirs.isinf(), 0)
        assert_same(ours, theirs, name)


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_noise"))
def test_parity_hot_injected_noise_reproduces_upstream_under_any_seed(fixture_dir):
    config, io = model_fixture(fixture_dir)
    model = build_model(fixture_dir, config)
    torch.manual_seed(config["seeds"]["forward_seed"] + 12345)
    with torch.no_grad():
        out, _ = model(io["input_2d"], noise=io["tpc_noise"])
    assert_same(out, io["output"], "output with injected noise")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_padded_repeat_sample_alone_matches_its_batch_row(fixture_dir):
    config, io = model_fixture(fixture_dir)
    model = build_model(fixture_dir, config)
    padded = io["input_2d"][1:2]  # sample 1: edge-padded copies of its first and last real frames
    noise = io["tpc_noise"][1:2] if "tpc_noise" in io else None
    trace: dict = {}
    with torch.no_grad():
        out, _ = model(padded, noise=noise, trace=trace)
    assert_same(out, io["output"][1:2], "padded sample output")
    if "tpc_index" in io:
        assert_same(trace["tpc_index"], io["tpc_index"][1:2], "padded sample kept frames")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_density"))
def test_parity_hot_tie_break_noise_is_added_to_the_density(fixture_dir):
    config, io = model_fixture(fixture_dir)
    _, trace = run_like_upstream(build_model(fixture_dir, config), config, io["input_2d"])
    torch.testing.assert_close(trace["tpc_density"], io["tpc_density"], atol=2e-7, rtol=0)
    assert not torch.equal(trace["tpc_density"], trace["tpc_density_raw"])


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_flops_and_params_match_upstream_counts(fixture_dir):
    config, _ = model_fixture(fixture_dir)
    expected = config["flops_B1"][config["model"]]
    model = build_model(fixture_dir, config)
    counted = count_flops(model, tuple(expected["input_shape"]))
    assert counted["params"] == expected["params_total"]
    assert counted["flops_total"] == expected["flop_counter_mode_total"]
    assert counted["by_op"] == {k.removeprefix("aten."): v for k, v in expected["flop_counter_mode_by_op"].items()}


@pytest.mark.parametrize("fixture_dir", fixtures_holding("cases"))
def test_parity_hot_cluster_functions_match_upstream(fixture_dir):
    require_fixture(fixture_dir, "hot")
    config, io = load_fixture(fixture_dir)
    for case, spec in config["cases"].items():
        for call in ("dpc", "dpc_center"):
            if call not in spec["calls"]:
                continue
            args = spec["calls"][call]["args"]
            center = args.get("center")
            kept = args["cluster_num"] + (1 if center is not None else 0)
            torch.manual_seed(spec["calls"][call]["seed"])
            result = token_pruning_cluster(io[f"{case}.x"], kept, k=args["k"], center=center)
            prefix = f"{case}.{call}."
            for name in ("noise", "dist_matrix", "dist_nearest", "density_raw", "density", "delta", "score"):
                ours, theirs = getattr(result, name), io[prefix + name]
                finite = torch.isfinite(theirs)
                assert torch.equal(torch.isfinite(ours), finite), prefix + name
                assert_same(ours[finite], theirs[finite], prefix + name)
            assert_same(result.index_topk, io[prefix + "index_topk"], prefix + "index_topk")
            assert_same(result.idx_cluster, io[prefix + "idx_cluster"], prefix + "idx_cluster")
            sorted_key = prefix + ("index_with_center_sorted" if center is not None else "index_sorted")
            assert_same(result.index, io[sorted_key], sorted_key)
