"""FlexTok's zoo surface: encode/decode contract, batching, noise, files, bad input (tiny random models)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vision.flextok.model import FlexTok, FlexTokConfig
from zoo.api import Tokens
from zoo.errors import ConfigError, InputError

TEST_CONFIG = FlexTokConfig(
    vae_block_out_channels=(8, 8),  # f2
    vae_layers_per_block=1,
    vae_norm_num_groups=4,
    latent_channels=4,
    vae_scaling_factor=1.5,
    posemb_grid=(6, 6),  # up to 24 px
    encoder_dim=32,
    encoder_depth=1,
    encoder_head_dim=16,
    decoder_dim=32,
    decoder_depth=1,
    decoder_head_dim=16,
    num_registers=8,
    image_size=16,
    decode_steps=2,
    guidance=2.0,
    apg=True,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = FlexTok(TEST_CONFIG).eval()
    # adaLN-zero starts as an identity; give it weights so conditioning changes the output
    with torch.no_grad():
        for block in m.decoder.transformer["blocks"]:
            block.adaLN_modulation[1].weight.normal_(0, 0.2)
    return m


def images(b=2, h=16, w=16, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_encode_returns_one_id_per_register_for_each_image(model):
    tokens = model.encode(images(3))
    assert tokens.ids.shape == (3, 8) and tokens.ids.dtype == torch.int64
    assert tokens.mask.all() and tokens.lengths.tolist() == [8, 8, 8]
    assert int(tokens.ids.max()) < 64000


def test_encode_with_k_per_image_sets_the_mask_prefix(model):
    tokens = model.encode(images(3), k=[1, 4, 8])
    assert tokens.lengths.tolist() == [1, 4, 8]
    assert tokens.ids.shape == (3, 8)


def test_encode_of_one_image_does_not_depend_on_its_batch(model):
    batch = images(3)
    assert torch.equal(model.encode(batch[1:2]).ids[0], model.encode(batch).ids[1])


def test_encode_accepts_pil_images_paths_and_arrays(model, tmp_path):
    from PIL import Image

    array = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    from_array = model.encode([array]).ids
    assert torch.equal(model.encode([Image.fromarray(array)]).ids, from_array)
    assert torch.equal(model.encode([tmp_path / "a.png"]).ids, from_array)
    assert torch.equal(model.encode(str(tmp_path / "a.png")).ids, from_array)


def test_preprocess_resizes_the_shorter_side_and_centre_crops(model):
    from PIL import Image

    batch = model.preprocess([Image.new("RGB", (40, 20), (255, 0, 0))])
    assert batch.shape == (1, 3, 16, 16)
    assert torch.allclose(batch[0, 0], torch.ones(16, 16)) and torch.allclose(batch[0, 1], -torch.ones(16, 16))


def test_decode_returns_an_image_batch_of_the_encoded_size(model):
    out = model.decode(model.encode(images(2, 16, 24)))
    assert out.shape == (2, 3, 16, 24) and torch.isfinite(out).all()


def test_decoding_one_image_does_not_depend_on_its_batch(model):
    tokens = model.encode(images(3), k=[2, 8, 5])
    alone = model.decode(tokens[1], seed=7)
    together = model.decode(tokens, seed=7)
    torch.testing.assert_close(alone[0], together[1], atol=1e-4, rtol=0)


def test_upstream_noise_mode_ties_noise_to_batch_position(model):
    tokens = model.encode(images(2))
    alone = model.decode(tokens[1], noise="upstream", seed=0)
    together = model.decode(tokens, noise="upstream", seed=0)
    assert not torch.allclose(alone[0], together[1], atol=1e-3)


def test_decode_is_reproducible_for_a_seed_and_varies_across_seeds(model):
    tokens = model.encode(images(1))
    a, b, c = (model.decode(tokens, seed=s) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_truncated_tokens_decode_like_a_mask_of_the_same_length(model):
    tokens = model.encode(images(1))
    short = model.decode(tokens.truncate(3), seed=1)
    masked = model.decode(model.encode(images(1), k=3), seed=1)
    torch.testing.assert_close(short, masked, atol=1e-5, rtol=0)


def test_guidance_schedule_callable_is_accepted(model):
    out = model.decode(model.encode(images(1)), guidance=lambda t: 1.0 + 2.0 * t, apg=False)
    assert out.shape == (1, 3, 16, 16)


def test_save_and_load_round_trip_gives_identical_tokens(model, tmp_path):
    import zoo

    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arch"] == "flextok"
    loaded = zoo.load(tmp_path / "m")
    x = images(2)
    assert torch.equal(loaded.encode(x).ids, model.encode(x).ids)


def test_model_cast_to_bfloat16_encodes_and_decodes(model, tmp_path):
    import zoo

    model.save_pretrained(tmp_path / "m")
    half = zoo.load(tmp_path / "m", dtype=torch.bfloat16)
    out = half.decode(half.encode(images(1)))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_sample_inputs_are_bundled_images_that_encode(model):
    paths = model.sample_inputs()
    assert len(paths) >= 2
    assert model.encode(paths).ids.shape == (len(paths), 8)


def test_registry_names_this_class():
    from zoo.registry import get_arch

    assert get_arch("flextok") is FlexTok


def test_bits_per_token_is_log2_of_the_fsq_codebook():
    from vision.flextok.model import count_image_tokens_bits

    assert count_image_tokens_bits(TEST_CONFIG) == pytest.approx(np.log2(64000))


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 1, 16, 16), "3 channels"),
        (torch.zeros(1, 3, 2, 2), "multiple of"),
        (torch.zeros(1, 3, 18, 16), "multiple of"),
        (torch.zeros(1, 3, 32, 32), "positional table"),
        (torch.full((1, 3, 16, 16), 200.0), r"\[-1, 1\]"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(3, 16, 16), "dimensions"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "floating point"),
    ],
    ids=["channels", "too-small", "not-multiple", "too-large", "range", "nan", "rank", "dtype"],
)
def test_encode_rejects_bad_images_with_a_clear_error(model, bad, message):
    with pytest.raises(InputError, match=message):
        model.encode(bad)


@pytest.mark.parametrize("k", [0, 9, [1, 2, 3]])
def test_encode_rejects_k_outside_one_to_registers(model, k):
    with pytest.raises(InputError, match="k must"):
        model.encode(images(2), k=k)


def test_decode_rejects_ids_outside_the_codebook(model):
    with pytest.raises(InputError, match="64000"):
        model.decode(Tokens(ids=torch.full((1, 8), 64000, dtype=torch.int64)))


def test_decode_rejects_a_mask_that_is_not_a_prefix(model):
    mask = torch.tensor([[True, False, True, False, False, False, False, False]])
    with pytest.raises(InputError, match="prefix"):
        model.decode(Tokens(ids=torch.zeros(1, 8, dtype=torch.int64), mask=mask))


def test_decode_rejects_more_tokens_than_registers(model):
    with pytest.raises(InputError, match="at most 8"):
        model.decode(Tokens(ids=torch.zeros(1, 9, dtype=torch.int64)))


def test_decode_rejects_injected_noise_of_the_wrong_shape(model):
    with pytest.raises(InputError, match="noise must have shape"):
        model.decode(model.encode(images(1)), noise=torch.zeros(1, 4, 4, 4))


def test_preprocess_reports_a_missing_file(model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        model.encode([tmp_path / "nope.png"])


def test_preprocess_reports_a_corrupt_file(model, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read"):
        model.encode([tmp_path / "bad.png"])


@pytest.mark.parametrize(
    "field, value",
    [("encoder_head_dim", 24), ("null_condition", "random"), ("num_registers", 0), ("vae_scaling_factor", 0.0)],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(TEST_CONFIG, **{field: value})


def test_zero_null_condition_has_no_weights_and_replaces_every_register_by_zeros():
    m = FlexTok(dataclasses.replace(TEST_CONFIG, null_condition="zero"))
    assert not any("null_cond" in k for k in m.state_dict())
    codes = m.fsq.ids_to_codes(torch.zeros(2, 8, dtype=torch.int64))
    registers = m.decoder.condition(codes, torch.tensor([8, 3]), torch.tensor([True, False]))
    assert torch.equal(registers[0], torch.zeros(8, 32))
    assert torch.equal(registers[1, 3:], m.decoder.mask_token.expand(5, -1))


# ---- precision ------------------------------------------------------------------------------------
def test_precision_is_a_config_field_and_a_call_argument_not_a_mutable_attribute(model):
    assert not hasattr(model, "use_bf16")
    with pytest.raises(ConfigError, match="autocast_dtype"):
        dataclasses.replace(TEST_CONFIG, autocast_dtype="int8")
    with pytest.raises(InputError, match="autocast_dtype"):
        model.encode(images(1), autocast_dtype="fp8")


@pytest.mark.parametrize("autocast_dtype", ["bfloat16", "float16", "float32"])
def test_token_transformers_autocast_in_the_asked_dtype_on_accelerators_and_never_on_cpu(
    model, autocast_dtype, monkeypatch
):
    monkeypatch.setattr(torch, "autocast", lambda **options: options)  # what FlexTok asks torch for
    for device, enabled in (("cpu", False), ("cuda", autocast_dtype != "float32")):
        options = model.autocast(torch.device(device), autocast_dtype)
        assert options == {"device_type": device, "dtype": getattr(torch, autocast_dtype), "enabled": enabled}


def test_the_config_default_is_upstream_s_bfloat16(model):
    assert model.config.autocast_dtype == "bfloat16"
    assert torch.equal(model.encode(images(2)).ids, model.encode(images(2), autocast_dtype="float32").ids)  # CPU
