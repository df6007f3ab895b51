"""Parity with upstream HoT, driven by every fixture folder under $TOKENZOO_PARITY_DIR/hot.

Each folder's config.json says what it holds: a model fixture (``model``: upstream weights, one forward's
input, output and intermediates) or function-level clustering fixtures (``cases``). Every size, seed, key
and sample index comes from config.json and the tensor shapes. Tolerances are the fixture's (config.json
``tolerances``, else the README's atol 1e-5, rtol 1e-4; indices exact), compared by zoo.parity's rule.

Where rounding makes them unreachable on another CPU, an error model says what is meaningful instead:
``torch.cdist``'s matmul formula cancels, so distances are compared as squares with its rounding bound
(the diagonal is that rounding alone); the densities carry that bound through exp(-mean d^2); and a
decision (a denser frame, a kept frame, a nearest centre) may differ from upstream's only where the
fixture's own values show a near-tie within those budgets, and then to one of the tied alternatives, with
a NearTieWarning. The decisions themselves are pinned exactly by feeding each clustering stage upstream's
own input values (``test_parity_hot_cluster_stages_replay_upstream_decisions_exactly``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import parity_fixture, parity_params
from video_pose.convert import convert_state_dict, read_upstream_state_dict
from video_pose.flops import count_flops
from video_pose.hot import (
    choose_centres,
    distance_to_denser,
    knn_density,
    nearest_centre,
    token_pruning_cluster,
)
from zoo.parity import (
    UNIT_ROUNDOFF,
    NearTieWarning,
    Tolerance,
    ToleranceTable,
    assert_close,
    assert_close_or_tied,
    assert_close_squared,
    assert_same_choice,
    assert_same_selection,
    cdist_squared_error,
    distance_error,
    gamma,
    load_fixture,
)

FAMILY = "hot"
README_FLOATS = Tolerance(atol=1e-5, rtol=1e-4)  # hot/README.md "Suggested tests and tolerances"
EXACT = Tolerance(exact=True)
CLUSTER = ("noise", "dist_matrix", "dist_nearest", "density_raw", "density", "delta", "score")
CLUSTER_INDICES = ("index_topk", "idx_cluster")


# ---- what each fixture stores, from its config.json (README "io.safetensors contents") ------------
def describe(config: dict) -> dict:
    """The io keys a HoT fixture's config implies: model folders by model, depth and pruning; cluster
    folders by their cases and calls."""
    if "cases" in config:
        keys = {}
        for case, spec in config["cases"].items():
            keys[f"{case}.x"] = {"shape": [spec["B"], spec["N"], spec["C"]]}
            for call, args in cluster_calls(spec):
                prefix = f"{case}.{call}."
                names = (*CLUSTER, *CLUSTER_INDICES, "index_sorted")
                names += ("index_with_center_sorted",) if args.get("center") is not None else ()
                keys.update({prefix + name: None for name in names})
        return keys
    constants, inputs = config["constants"], config["inputs"]
    frames = constants.get("frames", constants.get("maxlen"))
    keys = {"input_2d": {"shape": [inputs["B"], frames, constants["n_joints"], constants["in_channels"]]}}
    keys["output"] = None
    depth = range(constants["depth"])
    if "motionbert" in config["model"]:
        keys.update({f"{kind}.{i}": None for kind in ("block_in", "ts_alpha_logits") for i in depth})
        keys.update(norm_in=None, norm_out=None)
    else:
        keys.update({f"depth_out.{i}": None for i in depth})
    if "token_num" in constants:
        names = (*CLUSTER, *CLUSTER_INDICES, "index", "features_in", "pooled", "gathered")
        keys.update({f"tpc_{name}": None for name in names})
        if not config["model"].startswith("tpc"):
            keys.update(tra_kv_in=None, tra_attn_out=None, tra_out=None)
    return keys


def cluster_calls(spec: dict):
    """(call name, args) of a tpc_cluster case: the entries of ``calls`` that hold ``args``."""
    return [(call, c["args"]) for call, c in spec["calls"].items() if isinstance(c, dict) and "args" in c]


def fixture_of(fixture_dir):
    return parity_fixture(fixture_dir, FAMILY, describe)


def fixtures_holding(kind: str, tensor: str | None = None, sample: str | None = None) -> list:
    """Fixture params of one kind ("model" or "cases"), optionally only those storing ``tensor`` or whose
    config.json ``inputs`` describe a ``sample`` (such as "edge-padded")."""

    def holds(folder: Path) -> bool:
        fixture = load_fixture(folder, describe)
        if kind not in fixture.config:
            return False
        if sample is not None and padded_sample(fixture.config) is None:
            return False
        return tensor is None or tensor in fixture.io

    return parity_params(FAMILY, where=holds)


def padded_sample(config: dict) -> int | None:
    """The batch row config.json ``inputs`` describes as edge-padded (``sample_<i>``), or None."""
    for name, text in config.get("inputs", {}).items():
        match = re.fullmatch(r"sample_(\d+)", name)
        if match and isinstance(text, str) and "padded" in text:
            return int(match[1])
    return None


def floats(config: dict) -> Tolerance:
    if "tolerances" not in config:
        return README_FLOATS
    return ToleranceTable(config["tolerances"])["float_outputs"]


# ---- building and running our model like upstream ----------------------------------------------------
def build_model(fixture):
    """Our model of the fixture's arch, sized by its weights and constants, with upstream's weights loaded."""
    constants = fixture.config["constants"]
    options = {"num_heads": constants["num_heads"]}
    if "token_num" in constants:
        options.update(kept_frames=constants["token_num"], prune_before_block=constants["layer_index"])
        options["knn_k"] = constants["knn_k"]
    arch = fixture.config["model"].replace("_", "-")
    return convert_state_dict(arch, read_upstream_state_dict(fixture.weights_file), **options)


def forward_like_upstream(model, fixture, rows=slice(None), inject_noise=False, seed_offset=0):
    """Our forward on the fixture's input (batch ``rows``), seeded right before the call as upstream was
    (``seed_offset`` moves the seed), or with upstream's noise rows injected. Returns (output, trace).

    Where the model clusters, the clustering is checked against upstream's (``assert_cluster_matches``).
    If a near-tie the fixture shows made our kept frames legitimately differ, the forward is run again on
    upstream's kept frames, so that everything after the pruning compares like with like.
    """
    io = fixture.io
    x = io["input_2d"][rows]
    options = {"noise": io["tpc_noise"][rows]} if inject_noise else {}
    trace: dict = {}
    torch.manual_seed(fixture.config["seeds"]["forward_seed"] + seed_offset)  # upstream seeds right before
    with torch.no_grad():
        out, _ = model(x, trace=trace, **options)
    if "tpc_index" not in io:
        return out, trace
    ours = {name: trace[f"tpc_{name}"] for name in (*CLUSTER, *CLUSTER_INDICES, "index")}
    center = fixture.config["constants"].get("center")
    tol = floats(fixture.config)
    kept = assert_cluster_matches(ours, lambda n: io[f"tpc_{n}"][rows], io["tpc_pooled"][rows], tol, center, "tpc_")
    if not torch.equal(kept, trace["tpc_index"]):
        rerun: dict = {}
        with torch.no_grad():
            out, _ = model(x, index=kept, trace=rerun)
        trace = {**trace, **rerun}  # the clustering of the first run, everything computed again after it
    return out, trace


# ---- the clustering compared under the error model ---------------------------------------------------
def assert_cluster_matches(ours: dict, theirs, features: torch.Tensor, tol: Tolerance, center, name: str):
    """Our clustering values (names as in CLUSTER, plus index_topk, idx_cluster, index) against upstream's
    (``theirs(name)``), for the features upstream clustered (B, F, C). Returns the kept frames to compare
    the rest of the forward with: ours, or upstream's where a near-tie made ours legitimately differ."""
    c = features.shape[-1]
    sq = 2 * cdist_squared_error(features.float()) / c  # ours and upstream's rounding, in units of dist^2
    row_sq = sq.amax(-1)  # (B, F)
    dist = theirs("dist_matrix").double()
    assert_close(ours["noise"], theirs("noise"), EXACT, f"{name}noise")
    assert_close_squared(ours["dist_matrix"], dist, tol, f"{name}dist_matrix", sq_error=sq)
    assert_close_squared(
        ours["dist_nearest"], theirs("dist_nearest"), tol, f"{name}dist_nearest", sq_error=row_sq[..., None]
    )

    # density = exp(-mean d^2) (+ noise): a change of e in every d^2 moves it by at most density * e
    density = theirs("density").double()
    density_error = theirs("density_raw").double() * row_sq
    assert_close(ours["density_raw"], theirs("density_raw"), tol, f"{name}density_raw", extra=density_error)
    assert_close(ours["density"], density, tol, f"{name}density", extra=density_error)

    # delta = distance to the nearest strictly denser frame: which frames are denser is a near-tie where
    # two densities lie within their budgets; then delta may be any distance the other outcome allows
    density_budget = tol.budget(density) + density_error
    margin = density[:, None, :] - density[:, :, None]  # [b, i, j] = rho_j - rho_i
    budget = density_budget[:, None, :] + density_budget[:, :, None]
    denser, maybe = margin > budget, margin.abs() <= budget
    dist_max = dist.flatten(1).amax(-1)[:, None]
    largest = torch.where(denser, dist, torch.inf).amin(-1)
    largest = torch.where(torch.isinf(largest), dist_max, largest)  # delta when no near-tied frame is denser
    alternatives = torch.cat([dist, largest[..., None]], dim=-1)
    tied = torch.cat([maybe & (dist < largest[..., None]), maybe.any(-1, keepdim=True)], dim=-1)
    delta_error = distance_error(sq, dist).amax(-1)  # (B, F): the worst distance of the row
    delta = theirs("delta").double()
    delta_allowed = tol.budget(delta) + delta_error
    tie = assert_close_or_tied(
        ours["delta"], delta, f"{name}delta", allowed=delta_allowed, alternatives=alternatives, tied=tied
    )

    # score = delta * density, with our delta where a near-tie made it another one
    delta_used = torch.where(tie, ours["delta"].double(), delta)
    score = delta_used * density
    if center is not None:
        score[:, center] = -torch.inf
    score_error = density.abs() * delta_error + delta_used.abs() * density_error
    assert_close(ours["score"], score, tol, f"{name}score", extra=score_error)

    # decisions: kept frames and their order, each frame's nearest centre. Where a near-tie gave frames
    # the other delta, upstream's own rule on those scores (choose_centres, replayed exactly below) says
    # which frames it would keep, and its nearest-centre rule which centre each frame joins.
    score_noise = tol.budget(score.nan_to_num(0, 0, 0)) + score_error
    expected_topk, expected_index = theirs("index_topk"), theirs("index")
    if tie.any():
        expected_topk, expected_index = choose_centres(score, expected_topk.shape[-1], center)
        if not torch.equal(expected_index, theirs("index")):
            warnings.warn(
                NearTieWarning(
                    f"{name}index: upstream's rule keeps {expected_index.tolist()} instead of upstream's "
                    f"{theirs('index').tolist()} once the density near-ties above go the other way"
                ),
                stacklevel=2,
            )
    assert_same_choice(ours["index_topk"], expected_topk, score, score_noise, f"{name}index_topk")
    assert_same_selection(ours["index"], expected_index, score, score_noise, f"{name}index")
    same_centres = torch.equal(ours["index_topk"].sort(-1).values, theirs("index_topk").sort(-1).values)
    reference = theirs("index_topk") if same_centres else ours["index_topk"]
    labels = theirs("idx_cluster") if same_centres else nearest_centre(theirs("dist_matrix"), reference)
    centres = ours["index_topk"].gather(1, ours["idx_cluster"])[..., None]  # (B, F, 1) frame numbers
    dist_noise = tol.budget(dist) + distance_error(sq, dist)
    name_centres = f"{name}idx_cluster (as centre frames)"
    assert_same_choice(centres, reference.gather(1, labels)[..., None], dist, dist_noise, name_centres)
    return ours["index"] if torch.equal(ours["index"], theirs("index")) else theirs("index")


# ---- model fixtures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_model_output_matches_upstream(fixture_dir):
    fixture = fixture_of(fixture_dir)
    out, _ = forward_like_upstream(build_model(fixture), fixture)
    assert_close(out, fixture.io["output"], floats(fixture.config), "output")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_index"))
def test_parity_hot_kept_frame_indices_match_upstream_exactly(fixture_dir):
    """Kept frames (as a set, in score order, and each frame's centre) exactly, unless the fixture's own
    values show a near-tie (assert_cluster_matches); then one of the tied outcomes, with a warning."""
    fixture = fixture_of(fixture_dir)
    _, trace = forward_like_upstream(build_model(fixture), fixture)
    assert trace["tpc_index"].dtype == trace["tpc_index_topk"].dtype == torch.int64
    assert torch.equal(trace["tpc_index"], trace["tpc_index"].sort(-1).values), "kept frames in temporal order"


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_every_stored_intermediate_matches_upstream(fixture_dir):
    fixture = fixture_of(fixture_dir)
    io, tol = fixture.io, floats(fixture.config)
    _, trace = forward_like_upstream(build_model(fixture), fixture)  # checks the clustering values
    stored = set(io) - {"input_2d", "output"}
    assert stored, "the fixture stores no intermediates"
    assert not io.undescribed_stored(), f"stored but not described (so unchecked): {io.undescribed_stored()}"
    assert stored <= set(trace), f"our forward exposes none of {sorted(stored - set(trace))}"
    clustering = {f"tpc_{name}" for name in (*CLUSTER, *CLUSTER_INDICES, "index")}
    for name in sorted(stored - clustering):
        assert_close(trace[name], io[name], tol, name)


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_noise"))
def test_parity_hot_injected_noise_reproduces_upstream_under_any_seed(fixture_dir):
    fixture = fixture_of(fixture_dir)
    out, _ = forward_like_upstream(build_model(fixture), fixture, inject_noise=True, seed_offset=12345)
    assert_close(out, fixture.io["output"], floats(fixture.config), "output with injected noise")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", sample="padded"))
def test_parity_hot_padded_repeat_sample_alone_matches_its_batch_row(fixture_dir):
    """The edge-padded sample config.json names, run alone with its noise row, gives its batch row."""
    fixture = fixture_of(fixture_dir)
    row = slice(padded_sample(fixture.config), padded_sample(fixture.config) + 1)
    out, _ = forward_like_upstream(build_model(fixture), fixture, rows=row, inject_noise="tpc_noise" in fixture.io)
    assert_close(out, fixture.io["output"][row], floats(fixture.config), "padded sample output")


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_density"))
def test_parity_hot_tie_break_noise_is_added_to_the_density(fixture_dir):
    """density - density_raw is noise * noise_scale, in our forward and in upstream's values alike (to the
    rounding of one addition, half an ulp of the density), and our noise is upstream's draw exactly."""
    fixture = fixture_of(fixture_dir)
    scale = fixture.config["constants"]["noise_scale"]
    _, trace = forward_like_upstream(build_model(fixture), fixture)
    assert_close(trace["tpc_noise"], fixture.io["tpc_noise"], EXACT, "tpc_noise")
    u = UNIT_ROUNDOFF[torch.float32]
    for who, values in (("ours", trace), ("upstream", fixture.io)):
        density, noise = values["tpc_density"].double(), values["tpc_noise"].double()
        added = density - values["tpc_density_raw"].double()
        rounding = u * (density.abs() + noise * scale)
        assert_close(added, noise * scale, Tolerance(), f"{who}: density - density_raw", extra=rounding)
    assert not torch.equal(trace["tpc_density"], trace["tpc_density_raw"])


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model"))
def test_parity_hot_flops_and_params_match_upstream_counts(fixture_dir):
    fixture = fixture_of(fixture_dir)
    expected = fixture.config["flops_B1"][fixture.config["model"]]
    counted = count_flops(build_model(fixture), tuple(expected["input_shape"]))
    assert counted["params"] == expected["params_total"]
    assert counted["flops_total"] == expected["flop_counter_mode_total"]
    assert counted["by_op"] == {k.removeprefix("aten."): v for k, v in expected["flop_counter_mode_by_op"].items()}


# ---- function-level clustering fixtures ---------------------------------------------------------------
def cluster_cases(fixture):
    """(label, features, kept, k, center, seed, upstream values by name) for every case and call."""
    for case, spec in fixture.config["cases"].items():
        for call, args in cluster_calls(spec):
            prefix = f"{case}.{call}."
            center = args.get("center")
            kept = args["cluster_num"] + (1 if center is not None else 0)
            sorted_key = "index_with_center_sorted" if center is not None else "index_sorted"

            def theirs(name, prefix=prefix, sorted_key=sorted_key):
                return fixture.io[prefix + (sorted_key if name == "index" else name)]

            yield prefix, fixture.io[f"{case}.x"], kept, args["k"], center, spec["calls"][call]["seed"], theirs


@pytest.mark.parametrize("fixture_dir", fixtures_holding("cases"))
def test_parity_hot_cluster_functions_match_upstream(fixture_dir):
    fixture = fixture_of(fixture_dir)
    for prefix, x, kept, k, center, seed, theirs in cluster_cases(fixture):
        torch.manual_seed(seed)
        result = token_pruning_cluster(x, kept, k=k, center=center)
        ours = {name: getattr(result, name) for name in (*CLUSTER, *CLUSTER_INDICES, "index")}
        assert_cluster_matches(ours, theirs, x, floats(fixture.config), center, prefix)


def stage_replays(fixture_dir):
    """(label, k, center, upstream values by name) of a fixture folder: its model forward or its cases."""
    fixture = fixture_of(fixture_dir)
    if "cases" in fixture.config:
        return [(prefix, k, center, theirs) for prefix, _, _, k, center, _, theirs in cluster_cases(fixture)]
    constants = fixture.config["constants"]
    return [("tpc_", constants["knn_k"], constants.get("center"), lambda n: fixture.io[f"tpc_{n}"])]


@pytest.mark.parametrize("fixture_dir", fixtures_holding("model", "tpc_dist_matrix") + fixtures_holding("cases"))
def test_parity_hot_cluster_stages_replay_upstream_decisions_exactly(fixture_dir):
    """Each clustering stage, fed upstream's own input values, makes upstream's decisions exactly: the k
    nearest distances, the nearest strictly denser frame (the noise breaking exact density ties), the kept
    frames and their order, and every frame's centre. The density is exp(-mean d^2) to its rounding
    (the squares and mean of k terms, gamma_{k+2} relative, and one exp, ~1 ulp, on each side)."""
    for name, k, center, theirs in stage_replays(fixture_dir):
        dist = theirs("dist_matrix")
        nearest, density_raw = knn_density(dist, k)
        assert_close(nearest, theirs("dist_nearest"), EXACT, f"{name}dist_nearest")
        m = (theirs("dist_nearest").double() ** 2).mean(-1)
        rounding = 2 * theirs("density_raw").double() * (gamma(k + 2) * m + 2 * UNIT_ROUNDOFF[torch.float32])
        assert_close(density_raw, theirs("density_raw"), Tolerance(), f"{name}density_raw", extra=rounding)
        delta = distance_to_denser(dist, theirs("density"))
        assert_close(delta, theirs("delta"), EXACT, f"{name}delta")
        index_topk, index = choose_centres(theirs("score"), theirs("index_topk").shape[-1], center)
        assert_close(index_topk, theirs("index_topk"), EXACT, f"{name}index_topk")
        assert_close(index, theirs("index"), EXACT, f"{name}index")
        assert_close(nearest_centre(dist, theirs("index_topk")), theirs("idx_cluster"), EXACT, f"{name}idx_cluster")
