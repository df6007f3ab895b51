"""FlexTok against upstream, number for number, from every fixture folder under $TOKENZOO_PARITY_DIR/flextok.

Every size comes from the fixture's config.json and tensor shapes, every key from its ``io_tensors`` table,
and every tolerance from its ``recommended_tolerances`` (compared by zoo.parity's rule).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import parity_fixture, parity_params
from zoo.parity import Tolerance, ToleranceTable, assert_close, assert_same_fsq_ids, randn_kernel_error

FIXTURES = parity_params("flextok")
DECODER_FORWARD = re.compile(r"dec_v_(?P<flag>cond|uncond)_t(?P<t>\d+)_(?P<tokens>full|trunc)")


@lru_cache(maxsize=4)
def _model(fixture_dir: Path, weights: Path):
    from vision.flextok.convert import load_upstream

    return load_upstream(weights, parity_fixture(fixture_dir, "flextok").config["upstream_config"])


def _fixture(fixture_dir):
    """(config, described io, our model with upstream's weights, stated tolerances)."""
    fixture = parity_fixture(fixture_dir, "flextok")
    tols = ToleranceTable(fixture.config["recommended_tolerances"])
    return fixture.config, fixture.io, _model(fixture_dir, fixture.weights_file), tols


def _close(actual, expected, tols, name):
    assert_close(actual, expected, tols[name], name)


def assert_upstream_token_ids(ids, fixture_dir, fsq, name: str = "token_ids") -> None:
    """``ids`` of the fixture's images equal upstream's, except a digit that upstream's own FSQ input puts
    within the stated tolerance of registers_pre_fsq of a rounding boundary (then the adjacent level)."""
    _, io, _, tols = _fixture(fixture_dir)
    pre = io["registers_pre_fsq"]
    assert_same_fsq_ids(ids, io["token_ids"], fsq, pre, tols["registers_pre_fsq"].budget(pre), name)


def timestep(tag: str) -> float:
    """A key's time tag as a number: ``1`` -> 1.0, ``05`` -> 0.5 (a leading 0 is the decimal point)."""
    return float(f"0.{tag[1:]}") if tag.startswith("0") else float(tag)


def _guidance(case):
    schedule = case.get("guidance_schedule")
    if schedule:
        assert schedule["form"] == "a + b * t"
        return lambda t: schedule["a"] + schedule["b"] * t
    return case["guidance_scale"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_config_and_vae_structure_match_the_fixture(fixture_dir):
    config, _, model, _ = _fixture(fixture_dir)
    vae = config["vae_diffusers_config"]
    assert list(model.config.vae_block_out_channels) == vae["block_out_channels"]
    assert model.config.vae_layers_per_block == vae["layers_per_block"]
    assert model.config.latent_channels == vae["latent_channels"]
    assert model.config.num_registers == config["hyperparameters"]["n_registers"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_vae_latents_and_reconstruction(fixture_dir):
    _, io, model, tols = _fixture(fixture_dir)
    with torch.no_grad():
        _close(model.vae_encode(io["images"]), io["vae_latents"], tols, "vae_latents")
        _close(model.vae_decode(io["vae_latents"]), io["vae_recon"], tols, "vae_recon")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_encoder_intermediates(fixture_dir):
    _, io, model, tols = _fixture(fixture_dir)
    with torch.no_grad():
        pre, trunk_registers, trunk_patches = model.encoder(io["vae_latents"], return_trunk=True)
    _close(trunk_registers, io["enc_registers_trunk"], tols, "enc_registers_trunk")
    _close(trunk_patches.reshape(io["enc_patches_trunk"].shape), io["enc_patches_trunk"], tols, "enc_patches_trunk")
    _close(pre, io["registers_pre_fsq"], tols, "registers_pre_fsq")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_token_ids_and_codes_are_exact(fixture_dir):
    """Ids and codes exactly, except a digit that upstream's own FSQ input puts within the stated
    tolerance of registers_pre_fsq of a rounding boundary (then the adjacent level, with a warning)."""
    _, io, model, tols = _fixture(fixture_dir)
    assert_upstream_token_ids(model.encode(io["images"]).ids, fixture_dir, model.fsq)
    codes, ids = model.tokenize_latents(io["vae_latents"])
    assert_upstream_token_ids(ids, fixture_dir, model.fsq, "ids of tokenize_latents")
    assert_close(codes, model.fsq.ids_to_codes(ids), tols["fsq_codes"], "fsq_codes of our ids")
    if torch.equal(ids, io["token_ids"]):
        assert_close(codes, io["fsq_codes"], tols["fsq_codes"], "fsq_codes")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_fsq_probe_is_exact_through_zoo_quant(fixture_dir):
    from zoo.quant import FSQ

    config, io, _, tols = _fixture(fixture_dir)
    codes, ids = FSQ(config["upstream_config"]["regularizer"]["levels"]).quantize(io["fsq_probe_z"])
    _close(codes, io["fsq_probe_codes"], tols, "fsq_probe_codes")
    _close(ids, io["fsq_probe_ids"], tols, "fsq_probe_ids")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_single_decoder_forwards(fixture_dir):
    """Every ``dec_v_<cond|uncond>_t<T>_<full|trunc>`` the fixture describes: one decoder forward at t = T
    on ``noise`` (t = 1) or on ``dec_x_t<T>``, with all tokens or ``trunc_keep_k`` of them."""
    _, io, model, tols = _fixture(fixture_dir)
    ids = io["token_ids"]
    b, r = ids.shape
    codes = model.fsq.ids_to_codes(ids)
    cases = [(name, DECODER_FORWARD.fullmatch(name)) for name in io if DECODER_FORWARD.fullmatch(name)]
    assert cases, "the fixture describes no single decoder forward (dec_v_*)"
    with torch.no_grad():
        for name, case in cases:
            t = timestep(case["t"])
            x = io[f"dec_x_t{case['t']}"] if t != 1.0 else io["noise"]
            keep = io["trunc_keep_k"] if case["tokens"] == "trunc" else torch.full((b,), r)
            flag = torch.full((b,), case["flag"] == "uncond")
            _close(model.velocity(x, torch.full((b,), t), codes, keep, flag), io[name], tols, name)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_full_decodes_with_injected_noise(fixture_dir):
    from zoo.api import Tokens

    config, io, model, tols = _fixture(fixture_dir)
    steps = config["sampling"]["timesteps"]
    for case in config["decode_cases"]:
        images = case.get("input_images", list(range(io["token_ids"].shape[0])))
        ids = io["token_ids"][images]
        lengths = torch.tensor(case["token_lengths"])
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        tokens = Tokens(ids=ids, mask=mask, meta={"image_size": list(io["images"].shape[-2:])})
        # upstream gives image j of the call noise draw j: inject the first len(images) draws
        noise = io["noise"][: len(images)]
        out, latents = model.decode(
            tokens,
            steps=steps,
            guidance=_guidance(case),
            apg=case["perform_norm_guidance"],
            noise=noise,
            return_latents=True,
        )
        _close(latents, io[case["latents_key"]], tols, case["latents_key"])
        _close(out, io[case["images_key"]], tols, case["images_key"])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_upstream_noise_mode_reproduces_the_fixture_noise(fixture_dir):
    """One CPU generator seeded ``gen_seed`` drawing each image's noise in batch order: upstream's values
    exactly where the Box-Muller kernel is the fixture's, and within that transform's rounding where
    ATEN_CPU_CAPABILITY picks another (SLEEF vs libm)."""
    config, io, model, _ = _fixture(fixture_dir)
    ids = io["token_ids"]
    keep = torch.full((ids.shape[0],), ids.shape[1])
    noise = model.draw_noise(ids, keep, tuple(io["noise"].shape[-2:]), config["sampling"]["gen_seed"], "upstream")
    assert_close(noise, io["noise"], Tolerance(), "noise", extra=randn_kernel_error(io["noise"]))


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_preprocessing_matches_upstream(fixture_dir):
    from PIL import Image

    from vision.flextok.model import resize_center_crop

    config, io, _, tols = _fixture(fixture_dir)
    source, target = config["preprocessing"]["input_key"], config["preprocessing"]["output_key"]
    size = io[target].shape[-1]
    image = Image.fromarray(np.ascontiguousarray(io[source].numpy()))
    _close(resize_center_crop(image, size)[None], io[target], tols, target)
