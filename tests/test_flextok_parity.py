"""FlexTok against upstream, number for number, from every fixture folder under $TOKENZOO_PARITY_DIR/flextok.

Every size comes from the fixture's config.json and weight shapes; tolerances from its README.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import assert_max_abs_close, parity_params, require_fixture

FIXTURES = parity_params("flextok")
ATOL_LATENTS = 1e-5  # vae_latents
ATOL_FORWARD = 5e-5  # encoder intermediates and single decoder forwards
ATOL_DECODE = 1e-4  # vae_recon and full decodes
ATOL_PREP = 1e-6


@lru_cache(maxsize=4)
def _load(fixture_dir: Path):
    from safetensors.torch import load_file

    from vision.flextok.convert import load_upstream

    config = json.loads((fixture_dir / "config.json").read_text())
    io = load_file(str(fixture_dir / "io.safetensors"))
    model = load_upstream(fixture_dir / "weights.safetensors", config["upstream_config"])
    return config, io, model


def _fixture(fixture_dir):
    require_fixture(fixture_dir, "flextok")
    return _load(Path(fixture_dir))


def _guidance(case):
    schedule = case.get("guidance_schedule")
    if schedule:
        assert schedule["form"] == "a + b * t"
        return lambda t: schedule["a"] + schedule["b"] * t
    return case["guidance_scale"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_config_and_vae_structure_match_the_fixture(fixture_dir):
    config, _, model = _fixture(fixture_dir)
    vae = config["vae_diffusers_config"]
    assert list(model.config.vae_block_out_channels) == vae["block_out_channels"]
    assert model.config.vae_layers_per_block == vae["layers_per_block"]
    assert model.config.latent_channels == vae["latent_channels"]
    assert model.config.num_registers == config["hyperparameters"]["n_registers"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_vae_latents_and_reconstruction(fixture_dir):
    _, io, model = _fixture(fixture_dir)
    with torch.no_grad():
        assert_max_abs_close(model.vae_encode(io["images"]), io["vae_latents"], ATOL_LATENTS, "vae_latents")
        assert_max_abs_close(model.vae_decode(io["vae_latents"]), io["vae_recon"], ATOL_DECODE, "vae_recon")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_encoder_intermediates(fixture_dir):
    _, io, model = _fixture(fixture_dir)
    with torch.no_grad():
        pre, trunk_registers, trunk_patches = model.encoder(io["vae_latents"], return_trunk=True)
    assert_max_abs_close(trunk_registers, io["enc_registers_trunk"], ATOL_FORWARD, "enc_registers_trunk")
    assert_max_abs_close(
        trunk_patches.reshape(io["enc_patches_trunk"].shape), io["enc_patches_trunk"], ATOL_FORWARD, "patches"
    )
    assert_max_abs_close(pre, io["registers_pre_fsq"], ATOL_FORWARD, "registers_pre_fsq")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_token_ids_and_codes_are_exact(fixture_dir):
    _, io, model = _fixture(fixture_dir)
    tokens = model.encode(io["images"])
    assert torch.equal(tokens.ids, io["token_ids"])
    codes, _ = model.tokenize_latents(io["vae_latents"])
    assert torch.equal(codes, io["fsq_codes"])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_fsq_probe_is_exact_through_zoo_quant(fixture_dir):
    from zoo.quant import FSQ

    config, io, _ = _fixture(fixture_dir)
    codes, ids = FSQ(config["upstream_config"]["regularizer"]["levels"]).quantize(io["fsq_probe_z"])
    assert torch.equal(codes, io["fsq_probe_codes"])
    assert torch.equal(ids, io["fsq_probe_ids"])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_single_decoder_forwards(fixture_dir):
    _, io, model = _fixture(fixture_dir)
    b = io["noise"].shape[0]
    r = model.config.num_registers
    codes = model.fsq.ids_to_codes(io["token_ids"])
    full = torch.full((b,), r)
    cond, uncond = torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)
    cases = [
        ("dec_v_cond_t1_full", io["noise"], 1.0, full, cond),
        ("dec_v_uncond_t1_full", io["noise"], 1.0, full, uncond),
        ("dec_v_cond_t1_trunc", io["noise"], 1.0, io["trunc_keep_k"], cond),
        ("dec_v_cond_t05_full", io["dec_x_t05"], 0.5, full, cond),
        ("dec_v_uncond_t05_full", io["dec_x_t05"], 0.5, full, uncond),
    ]
    with torch.no_grad():
        for name, x, t, keep, flag in cases:
            assert_max_abs_close(
                model.velocity(x, torch.full((b,), t), codes, keep, flag), io[name], ATOL_FORWARD, name
            )


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_full_decodes_with_injected_noise(fixture_dir):
    from zoo.api import Tokens

    config, io, model = _fixture(fixture_dir)
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
        assert_max_abs_close(latents, io[case["latents_key"]], ATOL_DECODE, case["latents_key"])
        assert_max_abs_close(out, io[case["images_key"]], ATOL_DECODE, case["images_key"])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_upstream_noise_mode_reproduces_the_fixture_noise(fixture_dir):
    config, io, model = _fixture(fixture_dir)
    ids = io["token_ids"]
    keep = torch.full((ids.shape[0],), ids.shape[1])
    noise = model.draw_noise(ids, keep, tuple(io["noise"].shape[-2:]), config["sampling"]["gen_seed"], "upstream")
    assert torch.equal(noise, io["noise"])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_flextok_preprocessing_matches_upstream(fixture_dir):
    from PIL import Image

    from vision.flextok.model import resize_center_crop

    config, io, _ = _fixture(fixture_dir)
    size = io["prep_output"].shape[-1]
    image = Image.fromarray(np.ascontiguousarray(io["prep_input_uint8"].numpy()))
    assert_max_abs_close(resize_center_crop(image, size)[None], io["prep_output"], ATOL_PREP, "prep_output")
