"""video_pose: the zoo surface of the HoT family, its helpers, metrics, converter and bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests.helpers import require_fixture
from video_pose.convert import convert_checkpoint
from video_pose.hot import HoTMixSTE, HoTMixSTEConfig, TPCMixSTE, TPCMixSTEConfig, token_pruning_cluster
from video_pose.mixste import MixSTE, MixSTEConfig
from video_pose.motionbert import HoTMotionBERT, HoTMotionBERTConfig, MotionBERT, MotionBERTConfig
from video_pose.skeleton import (
    coco_to_h36m,
    flip_pose,
    image_coordinates,
    normalize_screen_coordinates,
    sliding_windows,
)
from video_pose.synth import HELD_OUT_AZIMUTHS, make_split
from zoo.api import Tokens
from zoo.errors import CheckpointMismatchError, ConfigError, InputError
from zoo.metrics.pose import mean_velocity_error, mpjpe, p_mpjpe
from zoo.parity import parity_root

SMALL = dict(num_frames=12, dim=16, mlp_hidden_dim=32, depth=3, num_heads=2)
ARCHS = {
    "mixste": lambda: MixSTE(MixSTEConfig(**SMALL)),
    "hot-mixste": lambda: HoTMixSTE(HoTMixSTEConfig(**SMALL, kept_frames=4, prune_before_block=1)),
    "tpc-mixste": lambda: TPCMixSTE(TPCMixSTEConfig(**SMALL, kept_frames=5, prune_before_block=2)),
    "motionbert": lambda: MotionBERT(MotionBERTConfig(**SMALL, dim_rep=24)),
    "hot-motionbert": lambda: HoTMotionBERT(HoTMotionBERTConfig(**SMALL, dim_rep=24, kept_frames=4)),
}


def small(arch: str):
    torch.manual_seed(0)
    return ARCHS[arch]().eval()


def clip(model, batch: int = 2, frames: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = frames or model.config.num_frames
    x = torch.rand(batch, frames, 17, model.config.in_channels, generator=g) * 2 - 1
    if model.config.in_channels == 3:
        x[..., 2] = x[..., 2].abs()
    return x


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- registry and contract ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(ARCHS))
def test_registry_resolves_each_pose_arch_to_the_class_that_declares_it(arch):
    cls = zoo.get_arch(arch)
    assert cls.arch == arch and cls.modality == "pose"
    assert isinstance(small(arch), cls)


@pytest.mark.parametrize("arch", ["hot-mixste", "hot-motionbert"])
def test_hot_encode_keeps_token_frames_in_temporal_order_and_decode_recovers_full_length(arch):
    model = small(arch)
    x = clip(model)
    tokens = model.encode(x, generator=gen())
    kept = tokens.meta["kept_frame_indices"]
    assert tokens.embeddings.shape == (2, model.config.kept_frames, 17 * model.config.dim)
    assert kept.shape == (2, model.config.kept_frames) and kept.dtype == torch.int64
    assert bool((kept.diff(dim=1) > 0).all()) and 0 <= int(kept.min()) and int(kept.max()) < x.shape[1]
    assert model.decode(tokens).shape == (2, x.shape[1], 17, 3)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_decode_of_encode_equals_the_forward_pass(arch):
    model = small(arch)
    x = clip(model)
    tokens = model.encode(x, generator=gen())
    with torch.no_grad():
        direct, _ = model(x, generator=gen())
    torch.testing.assert_close(model.decode(tokens), direct)


@pytest.mark.parametrize("arch", ["hot-mixste", "hot-motionbert"])
def test_hot_lift_with_a_seeded_generator_is_reproducible(arch):
    model = small(arch)
    x = clip(model)
    assert torch.equal(model.lift(x, generator=gen(3)), model.lift(x, generator=gen(3)))


def test_tpc_mixste_always_keeps_the_centre_frame_and_outputs_one_row_per_kept_frame():
    model = small("tpc-mixste")
    x = clip(model, batch=3)
    out, kept = model(x, generator=gen())
    assert bool((kept == (x.shape[1] - 1) // 2).any(dim=1).all())
    assert out.shape == (3, model.config.kept_frames, 17, 3)


def test_tpc_mixste_lift_returns_every_frame_of_the_clip():
    model = small("tpc-mixste")
    x = clip(model, batch=1, frames=5)
    assert model.lift(x, generator=gen()).shape == (1, 5, 17, 3)


def test_motionbert_accepts_clips_shorter_than_its_maximum_like_the_official_model():
    model = small("hot-motionbert")
    x = clip(model, frames=model.config.kept_frames + 2)
    assert model.lift(x, generator=gen()).shape == (2, x.shape[1], 17, 3)


def test_lift_of_a_long_clip_stitches_windows_that_match_each_window_alone():
    model = small("mixste")
    window = model.config.num_frames
    x = clip(model, batch=1, frames=2 * window)
    out = model.lift(x, stride=window)
    torch.testing.assert_close(out[:, :window], model(x[:, :window])[0])
    torch.testing.assert_close(out[:, window:], model(x[:, window:])[0])


def test_lift_averages_overlapping_windows_and_covers_every_frame():
    model = small("mixste")
    x = clip(model, batch=1, frames=30)
    out = model.lift(x)
    assert out.shape == (1, 30, 17, 3) and bool(torch.isfinite(out).all())


def test_flip_augmentation_averages_the_prediction_with_the_mirrored_pass():
    model = small("mixste")
    x = clip(model)
    with torch.no_grad():
        expected = (model(x)[0] + flip_pose(model(flip_pose(x))[0])) / 2
    torch.testing.assert_close(model.lift(x, flip=True), expected)


def test_tokens_survive_a_save_and_load_round_trip(tmp_path):
    model = small("hot-mixste")
    tokens = model.encode(clip(model), generator=gen())
    tokens.save(tmp_path / "t.safetensors")
    loaded = Tokens.load(tmp_path / "t.safetensors")
    assert torch.equal(model.decode(loaded), model.decode(tokens))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_save_pretrained_then_zoo_load_gives_the_same_outputs(arch, tmp_path):
    model = small(arch)
    model.save_pretrained(tmp_path / arch)
    loaded = zoo.load(tmp_path / arch)
    x = clip(model)
    torch.testing.assert_close(loaded.lift(x, generator=gen()), model.lift(x, generator=gen()))


# ---- converter ------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["plain", "module_prefix", "model_pos_wrapper"])
def test_convert_reads_published_pth_layouts_into_a_loadable_folder(layout, tmp_path):
    model = small("hot-mixste")
    state = model.state_dict()
    if layout == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    if layout == "model_pos_wrapper":
        state = {"model_pos": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, tmp_path / "model_60_4100.pth")
    out = convert_checkpoint(
        "hot-mixste", tmp_path / "model_60_4100.pth", tmp_path / "out", num_heads=2, prune_before_block=1
    )
    loaded = zoo.load(out)
    assert loaded.config == model.config
    x = clip(model)
    torch.testing.assert_close(loaded.lift(x, generator=gen()), model.lift(x, generator=gen()))


def test_convert_refuses_a_checkpoint_with_missing_keys(tmp_path):
    state = small("mixste").state_dict()
    del state["head.1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError, match="head.1.weight"):
        convert_checkpoint("mixste", tmp_path / "broken.pth", tmp_path / "out", num_heads=2)


def test_convert_rejects_an_option_the_config_does_not_have(tmp_path):
    torch.save(small("mixste").state_dict(), tmp_path / "m.pth")
    with pytest.raises(ConfigError, match="kept_frames"):
        convert_checkpoint("mixste", tmp_path / "m.pth", tmp_path / "out", kept_frames=3)


# ---- bad input ------------------------------------------------------------------------------------
def test_wrong_joint_count_is_refused_naming_h36m():
    model = small("hot-mixste")
    with pytest.raises(InputError, match="16 joints.*H3.6M-17"):
        model.encode(torch.zeros(1, 12, 16, 2))


def test_wrong_channel_count_is_refused():
    with pytest.raises(InputError, match="3 channels"):
        small("mixste").encode(torch.zeros(1, 12, 17, 3))
    with pytest.raises(InputError, match="2 channels.*confidence"):
        small("motionbert").encode(torch.zeros(1, 12, 17, 2))


def test_nan_keypoints_are_refused():
    x = clip(small("mixste"))
    x[0, 3, 4, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        small("mixste").lift(x)


def test_too_few_frames_for_the_kept_tokens_are_refused():
    with pytest.raises(InputError, match="at least 5"):
        small("hot-mixste").encode(torch.zeros(1, 4, 17, 2))


def test_integer_keypoints_are_refused():
    with pytest.raises(InputError, match="floating point"):
        small("mixste").encode(torch.zeros(1, 12, 17, 2, dtype=torch.int64))


def test_more_frames_than_the_window_are_refused_by_encode_with_a_pointer_to_lift():
    with pytest.raises(InputError, match="lift"):
        small("mixste").encode(torch.zeros(1, 13, 17, 2))


@pytest.mark.parametrize("kept", [12, 20, 0])
def test_kept_tokens_not_fewer_than_frames_are_a_config_error(kept):
    with pytest.raises(ConfigError, match="kept_frames"):
        HoTMixSTEConfig(**SMALL, kept_frames=kept)


def test_pruning_layer_outside_the_network_is_a_config_error():
    with pytest.raises(ConfigError, match="prune_before_block"):
        HoTMotionBERTConfig(**SMALL, kept_frames=4, prune_before_block=3)


# ---- token pruning cluster ------------------------------------------------------------------------
def test_cluster_keeps_distinct_frames_in_ascending_order():
    x = torch.randn(3, 20, 8, generator=gen())
    index = token_pruning_cluster(x, 6, generator=gen()).index
    assert index.shape == (3, 6)
    assert bool((index.diff(dim=1) > 0).all())


def test_tie_break_noise_decides_between_exactly_repeated_frames():
    x = torch.randn(1, 10, 8, generator=gen())
    x[0, :4] = x[0, 4]  # frames 0..4 identical: edge padding
    noise_a = torch.zeros(1, 10)
    noise_a[0, 0] = 0.9
    noise_b = torch.zeros(1, 10)
    noise_b[0, 3] = 0.9
    chosen_a = set(token_pruning_cluster(x, 3, noise=noise_a).index[0].tolist())
    chosen_b = set(token_pruning_cluster(x, 3, noise=noise_b).index[0].tolist())
    assert 0 in chosen_a and 3 not in chosen_a
    assert 3 in chosen_b and 0 not in chosen_b


def test_cluster_draws_its_noise_from_the_given_generator():
    x = torch.randn(2, 15, 8, generator=gen())
    result = token_pruning_cluster(x, 5, generator=gen(11))
    assert torch.equal(result.noise, torch.rand(2, 15, generator=gen(11)))


# ---- skeleton helpers -----------------------------------------------------------------------------
def test_flip_applied_twice_gives_the_pose_back():
    pose = torch.randn(2, 5, 17, 3)
    assert torch.equal(flip_pose(flip_pose(pose)), pose)


def test_flip_swaps_left_and_right_joints_and_negates_x():
    pose = torch.randn(17, 2)
    flipped = flip_pose(pose)
    assert torch.equal(flipped[4, 0], -pose[1, 0]) and torch.equal(flipped[4, 1], pose[1, 1])


def test_screen_normalisation_maps_the_image_width_to_minus_one_one_and_inverts():
    px = torch.tensor([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]])
    norm = normalize_screen_coordinates(px, 1000, 1002)
    assert norm[0, 0] == -1 and norm[1, 0] == 1 and abs(float(norm[2, 1])) < 1e-6
    torch.testing.assert_close(image_coordinates(norm, 1000, 1002), px)


def test_coco_to_h36m_builds_pelvis_and_thorax_from_the_hips_and_shoulders():
    coco = torch.randn(4, 17, 3)
    h36m = coco_to_h36m(coco)
    torch.testing.assert_close(h36m[:, 0, :2], (coco[:, 11, :2] + coco[:, 12, :2]) / 2)
    torch.testing.assert_close(h36m[:, 8, :2], (coco[:, 5, :2] + coco[:, 6, :2]) / 2)
    torch.testing.assert_close(h36m[:, 3], coco[:, 16])  # right ankle


def test_coco_to_h36m_refuses_other_keypoint_sets():
    with pytest.raises(InputError, match="17"):
        coco_to_h36m(torch.zeros(2, 26, 2))


def test_sliding_windows_are_full_length_and_cover_every_frame():
    windows = sliding_windows(100, 27, 13)
    assert all(stop - start == 27 for start, stop in windows)
    assert set().union(*(range(a, b) for a, b in windows)) == set(range(100))


# ---- metrics --------------------------------------------------------------------------------------
def test_mpjpe_is_the_mean_joint_distance():
    target = torch.zeros(2, 4, 17, 3)
    pred = target.clone()
    pred[..., 0] = 0.003
    assert abs(mpjpe(pred, target).item() - 0.003) < 1e-7


def test_p_mpjpe_ignores_rotation_scale_and_translation():
    target = torch.randn(3, 17, 3, dtype=torch.float64)
    angle = torch.tensor(0.7, dtype=torch.float64)
    rot = torch.tensor([[angle.cos(), -angle.sin(), 0], [angle.sin(), angle.cos(), 0], [0, 0, 1]], dtype=torch.float64)
    pred = 1.7 * target @ rot.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    assert p_mpjpe(pred, target).item() < 1e-9
    assert mpjpe(pred, target).item() > 0.5


def test_velocity_error_ignores_a_constant_offset_but_not_jitter():
    target = torch.randn(1, 10, 17, 3)
    assert mean_velocity_error(target + 0.1, target).item() < 1e-6
    assert mean_velocity_error(target + 0.01 * torch.randn(1, 10, 17, 3), target).item() > 1e-3


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(InputError, match="differ"):
        mpjpe(torch.zeros(2, 17, 3), torch.zeros(3, 17, 3))


# ---- synthetic data -------------------------------------------------------------------------------
def test_synthetic_clips_are_root_relative_normalised_and_seeded():
    clips = make_split("train", 6, 20, seed=1)
    assert clips.kp2d.shape == (6, 20, 17, 2) and clips.pose3d.shape == (6, 20, 17, 3)
    assert np.abs(clips.pose3d[:, :, 0]).max() == 0
    assert np.abs(clips.kp2d).max() <= 1.0
    assert np.array_equal(make_split("train", 6, 20, seed=1).kp2d, clips.kp2d)


def test_test_split_uses_only_held_out_viewpoints_and_train_split_none():
    inside = lambda a: any(lo <= a <= hi for lo, hi in HELD_OUT_AZIMUTHS)
    assert all(inside(a) for a in make_split("test", 12, 5).azimuth_deg)
    assert not any(inside(a) for a in make_split("train", 12, 5).azimuth_deg)


# ---- FLOPs of the released configurations ---------------------------------------------------------
def test_parity_hot_default_config_flops_and_params_match_upstream_counts():
    """Every model the fixture counted at its upstream default config, at the fixture's input shape."""
    path = parity_root() / "hot" / "flops_default_configs.json"
    require_fixture(path.parent if path.is_file() else None, "hot")
    from video_pose.flops import count_flops, default_model

    models = json.loads(path.read_text())["models"]
    assert models, f"{path} lists no models"
    for name, ref in models.items():
        counted = count_flops(default_model(name.replace("_", "-")), tuple(ref["input_shape"]))
        assert counted["params"] == ref["params_total"], name
        assert counted["flops_total"] == ref["flop_counter_mode_total"], name
        assert counted["by_op"] == {k.removeprefix("aten."): v for k, v in ref["flop_counter_mode_by_op"].items()}, name


# ---- bundled tiny models --------------------------------------------------------------------------
CARDS = Path(__file__).resolve().parent.parent / "hub_cards"


def test_bundled_tiny_hot_pair_reproduces_its_card_figures_within_ten_percent_at_a_third_fewer_flops():
    from video_pose.flops import count_flops
    from video_pose.train_tiny import FAMILIES, evaluate, model_inputs

    base_name, hot_name = FAMILIES["mixste"].base[0], FAMILIES["mixste"].hot[0]
    base, hot = zoo.load(base_name), zoo.load(hot_name)
    channels = base.config.in_channels
    test = make_split("test", 256, 27, seed=0)  # the held-out set the cards report
    x, y = model_inputs(test, channels), torch.from_numpy(test.pose3d)
    err_base, err_hot = evaluate(base, x, y)["mpjpe_mm"], evaluate(hot, x, y)["mpjpe_mm"]
    recorded = json.loads((CARDS / hot_name / "training.json").read_text())["results"]
    assert abs(err_base - recorded[base_name]["mpjpe_mm"]) < 0.5
    assert abs(err_hot - recorded[hot_name]["mpjpe_mm"]) < 0.5
    card = (CARDS / hot_name / "README.md").read_text()
    assert "| motion |" in card and ("almost static" in card) == (recorded[hot_name]["motion_ratio"] < 0.1)
    assert err_hot <= 1.10 * err_base  # the bound
    shape = (1, 27, 17, channels)
    assert count_flops(hot, shape)["flops_total"] <= 2 / 3 * count_flops(base, shape)["flops_total"]
    assert err_base < 130  # mm; predicting the mean training pose scores 149 mm on this set


def test_preprocess_turns_a_numpy_clip_into_a_float_batch():
    model = small("mixste")
    batch = model.preprocess(np.zeros((12, 17, 2), dtype=np.float32))
    assert batch.shape == (1, 12, 17, 2) and batch.dtype == torch.float32


def test_slicing_tokens_keeps_each_samples_kept_frames():
    model = small("hot-mixste")
    tokens = model.encode(clip(model, batch=3), generator=gen())
    one = tokens[1]
    assert torch.equal(one.meta["kept_frame_indices"], tokens.meta["kept_frame_indices"][1:2])
    torch.testing.assert_close(model.decode(one), model.decode(tokens)[1:2])


def test_demo_lifts_the_held_out_clip_with_both_tiny_models_and_draws_it(tmp_path):
    if not (CARDS / "hot-mixste-tiny" / "model.safetensors").is_file():
        pytest.skip("tiny checkpoints not trained yet")
    from video_pose.demo import run

    rows = run(tmp_path)
    assert [r["model"] for r in rows] == ["mixste-tiny", "hot-mixste-tiny"]
    keys = {"model", "modality", "input", "tokens", "bits_per_unit", "unit", "quality", "seconds_per_item"}
    assert all(set(r) == keys and r["quality"].startswith("MPJPE") for r in rows)
    assert (tmp_path / "hot_pose_lift.png").stat().st_size > 10_000


def test_npz_clips_load_with_their_3d_targets_and_train(tmp_path):
    from video_pose.synth import write_sample_files

    model = zoo.load("mixste-tiny")
    paths = write_sample_files(tmp_path, num_clips=2, frames=27)
    items = [model.load_item(p) for p in paths]
    batch = model.training_batch(items)
    assert batch["kp2d"].shape == (2, 27, 17, 2) and batch["pose3d"].shape == (2, 27, 17, 3)
    assert torch.isfinite(model.training_loss(batch))
    assert torch.equal(model.preprocess(items), batch["kp2d"])


def test_training_without_3d_targets_is_refused_by_name(tmp_path):
    model = zoo.load("mixste-tiny")
    np.save(tmp_path / "clip.npy", np.zeros((27, 17, 2), np.float32))
    with pytest.raises(InputError, match="pose3d"):
        model.training_batch([model.load_item(tmp_path / "clip.npy")])
    with pytest.raises(InputError, match=r"\.npy .* or \.npz"):
        model.load_item(tmp_path / "clip.txt") if (tmp_path / "clip.txt").write_text("x") else None


def test_bundled_samples_are_the_tiny_models_sample_inputs():
    paths = zoo.load("hot-mixste-tiny").sample_inputs()
    assert paths and all(str(p).endswith(".npz") for p in paths)


def test_train_tiny_trains_a_motionbert_pair_on_keypoints_with_confidence_and_writes_loadable_cards(tmp_path):
    from video_pose.train_tiny import main

    args = ["--family", "motionbert", "--out-dir", str(tmp_path), "--steps", "2", "--train-clips", "32"]
    threads = str(torch.get_num_threads())  # main sets torch's thread count; keep the suite's
    results = main([*args, "--test-clips", "8", "--batch", "4", "--depth", "2", "--threads", threads])
    assert set(results) == {"motionbert-tiny", "hot-motionbert-tiny"}
    hot = zoo.load(tmp_path / "hot-motionbert-tiny")
    assert hot.arch == "hot-motionbert" and hot.config.in_channels == 3 and hot.config.prune_before_block == 1
    assert (
        hot.config.kept_frames == 9
        and results["hot-motionbert-tiny"]["gflops_total"] < results["motionbert-tiny"]["gflops_total"]
    )
    card = (tmp_path / "hot-motionbert-tiny" / "README.md").read_text()
    assert "--family motionbert" in card and "HoT-MotionBERT: 5 dual-stream depths" in card
