"""Upstream FlexTok checkpoints: allowlisted config parsing, the upstream folder/Hub layout, conversion.

The upstream repo layout is rebuilt from the parity fixture: config.json = the nested ``_target_``
config, model.safetensors = upstream-named weights with the config in ``__metadata__``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import parity_fixture, parity_params, require_fixture
from tests.test_flextok_parity import assert_upstream_token_ids
from zoo.errors import CheckpointMismatchError, ConfigError
from zoo.parity import ToleranceTable, assert_close

FIXTURES = parity_params("flextok")


def _upstream_repo(fixture_dir, folder: Path) -> Path:
    """A folder laid out as EPFL-VILAB publishes: config.json (the config dict) + model.safetensors."""
    require_fixture(fixture_dir, "flextok")
    config = json.loads((Path(fixture_dir) / "config.json").read_text())["upstream_config"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(Path(fixture_dir) / "weights.safetensors", folder / "model.safetensors")
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: apple-amlr\n---\n# FlexTok\n")
    return folder


def _fixture_io(fixture_dir):
    return parity_fixture(fixture_dir, "flextok").io


def _upstream_config(fixture_dir):
    require_fixture(fixture_dir, "flextok")
    return json.loads((Path(fixture_dir) / "config.json").read_text())["upstream_config"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_upstream_folder_loads_through_zoo_load_and_reproduces_token_ids(fixture_dir, tmp_path):
    import zoo

    repo = _upstream_repo(fixture_dir, tmp_path / "flextok_repo")
    model = zoo.load(repo, arch="flextok")  # an upstream config.json names no zoo arch
    assert_upstream_token_ids(model.encode(_fixture_io(fixture_dir)["images"]).ids, fixture_dir, model.fsq)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_upstream_config_from_safetensors_metadata_alone(fixture_dir):
    from vision.flextok.convert import load_upstream

    require_fixture(fixture_dir, "flextok")
    model = load_upstream(Path(fixture_dir) / "weights.safetensors")  # config parsed from __metadata__
    assert_upstream_token_ids(model.encode(_fixture_io(fixture_dir)["images"]).ids, fixture_dir, model.fsq)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_parser_refuses_a_target_outside_the_allowlist(fixture_dir):
    from vision.flextok.convert import parse_upstream_config

    config = copy.deepcopy(_upstream_config(fixture_dir))
    config["encoder"]["module_dict"]["enc_to_latents"]["_target_"] = "os.system"
    with pytest.raises(ConfigError, match="os.system"):
        parse_upstream_config(config)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_parser_refuses_settings_this_model_does_not_implement(fixture_dir):
    from vision.flextok.convert import parse_upstream_config

    config = copy.deepcopy(_upstream_config(fixture_dir))
    config["encoder"]["module_dict"]["enc_transformer"]["qkv_bias"] = True
    with pytest.raises(ConfigError, match="qkv_bias"):
        parse_upstream_config(config)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_parser_refuses_an_unknown_module_graph(fixture_dir):
    from vision.flextok.convert import parse_upstream_config

    config = copy.deepcopy(_upstream_config(fixture_dir))
    config["decoder"]["module_dict"]["dec_extra"] = {"_target_": "flextok.model.preprocessors.linear.LinearLayer"}
    with pytest.raises(ConfigError, match="dec_extra"):
        parse_upstream_config(config)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_upstream_weights_with_an_unknown_key_are_refused(fixture_dir, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vision.flextok.convert import load_upstream

    require_fixture(fixture_dir, "flextok")
    with safe_open(str(Path(fixture_dir) / "weights.safetensors"), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    state["encoder.module_dict.enc_extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "w.safetensors"), metadata=meta)
    with pytest.raises(CheckpointMismatchError, match="enc_extra"):
        load_upstream(tmp_path / "w.safetensors")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_convert_checkpoint_writes_a_zoo_folder_with_the_same_weights(fixture_dir, tmp_path):
    import zoo
    from vision.flextok.convert import convert_checkpoint, load_upstream

    repo = _upstream_repo(fixture_dir, tmp_path / "up")
    out = convert_checkpoint("flextok", repo, tmp_path / "zoo")
    assert json.loads((out / "config.json").read_text())["arch"] == "flextok"
    assert "apple-amlr" in (out / "README.md").read_text()
    converted, original = zoo.load(out), load_upstream(repo / "model.safetensors")
    a, b = converted.state_dict(), original.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_official_card_loads_from_a_hub_repo_in_the_upstream_layout(fixture_dir, tmp_path, request):
    import zoo

    try:
        hub = request.getfixturevalue("hub")
    except pytest.FixtureLookupError:
        pytest.skip("the local Hub server (tests/hubserver.py, `hub` fixture) is not in this checkout yet")
    repo = _upstream_repo(fixture_dir, tmp_path / "flextok_d12_d12_in1k")
    hub.upload_folder("EPFL-VILAB/flextok_d12_d12_in1k", repo)
    images = _fixture_io(fixture_dir)["images"]
    by_card = zoo.load("flextok-d12-d12-in1k")  # the card names the repo; weights come from the server
    assert_upstream_token_ids(by_card.encode(images).ids, fixture_dir, by_card.fsq)
    by_repo = zoo.load("hf-hub:EPFL-VILAB/flextok_d12_d12_in1k", arch="flextok")
    assert_upstream_token_ids(by_repo.encode(images).ids, fixture_dir, by_repo.fsq)


def test_flextok_official_cards_state_the_research_only_weights_license():
    from zoo.registry import card_data, list_models

    official = [n for n in list_models("flextok*") if card_data(n).get("hub_repo", "").startswith("EPFL-VILAB/")]
    tokenizers = [n for n in official if card_data(n)["arch"] == "flextok"]
    vaes = [n for n in list_models("flextok-vae-*") if card_data(n).get("hub_repo", "").startswith("EPFL-VILAB/")]
    assert len(tokenizers) == 4 and len(vaes) == 3
    for name in tokenizers + vaes:
        assert card_data(name)["license_name"] == "apple-amlr", name


def _diffusers_vae_repo(fixture_dir, folder: Path) -> Path:
    """The VAE part of the fixture saved as EPFL-VILAB publishes its VAEs: a diffusers folder."""
    from diffusers import AutoencoderKL
    from safetensors import safe_open

    require_fixture(fixture_dir, "flextok")
    config = json.loads((Path(fixture_dir) / "config.json").read_text())["vae_diffusers_config"]
    vae = AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    with safe_open(str(Path(fixture_dir) / "weights.safetensors"), framework="pt") as f:
        state = {k[len("vae.vae.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("vae.vae.")}
    vae.load_state_dict(state, strict=True)
    vae.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_vae_loads_from_a_diffusers_folder_and_reproduces_the_latents(fixture_dir, tmp_path):
    import zoo

    repo = _diffusers_vae_repo(fixture_dir, tmp_path / "flextok_vae_c16")
    vae = zoo.load(repo, arch="flextok-vae")
    io = _fixture_io(fixture_dir)
    scale = json.loads((Path(fixture_dir) / "config.json").read_text())["upstream_config"]["vae"]["scaling_factor"]
    tokens = vae.encode(io["images"])
    b, c, h, w = io["vae_latents"].shape
    latents = tokens.embeddings.transpose(1, 2).reshape(b, c, h, w) * scale
    tols = ToleranceTable(parity_fixture(fixture_dir, "flextok").config["recommended_tolerances"])
    assert_close(latents, io["vae_latents"], tols["vae_latents"], "vae_latents")
    assert vae.decode(tokens).shape == io["images"].shape


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_flextok_vae_card_loads_from_a_hub_repo_in_the_diffusers_layout(fixture_dir, tmp_path, request):
    import zoo

    try:
        hub = request.getfixturevalue("hub")
    except pytest.FixtureLookupError:
        pytest.skip("the local Hub server (tests/hubserver.py, `hub` fixture) is not in this checkout yet")
    repo = _diffusers_vae_repo(fixture_dir, tmp_path / "flextok_vae_c16")
    hub.upload_folder("EPFL-VILAB/flextok_vae_c16", repo)
    vae = zoo.load("flextok-vae-c16")
    io = _fixture_io(fixture_dir)
    assert vae.encode(io["images"]).embeddings.shape[-1] == io["vae_latents"].shape[1]
