"""ONNX -> zoo conversion of S3Tokenizer checkpoints, on small graphs exported here in upstream's layouts.

The released files cannot be downloaded in tests, so each test exports a tiny model with
``torch.onnx.export`` from a module whose tree gives the node and initializer names of one release
(tests/release_layouts.py), then checks the converted model equals the tiny model the file was built
from. The exporter, not the test, decides where weights and scalar operands (``Constant`` nodes) go.
"""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import zoo
from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig
from audio.s3tokenizer.convert import convert_checkpoint
from tests.release_layouts import RELEASE_FILE, export_s3tokenizer_release, release_s3tokenizer
from zoo.errors import CheckpointMismatchError, ConfigError


def tiny_model(variant: str, seed: int = 0) -> S3Tokenizer:
    torch.manual_seed(seed)
    fsq = variant in ("v2", "v3")
    config = S3TokenizerConfig(
        variant=variant,
        n_audio_state=64,
        n_audio_head=1,
        n_audio_layer=3 if variant == "v3" else 2,
        n_codebook_size=6561 if fsq else 4096,
        n_audio_ctx=1500,
    )
    model = S3Tokenizer(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_ln." in name:  # LayerNorm left at 1/0 would hide a swapped or missing norm
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
        if not fsq:
            embed = model.quantizer._codebook.embed
            embed.copy_(torch.nn.functional.normalize(torch.randn_like(embed), dim=-1) * 1.01)
    return model


def build_release_graph(model: S3Tokenizer, path) -> None:
    """Export ``model``'s weights as an ONNX graph laid out like the release of its variant."""
    state = {k: v for k, v in model.state_dict().items()}
    release = release_s3tokenizer(model.config.variant, state, model.config.n_audio_head)
    export_s3tokenizer_release(release, path)


def test_the_exported_v1_graph_feeds_the_codebook_power_its_exponent_from_a_constant_node(tmp_path):
    """The layout the released v1 graph has (and the old converter read as two codebooks)."""
    build_release_graph(tiny_model("v1"), tmp_path / "speech_tokenizer_v1.onnx")
    graph = onnx.load(str(tmp_path / "speech_tokenizer_v1.onnx")).graph
    power = next(n for n in graph.node if n.name == "/quantizer/rq/model/layers.0/_codebook/Pow_1")
    constants = {n.output[0] for n in graph.node if n.op_type == "Constant"}
    assert power.input[0] in {i.name for i in graph.initializer} and power.input[1] in constants


def test_a_pow_exponent_stored_as_a_constant_is_not_read_as_the_codebook(tmp_path):
    model = tiny_model("v1", seed=4)
    build_release_graph(model, tmp_path / "speech_tokenizer_v1.onnx")
    loaded = zoo.load(convert_checkpoint("s3tokenizer-v1", tmp_path / "speech_tokenizer_v1.onnx", tmp_path / "out"))
    assert torch.equal(loaded.quantizer._codebook.embed, model.quantizer._codebook.embed)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_equal_weights_the_exporter_stores_once_behind_identity_nodes_are_read(tmp_path, variant):
    """Freshly initialised LayerNorms are all ones and zeros; torch.onnx.export keeps one copy of equal
    tensors and names the rest through Identity nodes, which the converter must follow."""
    model = tiny_model(variant)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_ln." in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    build_release_graph(model, tmp_path / RELEASE_FILE[variant])
    graph = onnx.load(str(tmp_path / RELEASE_FILE[variant])).graph
    assert any(n.op_type == "Identity" for n in graph.node)
    loaded = zoo.load(convert_checkpoint(f"s3tokenizer-{variant}", tmp_path / RELEASE_FILE[variant], tmp_path / "out"))
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("variant", ["v1", "v1_25hz", "v2", "v3"])
def test_converted_release_graph_equals_the_model_it_was_built_from(tmp_path, variant):
    model = tiny_model(variant)
    src = tmp_path / RELEASE_FILE[variant]
    build_release_graph(model, src)
    out = convert_checkpoint("s3tokenizer", src, tmp_path / "converted")
    loaded = zoo.load(out)
    assert loaded.config == model.config
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key


@pytest.mark.parametrize("variant", ["v1", "v1_25hz", "v2", "v3"])
def test_converted_model_gives_the_source_models_ids(tmp_path, variant):
    model = tiny_model(variant, seed=1)
    src = tmp_path / RELEASE_FILE[variant]
    build_release_graph(model, src)
    loaded = zoo.load(convert_checkpoint("s3tokenizer", src, tmp_path / "converted"))
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    expected, got = model.encode(wave), loaded.encode(wave)
    assert torch.equal(got.ids, expected.ids) and got.meta["token_rate"] == expected.meta["token_rate"]


def test_converter_records_the_variant_in_config_json(tmp_path):
    model = tiny_model("v1_25hz")
    build_release_graph(model, tmp_path / "speech_tokenizer_v1.onnx")
    out = convert_checkpoint("s3tokenizer", tmp_path / "speech_tokenizer_v1.onnx", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "s3tokenizer" and config["variant"] == "v1_25hz"


def test_converter_refuses_an_explicit_variant_that_contradicts_the_graph_stride(tmp_path):
    build_release_graph(tiny_model("v1_25hz"), tmp_path / "speech_tokenizer_v1.onnx")
    with pytest.raises(ConfigError, match="stride"):
        convert_checkpoint("s3tokenizer-v1", tmp_path / "speech_tokenizer_v1.onnx", tmp_path / "out")


def test_converter_refuses_a_file_name_that_contradicts_the_weights(tmp_path):
    build_release_graph(tiny_model("v2"), tmp_path / "speech_tokenizer_v1.onnx")
    with pytest.raises(ConfigError, match="FSMN"):
        convert_checkpoint("s3tokenizer", tmp_path / "speech_tokenizer_v1.onnx", tmp_path / "out")


def test_converter_asks_for_the_variant_when_a_state_dict_cannot_tell_v1_from_v1_25hz(tmp_path):
    from safetensors.torch import save_file

    save_file(tiny_model("v1").state_dict(), str(tmp_path / "weights.safetensors"))
    with pytest.raises(ConfigError, match="variant="):
        convert_checkpoint("s3tokenizer", tmp_path / "weights.safetensors", tmp_path / "out")
    out = convert_checkpoint("s3tokenizer", tmp_path / "weights.safetensors", tmp_path / "out", variant="v1")
    assert zoo.load(out).token_rate == 50


def test_converter_names_the_missing_keys_of_an_incomplete_graph(tmp_path):
    model = tiny_model("v2")
    build_release_graph(model, tmp_path / "speech_tokenizer_v2.onnx")
    graph = onnx.load(str(tmp_path / "speech_tokenizer_v2.onnx"))
    keep = [n for n in graph.graph.node if n.name != "/blocks.1/mlp/mlp.2/MatMul"]
    del graph.graph.node[:]
    graph.graph.node.extend(keep)
    onnx.save(graph, str(tmp_path / "speech_tokenizer_v2.onnx"))
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.blocks\.1\.mlp\.2\.weight"):
        convert_checkpoint("s3tokenizer", tmp_path / "speech_tokenizer_v2.onnx", tmp_path / "out")


def test_tokenzoo_convert_cli_with_a_variant_arch_writes_a_folder_zoo_load_opens(tmp_path, capsys):
    from zoo.cli import main

    model = tiny_model("v2", seed=2)
    src = tmp_path / RELEASE_FILE["v2"]
    build_release_graph(model, src)
    assert main(["convert", "s3tokenizer-v2", str(src), "--out", str(tmp_path / "v2")]) == 0
    loaded = zoo.load(tmp_path / "v2")
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(3)) * 0.1
    assert torch.equal(loaded.encode(wave).ids, model.encode(wave).ids)
    assert loaded.encode(wave).meta["token_rate"] == 25
