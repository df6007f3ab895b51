"""Official models loaded by name from repos laid out as their publishers lay them out, served by the local Hub.

Each test builds a stand-in of the real release from the parity fixture's upstream weights (the file names,
folders and formats of the release: an ONNX graph exported by torch.onnx.export, a pickled training
checkpoint with ``module.`` prefixes and optimizer state), commits it under the repo and file the card
names, and checks that ``zoo.load(name)`` gives upstream's ids. The stand-in cannot have the real file's
sha256, so the card is first shown to refuse it; then a copy of the card with the stand-in's hash (and the
sizes a tiny release has that its weights cannot tell) loads it. Cards are never edited.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.helpers import parity_params
from tests.release_layouts import (
    RELEASE_FILE,
    export_s3tokenizer_release,
    official_card_copy,
    release_s3tokenizer,
)
from tests.test_audio_parity import EXACT, assert_clip_ids, clips
from tests.test_audio_parity import _fixture as s3_fixture
from tests.test_em_parity import fixture as em_fixture
from tests.test_em_parity import folders as em_folders
from tests.test_video_pose_parity import fixture_of as hot_fixture
from tests.test_video_pose_parity import fixtures_holding, floats, forward_like_upstream
from zoo.errors import ChecksumMismatchError
from zoo.parity import assert_close
from zoo.registry import card_data


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conversions(name: str) -> list[Path]:
    from zoo.official import cache_root

    return sorted((cache_root() / "converted" / name).glob("*/conversion.json"))


# ---- S3Tokenizer: ONNX graphs in FunAudioLLM's repos ------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", parity_params("s3tokenizer"))
def test_parity_s3tokenizer_card_loads_a_release_exported_in_upstreams_layout_with_upstreams_ids(
    fixture_dir, hub, tmp_path, monkeypatch
):
    fixture, reference, tols = s3_fixture(fixture_dir)
    io, variant, n_head = fixture.io, fixture.config["variant"], fixture.config["config"]["n_audio_head"]
    release = release_s3tokenizer(variant, load_file(fixture.weights_file), n_head)
    for clip in clips(fixture):  # the layout module computes upstream's function, so its export is an honest release
        ids = release(io[f"{clip}.mel"][None])[0]
        assert_clip_ids(reference, ids, clip, fixture, tols, f"release module {clip}")
    name = f"s3tokenizer-{variant}"
    (spec,) = card_data(name)["upstream_files"]
    assert spec["filename"] == RELEASE_FILE[variant]
    graph = export_s3tokenizer_release(release, tmp_path / "release" / spec["filename"])
    hub.commit(spec["repo"], {spec["filename"]: graph.read_bytes(), "README.md": "# CosyVoice"})

    with pytest.raises(ChecksumMismatchError, match=spec["sha256"]):  # the real card wants the real release
        zoo.load(name)
    cards = official_card_copy(name, tmp_path / "cards", [{"sha256": sha256(graph)}], {"n_audio_head": n_head})
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    model = zoo.load(name)
    tokens = model.encode(io["batch.wav"], lengths=io["batch.wav_len"])
    assert_close(tokens.lengths, io["batch.codes_len"], EXACT, "batch.codes_len")
    for i, (clip, n) in enumerate(zip(clips(fixture), tokens.lengths.tolist())):
        assert_clip_ids(model, tokens.ids[i, :n], clip, fixture, tols, f"{name} {clip}")
    assert model.config.variant == variant and len(conversions(name)) == 1


@pytest.mark.parametrize("fixture_dir", parity_params("s3tokenizer"))
def test_parity_s3tokenizer_published_mirror_loads_in_a_clean_cache_with_the_same_ids_and_no_conversion(
    fixture_dir, hub, tmp_path, monkeypatch, capsys
):
    """``tokenzoo publish NAME --repo ORG/NAME`` pushes the conversion; a user with empty caches loads the mirror."""
    from huggingface_hub import constants

    from zoo.cards import read_card_data
    from zoo.cli import main

    fixture, _, tols = s3_fixture(fixture_dir)
    io, variant, n_head = fixture.io, fixture.config["variant"], fixture.config["config"]["n_audio_head"]
    name = f"s3tokenizer-{variant}"
    (spec,) = card_data(name)["upstream_files"]
    release = release_s3tokenizer(variant, load_file(fixture.weights_file), n_head)
    graph = export_s3tokenizer_release(release, tmp_path / "release" / spec["filename"])
    hub.commit(spec["repo"], {spec["filename"]: graph.read_bytes()})
    cards = official_card_copy(name, tmp_path / "cards", [{"sha256": sha256(graph)}], {"n_audio_head": n_head})
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))

    assert main(["publish", name, "--repo", f"mirror-org/{name}"]) == 0
    (tmp_path / "published.md").write_bytes(hub.files(f"mirror-org/{name}")["README.md"])
    card = read_card_data(tmp_path / "published.md")
    assert card["license"] == "apache-2.0" and card["converted_from"][0]["sha256"] == sha256(graph)
    assert card["converter_version"] >= 1 and card["converter"] == name

    monkeypatch.setenv("TOKENZOO_CACHE", str(tmp_path / "a-users-empty-tokenzoo-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "a-users-empty-hf-cache"))
    fetched = len(hub.downloads(spec["filename"]))
    mirrored = zoo.load(f"hf-hub:mirror-org/{name}")
    tokens = mirrored.encode(io["batch.wav"], lengths=io["batch.wav_len"])
    for i, (clip, n) in enumerate(zip(clips(fixture), tokens.lengths.tolist())):
        assert_clip_ids(mirrored, tokens.ids[i, :n], clip, fixture, tols, f"mirrored {clip}")
    assert len(hub.downloads(spec["filename"])) == fetched and conversions(name) == []  # nothing converted


# ---- TokenUnify: training checkpoints in cyd0806/TokenUnify, picked by pattern --------------------------
def _tokenunify_repo(hub, tmp_path, finetuned: Path, pretrained: Path) -> None:
    """cyd0806/TokenUnify as the authors describe it: fine-tuned files per scale at the root (beside a
    baseline), pre-trained ones under Pretrained_weights/. The file names are our guess at theirs."""
    files = {"README.md": "# TokenUnify", "superhuman.pth": finetuned.read_bytes()}
    for tag in ("100M", "200M", "500M", "1B"):
        files[f"TokenUnify-{tag}.pth"] = finetuned.read_bytes()
        files[f"Pretrained_weights/TokenUnify_pretrained-{tag}.pth"] = pretrained.read_bytes()
    hub.commit("cyd0806/TokenUnify", files)


@pytest.mark.parametrize("fixture_dir", em_folders("model"))
def test_parity_tokenunify_card_picks_the_root_checkpoint_by_pattern_pins_it_and_matches_upstream(
    fixture_dir, hub, tmp_path
):
    from tests.release_layouts import save_tokenunify_training_checkpoint
    from zoo.official import read_pins

    _, state, io, tols = em_fixture(fixture_dir)
    checkpoint = save_tokenunify_training_checkpoint(state, tmp_path / "checkpoint-399.pth")
    _tokenunify_repo(hub, tmp_path, checkpoint, checkpoint)
    model = zoo.load("tokenunify-100m")  # the card itself: no hash to replace, the first download pins one
    with torch.no_grad():
        assert_close(model(io["input"]), io["output"], tols["output"], "output")
    (pin,) = read_pins("tokenunify-100m").values()
    assert pin["filename"] == "TokenUnify-100M.pth" and pin["sha256"] == sha256(checkpoint)
    assert pin["commit"] == hub.head("cyd0806/TokenUnify")


@pytest.mark.slow
@pytest.mark.parametrize("fixture_dir", em_folders("pretext"))
def test_parity_tokenunify_pretrained_card_reads_pretrained_weights_with_its_next_token_head(
    fixture_dir, hub, tmp_path, monkeypatch
):
    from tests.release_layouts import save_tokenunify_training_checkpoint

    _, state, io, tols = em_fixture(fixture_dir)
    pretrained = save_tokenunify_training_checkpoint(state, tmp_path / "pre" / "checkpoint-799.pth")
    finetuned = save_tokenunify_training_checkpoint({"other": torch.zeros(1)}, tmp_path / "fine" / "c.pth")
    _tokenunify_repo(hub, tmp_path, finetuned, pretrained)
    head_input = list(io["ar.input"].shape[2:])  # the tiny pre-training crop; the release's is the default
    cards = official_card_copy("tokenunify-pretrained-1b", tmp_path / "cards", options={"head_input_size": head_input})
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    model = zoo.load("tokenunify-pretrained-1b")
    assert model.config.next_token_head
    with torch.no_grad():
        logits = model.forward_logits(io["ar.input"])
        head = model.next_token_logits(logits)
    assert_close(torch.sigmoid(logits), io["ar.output"], tols["ar.output"], "ar.output")
    assert_close(head, io["ar.next_token_logits"], tols["ar.next_token_logits"], "ar.next_token_logits")


# ---- HoT and MotionBERT: checkpoints off the Hub --------------------------------------------------------
def _models(prefix: str) -> list:
    """HoT model fixtures whose upstream model is ``prefix``* (hot_mixste, hot_motionbert), from config.json."""
    return [p for p in fixtures_holding("model") if p.values[0] is None or _model_name(p.values[0]).startswith(prefix)]


def _model_name(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["model"]


@pytest.mark.parametrize("fixture_dir", _models("hot_mixste"))
def test_parity_hot_card_prints_the_command_that_converts_a_downloaded_release_with_its_settings(
    fixture_dir, tmp_path, monkeypatch, zoo_cache, capsys
):
    from zoo.cards import read_card_data
    from zoo.cli import main
    from zoo.errors import OffHubWeightsError

    fixture = hot_fixture(fixture_dir)
    c = fixture.config["constants"]
    name = "hot-mixste-h36m-243"
    with pytest.raises(OffHubWeightsError) as info:
        zoo.load(name)
    command = info.value.command
    from zoo.registry import _card_folders

    assert command in str(info.value) and command in (_card_folders()[name] / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    release = Path(command.split()[-1])  # where the card tells users to save the download
    release.parent.mkdir(parents=True)
    torch.save(dict(load_file(fixture.weights_file)), release)  # HoT saves a plain state_dict
    settings = {"prune_before_block": c["layer_index"], "knn_k": c.get("knn_k", 2), "num_heads": c["num_heads"]}
    cards = official_card_copy(name, tmp_path / "cards", options=settings)  # the tiny release's --layer_index
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    assert main(command.split()[1:]) == 0
    model = zoo.load(name)
    assert model.config.prune_before_block == c["layer_index"] and model.config.kept_frames == c["token_num"]
    out, _ = forward_like_upstream(model, fixture)
    assert_close(out, fixture.io["output"], floats(fixture.config), "output")
    (manifest,) = conversions(name)
    assert read_card_data(manifest.parent / "README.md")["converter_options"]["prune_before_block"] == c["layer_index"]


@pytest.mark.parametrize("numpy_1_spelling", [False, True], ids=["numpy._core", "numpy.core"])
@pytest.mark.parametrize("fixture_dir", _models("hot_motionbert"))
def test_parity_hot_motionbert_best_epoch_bin_with_a_numpy_min_loss_converts_with_upstream_option_names(
    fixture_dir, numpy_1_spelling, tmp_path, capsys
):
    from tests.release_layouts import save_motionbert_best_epoch
    from zoo.cards import read_card_data
    from zoo.cli import main

    fixture = hot_fixture(fixture_dir)
    c = fixture.config["constants"]
    state = load_file(fixture.weights_file)
    checkpoint = save_motionbert_best_epoch(state, tmp_path / "best_epoch.bin", numpy_1_spelling=numpy_1_spelling)
    options = [f"layer_index={c['layer_index']}", f"token_num={c['token_num']}", f"num_heads={c['num_heads']}"]
    argv = ["convert", "hot-motionbert", str(checkpoint), "--out", str(tmp_path / "converted")]
    assert main(argv + [arg for option in options for arg in ("--option", option)]) == 0
    model = zoo.load(tmp_path / "converted")
    out, _ = forward_like_upstream(model, fixture)
    assert_close(out, fixture.io["output"], floats(fixture.config), "output")
    card = read_card_data(tmp_path / "converted" / "README.md")
    assert card["converted_with"]["prune_before_block"] == c["layer_index"]
    assert "prune_before_block=" in card["weights"] and "(given)" in card["weights"]


# ---- SEED: seed_quantizer.pt in AILab-CVC/seed-tokenizer-2, the EVA ViT-g off the Hub ---------------------
@pytest.mark.parametrize("fixture_dir", parity_params("seed"))
def test_parity_seed_card_loads_the_hub_quantizer_and_the_vit_given_to_tokenzoo_convert_with_upstreams_ids(
    fixture_dir, hub, tmp_path, monkeypatch, caplog, capsys
):
    import logging

    from tests.helpers import parity_fixture
    from tests.release_layouts import save_seed_release, seed_blip2_extras
    from tests.test_seed_parity import _fixture, assert_upstream_ids, upstream_settings
    from zoo.cli import main
    from zoo.errors import OffHubWeightsError
    from zoo.official import read_pins

    config, io, _, tols = _fixture(fixture_dir)
    state = load_file(parity_fixture(fixture_dir, "seed").weights_file)
    name = "seed-tokenizer-2"
    quantizer_spec, vit_spec = card_data(name)["upstream_files"]
    assert (quantizer_spec["filename"], vit_spec["option"]) == ("seed_quantizer.pt", "vit") and "url" in vit_spec
    quantizer, vit = save_seed_release(state, tmp_path / "release")
    hub.commit(quantizer_spec["repo"], {quantizer_spec["filename"]: quantizer.read_bytes(), "README.md": "# SEED"})

    with pytest.raises(OffHubWeightsError) as info:  # the ViT is off the Hub: the error says how to convert
        zoo.load(name)
    command = info.value.command
    assert command == f"tokenzoo convert {name} --file vit={vit_spec['filename']}"
    monkeypatch.chdir(tmp_path)
    vit.rename(tmp_path / vit_spec["filename"])  # where the user saved the download
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("visual_encoder.blocks."))
    # the sizes a tiny release has that no weight tells (the card's are the release's: 39 blocks, 16 ViT heads)
    cards = official_card_copy(name, tmp_path / "cards", options={"vit_depth": depth, **upstream_settings(config)})
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(cards))
    with caplog.at_level(logging.WARNING, logger="vision.seed.convert"):
        assert main(command.split()[1:]) == 0
    model = zoo.load(name)

    assert_upstream_ids(model.encode(io["images"]).ids, io, model, tols)
    embedding = model.decode(zoo.Tokens(ids=io["token_ids"]), output="embedding")
    assert_close(embedding, io["gen_embedding"], tols["gen_embedding"], "gen_embedding")
    assert f"dropping ViT blocks [{depth}]" in caplog.text  # the extra EVA-CLIP block, named
    ignored = caplog.text.split("does not use (as upstream's strict=False load does): ")[1].splitlines()[0]
    assert sorted(ignored.split(", ")) == sorted(seed_blip2_extras(state))
    pins = {pin["filename"]: pin for pin in read_pins(name).values()}
    assert pins["seed_quantizer.pt"]["commit"] == hub.head(quantizer_spec["repo"])
    assert pins["eva_vit_g.pth"]["sha256"] == sha256(tmp_path / vit_spec["filename"]) and len(conversions(name)) == 1
