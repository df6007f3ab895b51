"""The parity machinery itself (zoo.parity): the described-keys accessor, the stated tolerances, the error
model and the near-tie rule every family's parity tests use. Synthetic fixtures only, so these run
without ../shared/parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import save_file

from zoo.errors import FixtureKeyError
from zoo.parity import (
    NearTieWarning,
    Tolerance,
    ToleranceTable,
    assert_close,
    assert_close_squared,
    assert_same_choice,
    assert_same_fsq_ids,
    assert_same_selection,
    assert_same_vq_ids,
    cdist_squared_error,
    load_fixture,
    randn_kernel_error,
)
from zoo.quant import FSQ

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_fixture(folder, config: dict, tensors: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "io.safetensors"))
    return folder


# ---- reading only what config.json describes ------------------------------------------------------
@pytest.fixture
def fixture(tmp_path):
    config = {"io_tensors": {"x": {"shape": [2, 3], "dtype": "float32"}, "gone": {"shape": [1], "dtype": "int64"}}}
    return load_fixture(write_fixture(tmp_path / "f", config, {"x": torch.ones(2, 3), "extra": torch.zeros(1)}))


def test_fixture_io_hands_out_a_described_key_and_records_it(fixture):
    assert torch.equal(fixture.io["x"], torch.ones(2, 3))
    assert fixture.io.read == {"x"}
    assert list(fixture.io) == ["x"] and len(fixture.io) == 1 and "x" in fixture.io


def test_fixture_io_refuses_a_key_config_json_does_not_describe_naming_it(fixture):
    with pytest.raises(FixtureKeyError, match="undescribed key 'extra'.*describes 2 keys: gone, x"):
        fixture.io["extra"]
    assert "extra" not in fixture.io and fixture.io.undescribed_stored() == ["extra"]


def test_fixture_io_says_when_a_described_key_is_not_stored(fixture):
    with pytest.raises(FixtureKeyError, match="does not store the described key 'gone'"):
        fixture.io["gone"]
    assert isinstance(FixtureKeyError("k", "f", "p"), KeyError)


def test_fixture_io_checks_each_tensor_against_its_description(tmp_path):
    config = {"io_tensors": {"x": {"shape": [2, None], "dtype": "float32"}, "y": {"shape": [4], "dtype": "int64"}}}
    fx = load_fixture(write_fixture(tmp_path / "f", config, {"x": torch.ones(2, 7), "y": torch.ones(3)}))
    assert fx.io["x"].shape == (2, 7)  # None stands for any size
    with pytest.raises(AssertionError, match=r"y has shape \[3\], config.json says \[4\]"):
        fx.io["y"]


def test_a_family_without_an_io_table_describes_its_keys_from_the_config(tmp_path):
    folder = write_fixture(tmp_path / "f", {"io": {"batch_order": ["a", "b"]}}, {"a.mel": torch.ones(1)})
    with pytest.raises(ValueError, match="no io table"):
        load_fixture(folder)
    fx = load_fixture(folder, lambda config: {f"{c}.mel": None for c in config["io"]["batch_order"]})
    assert list(fx.io) == ["a.mel"]
    with pytest.raises(FixtureKeyError, match="does not store the described key 'b.mel'"):
        fx.io["b.mel"]


def test_missing_fixtures_skip_with_the_reason_and_fail_when_parity_is_required(tmp_path):
    test = tmp_path / "test_missing.py"
    test.write_text(
        "import pytest\nfrom tests.helpers import parity_params, require_fixture\n"
        "@pytest.mark.parametrize('d', parity_params('hot'))\n"
        "def test_parity_hot_x(d):\n    require_fixture(d, 'hot')\n"
    )
    env = {**os.environ, "TOKENZOO_PARITY_DIR": "/nonexistent", "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test)]
    skipped = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert skipped.returncode == 0 and "no hot parity fixtures under /nonexistent/hot" in skipped.stdout
    failed = subprocess.run(cmd, env={**env, "TOKENZOO_REQUIRE_PARITY": "1"}, capture_output=True, text=True, cwd=REPO)
    assert failed.returncode == 1 and "TOKENZOO_REQUIRE_PARITY=1 forbids skipping" in failed.stdout


# ---- stated tolerances ------------------------------------------------------------------------------
def test_tolerance_table_reads_every_form_the_fixture_configs_use():
    table = ToleranceTable(
        {
            "out (logits)": "atol 1e-4",
            "vit.stages.* and vit.mlps.*": "atol 2e-4, rtol 1e-3",
            "rt*/nt* inputs": "exact",
            "ar.output, rt_model.output": "atol 3e-4",
            "other intermediates (diagnostic)": "atol 1e-3",
            "note": "free text",
        }
    )
    assert table["out"] == Tolerance(1e-4) and table["vit.mlps.2"] == Tolerance(2e-4, 1e-3)
    assert table["rt_model.output"] == Tolerance(3e-4)  # the exact name beats the pattern rt*
    assert table["rt0.input"].exact and table["decoder1"] == Tolerance(1e-3)
    assert ToleranceTable("float32: atol 1e-5, rtol 0 for everything")["anything"] == Tolerance(1e-5)
    flat = ToleranceTable({"token_ids": "exact", "mel_atol": 1e-4, "enc_atol": 1e-4, "enc_rtol": 2e-4})
    assert flat["enc"] == Tolerance(1e-4, 2e-4) and flat["mel"] == Tolerance(1e-4) and flat["token_ids"].exact
    assert ToleranceTable({"float_outputs": {"atol": 1e-5, "rtol": 1e-4}})["float_outputs"] == Tolerance(1e-5, 1e-4)
    with pytest.raises(KeyError, match="states no tolerance for 'x'"):
        ToleranceTable({"a": "atol 1"})["x"]


def test_assert_close_holds_upstream_to_atol_plus_rtol_plus_the_error_model_and_names_the_worst_entry():
    expected = torch.tensor([1.0, 100.0, -torch.inf])
    assert_close(expected + torch.tensor([1e-5, 1e-3, 0.0]), expected, Tolerance(1e-5, 1e-5), "x")
    with pytest.raises(AssertionError, match=r"x: 1 of 3 entries outside the budget; worst at \[1\]"):
        assert_close(expected + torch.tensor([0.0, 2e-3, 0.0]), expected, Tolerance(1e-5, 1e-5), "x")
    assert_close(expected + torch.tensor([0.0, 2e-3, 0.0]), expected, Tolerance(1e-5, 1e-5), "x", extra=1e-3)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close(torch.tensor([1.0, 100.0, 0.0]), expected, Tolerance(1.0), "x")
    with pytest.raises(AssertionError, match="differ"):
        assert_close(torch.tensor([1, 3]), torch.tensor([1, 2]), Tolerance(1.0), "ids")  # integers: exact


# ---- the error model ------------------------------------------------------------------------------
def test_cdist_squared_error_bounds_torch_cdist_against_float64_including_the_diagonal():
    g = torch.Generator().manual_seed(0)
    x = 3 + torch.randn(4, 40, 64, generator=g)  # > 25 rows: the matmul formula; large norms: cancellation
    computed = torch.cdist(x, x).double() ** 2
    exact = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist") ** 2
    error, bound = (computed - exact).abs(), cdist_squared_error(x)
    assert (error <= bound).all()
    assert torch.diagonal(computed, dim1=1, dim2=2).max() > 0  # the cancellation the bound is for


def test_squared_comparison_accepts_the_cdist_diagonal_and_still_catches_a_wrong_distance():
    upstream, ours = torch.tensor([0.0, 5e-4, 1.0]), torch.tensor([4.8e-4, 0.0, 1.0])
    with pytest.raises(AssertionError):
        assert_close(ours, upstream, Tolerance(1e-5, 1e-4), "d")
    assert_close_squared(ours, upstream, Tolerance(1e-5, 1e-4), "d", sq_error=3e-7)
    with pytest.raises(AssertionError, match="squared"):
        assert_close_squared(torch.tensor([0.0, 0.0, 1.01]), upstream, Tolerance(1e-5, 1e-4), "d", sq_error=3e-7)


def test_randn_kernel_error_bounds_the_default_kernels_normal_draws():
    code = "import torch; g = torch.Generator().manual_seed(3); print(torch.randn(4096, generator=g).tolist())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    scalar = torch.tensor(json.loads(out))
    here = torch.randn(4096, generator=torch.Generator().manual_seed(3))
    assert ((here - scalar).abs() <= randn_kernel_error(here)).all()
    assert randn_kernel_error(here).max() < 1e-5  # still tells another draw scheme (O(1) apart) from this


# ---- discrete decisions: exact, or one of a near-tie the fixture shows ---------------------------------
def test_a_choice_may_differ_only_where_upstreams_scores_are_tied_within_the_noise():
    scores = torch.tensor([[0.50, 0.5000004, 0.9]])
    with pytest.warns(NearTieWarning, match=r"\[0, 0\] ours 1, upstream 0"):
        assert assert_same_choice(torch.tensor([[1]]), torch.tensor([[0]]), scores, 1e-6, "label") == 1
    with pytest.raises(AssertionError, match="no near-tie there"):
        assert_same_choice(torch.tensor([[2]]), torch.tensor([[0]]), scores, 1e-6, "label")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert assert_same_choice(torch.tensor([[0]]), torch.tensor([[0]]), scores, 1e-6, "label") == 0


def test_a_selection_may_swap_only_frames_at_upstreams_boundary_within_the_noise():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.4999995, 0.2]])
    upstream = torch.tensor([[0, 2]])
    with pytest.warns(NearTieWarning):
        assert_same_selection(torch.tensor([[3, 0]]), upstream, scores, 1e-6, "kept")
    with pytest.raises(AssertionError, match="membership"):
        assert_same_selection(torch.tensor([[0, 4]]), upstream, scores, 1e-6, "kept")


def test_fsq_ids_may_differ_only_by_an_adjacent_level_at_a_digit_on_a_rounding_boundary():
    fsq = FSQ([3, 3], bound_scale=0.999)
    z = torch.tensor([[torch.atanh(torch.tensor(0.5 / 0.999 + 1e-7)).item(), -2.0]])  # digit 0 a hair past 0.5
    _, ids = fsq.quantize(z)
    codes = fsq.ids_to_codes(ids)
    nudged = fsq.codes_to_ids(codes - torch.tensor([[1.0, 0.0]]))  # the other side of that boundary
    with pytest.warns(NearTieWarning, match="FSQ digits"):
        assert_same_fsq_ids(nudged, ids, fsq, z, 1e-6, "ids")
    far = fsq.codes_to_ids(codes + torch.tensor([[0.0, 1.0]]))  # digit 1 sits far from any boundary
    with pytest.raises(AssertionError, match="no near-tie there"):
        assert_same_fsq_ids(far, ids, fsq, z, 1e-6, "ids")


def test_vq_ids_may_differ_only_to_a_codeword_as_near_to_upstreams_input_within_the_noise():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = torch.tensor([[0.6, 0.6 - 1e-7], [0.9, 0.1]])  # row 0: codewords 0 and 1 all but tied
    upstream = torch.tensor([0, 0])
    with pytest.warns(NearTieWarning, match=r"\[0, 0\] ours 1, upstream 0"):
        assert assert_same_vq_ids(torch.tensor([1, 0]), upstream, x, codebook, 1e-6, "ids", normalize=True) == 1
    with pytest.raises(AssertionError, match="no near-tie there"):
        assert_same_vq_ids(torch.tensor([0, 1]), upstream, x, codebook, 1e-6, "ids")
