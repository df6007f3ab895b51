"""TokenUnify as a zoo model: sizes, input rules, encode/decode, files, conversion, training losses."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest
import tifffile
import torch

import zoo
from em_volume.convert import convert_checkpoint
from em_volume.pretext import next_token_prefix, patchify, random_token_mask, task_for_step, unpatchify
from em_volume.tokenunify import TokenUnify, TokenUnifyConfig, check_volume_size
from zoo.errors import CheckpointMismatchError, ConfigError, CorruptFileError, InputError, NotWeightsOnlyError

TINY = dict(feat_size=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden_size=16, kernel_size=(1, 3, 3), crop_size=(16, 16, 80))
SIZE = (16, 16, 80)  # the smallest volume the network takes: (1 x 1 x 5) deepest tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TokenUnify(TokenUnifyConfig(**TINY)).eval()


def volume(batch=1, size=SIZE, seed=0):
    return torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(seed))


def count_parameters(config):
    with torch.device("meta"):
        return sum(p.numel() for p in TokenUnify(config).parameters())


# ---- sizes ----------------------------------------------------------------------------------------
def test_default_config_has_upstream_28_3m_parameters():
    assert count_parameters(TokenUnifyConfig()) == 28_296_131


@pytest.mark.parametrize("scale, millions", [("small", 112.53), ("mid", 206.58), ("large", 506.57), ("huge", 1008.91)])
def test_scale_configs_match_upstream_sizes(scale, millions):
    assert abs(count_parameters(TokenUnifyConfig.scale(scale)) / 1e6 - millions) < 0.01


def test_state_dict_keys_are_upstream_names(model):
    keys = set(TokenUnify(TokenUnifyConfig()).state_dict())
    assert len(keys) == 291
    assert {
        "vit.downsample_layers.0.0.weight",
        "vit.stages.3.1.mamba.A_s_log",
        "decoder5.transp_conv.conv.weight",
    } <= keys
    assert not any(
        "norm" in k and not k.endswith(("norm.weight", "norm.bias")) for k in keys
    )  # InstanceNorms: no params


# ---- input rules and bad input ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [(16, 80, 80), (16, 160, 160), (32, 80, 16), (16, 32, 80)])
def test_valid_volume_sizes_pass_the_check(size):
    check_volume_size(size)


@pytest.mark.parametrize(
    "size, message",
    [
        ((16, 32, 32), "divisible by nslices=5"),
        ((16, 64, 64), "divisible by nslices=5"),
        ((15, 80, 80), "multiple of 16"),
    ],
)
def test_invalid_volume_sizes_raise_a_clear_error(size, message):
    with pytest.raises(InputError, match=message):
        check_volume_size(size)


def test_forward_rejects_a_size_before_running_the_network(model):
    with pytest.raises(InputError, match="multiple of 16"):
        model(torch.rand(1, 1, 16, 20, 80))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(16, 16, 80), "5 dimensions"),
        (torch.randint(0, 255, (1, 1, 16, 16, 80), dtype=torch.uint8), "integer dtype"),
        (torch.full((1, 1, 16, 16, 80), float("nan")), "NaN"),
        (torch.rand(1, 2, 16, 16, 80), r"\(B, 1, D, H, W\)"),
    ],
)
def test_forward_rejects_bad_volumes_by_name(model, bad, message):
    with pytest.raises(InputError, match=message):
        model(bad)


def test_preprocess_rejects_empty_and_wrong_rank_volumes(model):
    with pytest.raises(InputError, match="empty"):
        model.preprocess(np.zeros((0, 16, 80), np.float32))
    with pytest.raises(InputError, match="dimensions"):
        model.preprocess(np.zeros((16, 80), np.float32))


def test_config_rejects_bad_fields_by_name():
    with pytest.raises(ConfigError, match="depths"):
        TokenUnifyConfig(depths=(2, 2, 2))
    with pytest.raises(ConfigError, match="objective"):
        TokenUnifyConfig(objective="mae")
    with pytest.raises(ConfigError, match="crop_size"):
        TokenUnifyConfig(crop_size=(16, 32, 32))


# ---- encode / decode / files --------------------------------------------------------------------------
def test_encode_gives_deepest_stage_tokens_with_grid_in_meta(model):
    tokens = model.encode(volume(2))
    assert tokens.embeddings.shape == (2, 5, 16)
    assert tokens.meta["grid"] == [1, 1, 5] and tokens.meta["input_size"] == list(SIZE)


def test_decode_of_encode_equals_the_forward_pass(model):
    x = volume(2)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(model.decode(model.encode(x)), expected, atol=1e-6)


def test_decode_depends_on_the_tokens(model):
    tokens = model.encode(volume())
    edited = zoo.Tokens(embeddings=tokens.embeddings + 1.0, meta=tokens.meta)
    assert not torch.allclose(model.decode(edited), model.decode(tokens), atol=1e-4)


def test_save_and_load_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = zoo.load(tmp_path / "m")
    x = volume()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_with_dtype_float64_runs_in_float64(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = zoo.load(tmp_path / "m", dtype=torch.float64)
    tokens = loaded.encode(volume().double())
    assert tokens.embeddings.dtype == torch.float64


@pytest.mark.parametrize("suffix", [".h5", ".tif", ".npy"])
def test_preprocess_reads_hdf5_tiff_and_numpy_files_and_scales_integers(model, tmp_path, suffix):
    data = np.random.default_rng(0).integers(20, 236, SIZE).astype(np.uint8)
    path = tmp_path / f"vol{suffix}"
    if suffix == ".h5":
        with h5py.File(path, "w") as f:
            f["main"] = data
    elif suffix == ".tif":
        tifffile.imwrite(path, data)
    else:
        np.save(path, data)
    x = model.preprocess(path)
    assert x.shape == (1, 1, *SIZE) and x.dtype == torch.float32
    assert x.min().item() == 0.0 and abs(x.max().item() - 1.0) < 1e-6


def test_preprocess_reports_a_corrupt_file(model, tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(CorruptFileError):
        model.preprocess(path)


def test_predict_slides_over_a_volume_larger_than_the_crop(model):
    out = model.predict(volume(size=(16, 16, 90)))
    assert out.shape == (1, 3, 16, 16, 90)
    assert 0 <= out.min() and out.max() <= 1


# ---- conversion of upstream checkpoints ------------------------------------------------------------
def upstream_training_checkpoint(model, path, prefix="module."):
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    args = argparse.Namespace(lr=1e-4, batch_size=6, model="segmamba")
    torch.save({"model": state, "optimizer": {"state": {}}, "epoch": 3, "scaler": {}, "args": args}, path)


def test_convert_reads_an_upstream_training_checkpoint_with_namespace_and_module_prefix(model, tmp_path):
    upstream_training_checkpoint(model, tmp_path / "checkpoint-3.pth")
    loaded = zoo.load(convert_checkpoint("tokenunify", tmp_path / "checkpoint-3.pth", tmp_path / "out"))
    assert loaded.config.feat_size == model.config.feat_size and loaded.config.depths == model.config.depths
    x = volume()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class NotAllowlisted:
    """A class a checkpoint may pickle but weights_only loading must refuse."""


def test_convert_refuses_a_checkpoint_that_pickles_other_classes(model, tmp_path):
    torch.save({"model": model.state_dict(), "args": NotAllowlisted()}, tmp_path / "bad.pth")
    with pytest.raises(NotWeightsOnlyError, match=r"not a weights-only file.*NotAllowlisted"):
        convert_checkpoint("tokenunify", tmp_path / "bad.pth", tmp_path / "out")


def test_convert_lists_missing_keys_by_name(model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v for k, v in model.state_dict().items() if k != "out.conv.conv.bias"}
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="out.conv.conv.bias"):
        convert_checkpoint("tokenunify", tmp_path / "w.safetensors", tmp_path / "out")


# ---- pre-training tasks ---------------------------------------------------------------------------
def test_tokens_are_4x16x16_patches_in_z_major_order():
    x = torch.arange(8 * 32 * 48, dtype=torch.float32).reshape(1, 1, 8, 32, 48)
    tokens = patchify(x)
    assert tokens.shape == (1, 2 * 2 * 3, 4, 16, 16)
    assert torch.equal(tokens[0, 1], x[0, 0, :4, :16, 16:32])  # x fastest
    assert torch.equal(tokens[0, 3], x[0, 0, :4, 16:32, :16])
    assert torch.equal(tokens[0, 6], x[0, 0, 4:8, :16, :16])  # then y, then z
    assert torch.equal(unpatchify(tokens, x.shape), x)


def test_random_token_mask_blanks_exactly_int_n_times_ratio_tokens():
    x = volume(3)
    masked, mask = random_token_mask(x, 0.4, "zero", torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [int(20 * 0.4)] * 3
    changed = (patchify(masked) != patchify(x)).flatten(2).any(-1)
    assert torch.equal(changed, mask)


def test_next_token_prefix_keeps_the_prefix_and_targets_token_k():
    x = volume(2)
    k = torch.tensor([3, 11])
    masked, target, _ = next_token_prefix(x, k, "noise", torch.Generator().manual_seed(0))
    tokens, masked_tokens = patchify(x), patchify(masked)
    for b in range(2):
        assert torch.equal(masked_tokens[b, : k[b]], tokens[b, : k[b]])
        assert not torch.equal(masked_tokens[b, k[b]], tokens[b, k[b]])
        assert torch.equal(target[b, 0], tokens[b, k[b]])


def test_mixture_schedule_cycles_through_all_three_tasks():
    assert [task_for_step(s) for s in range(6)] == ["random", "next_token", "next_all"] * 2
    assert [task_for_step(s, block=2) for s in range(6)] == [
        "random",
        "random",
        "next_token",
        "next_token",
        "next_all",
        "next_all",
    ]


@pytest.mark.parametrize("objective", ["mixture", "random", "next_token", "next_all", "joint"])
def test_every_pretraining_objective_gives_a_finite_loss_with_gradients(objective):
    torch.manual_seed(0)
    config = TokenUnifyConfig(**TINY, out_chans=1, next_token_head=True, head_input_size=SIZE, objective=objective)
    model = TokenUnify(config)
    loss = model.training_loss({"volume": volume(1), "generator": torch.Generator().manual_seed(0)})
    loss.backward()
    assert torch.isfinite(loss) and model.vit.stages[0][0].mamba.A_log.grad.abs().sum() > 0


def test_affinity_loss_trains_from_labels():
    torch.manual_seed(0)
    model = TokenUnify(TokenUnifyConfig(**TINY))
    labels = torch.randint(1, 4, (2, *SIZE))
    loss = model.training_loss({"volume": volume(2), "labels": labels})
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


def test_preprocess_stacks_a_list_of_volumes_of_one_shape_and_refuses_mixed_shapes(model):
    volumes = [np.random.default_rng(i).random((16, 32, 32), dtype=np.float32) for i in range(2)]
    batch = model.preprocess(volumes)
    assert batch.shape == (2, 1, 16, 32, 32)
    assert torch.equal(batch[1, 0], torch.from_numpy(volumes[1]))
    with pytest.raises(InputError, match="share a shape"):
        model.preprocess([volumes[0], volumes[1][:8]])
    with pytest.raises(InputError, match="empty batch"):
        model.preprocess([])


def test_npz_volumes_load_with_their_labels_and_give_a_training_batch(tmp_path):
    from em_volume.synth import write_sample_files

    tiny = zoo.load("tokenunify-tiny")
    paths = write_sample_files(tmp_path, shape=tuple(tiny.config.crop_size), seeds=(5, 6))
    items = [tiny.load_item(p) for p in paths]
    batch = tiny.training_batch(items)
    assert batch["volume"].shape == (2, 1, *tiny.config.crop_size)
    assert batch["labels"].shape == (2, *tiny.config.crop_size) and batch["labels"].dtype == torch.int64
    assert torch.isfinite(tiny.training_loss(batch))
    with pytest.raises(InputError, match="labels"):
        tiny.training_batch([items[0]["volume"]])


def test_a_corrupt_npz_volume_is_reported_as_corrupt(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="bad.npz"):
        zoo.load("tokenunify-tiny").load_item(bad)
