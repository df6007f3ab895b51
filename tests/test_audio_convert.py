"""ONNX -> zoo conversion of S3Tokenizer checkpoints, on small graphs built here in upstream's layouts.

The released files cannot be downloaded in tests, so each test writes a tiny ONNX file whose
initializer and node names, tensor layouts ((in, out) MatMul weights, (C, K) codebook, LayerNorm
fused or decomposed, biases as Constant nodes) follow the graph family of one release, then checks
the converted model equals the tiny model the file was built from. The graphs are wired as chains
carrying those names; they are not meant to be executed.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import zoo
from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig
from audio.s3tokenizer.convert import convert_checkpoint
from zoo.errors import CheckpointMismatchError, ConfigError

RELEASE_FILE = {
    "v1": "speech_tokenizer_v1.onnx",
    "v1_25hz": "speech_tokenizer_v1.onnx",  # same file name as v1 upstream: the graph must decide
    "v2": "speech_tokenizer_v2.onnx",
    "v3": "speech_tokenizer_v3.onnx",
}


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


class GraphBuilder:
    """Accumulates nodes and parameters; every node takes the previous node's output as its first input."""

    def __init__(self):
        self.nodes, self.initializers, self.last = [], [], "feats"

    def param(self, name: str, value: np.ndarray, constant: bool = False) -> str:
        array = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        if constant:
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_const", value=array))
        else:
            self.initializers.append(array)
        return name

    def node(self, op: str, name: str, *params: str, **attrs) -> None:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, [self.last, *params], [out], name=name, **attrs))
        self.last = out

    def save(self, path) -> None:
        graph = helper.make_graph(
            self.nodes,
            "s3tokenizer",
            [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, None])],
            [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, None)],
            initializer=self.initializers,
        )
        onnx.save(helper.make_model(graph), str(path))


def build_release_graph(model: S3Tokenizer, path) -> None:
    """Write ``model``'s weights as an ONNX graph named and laid out like the release of its variant."""
    variant, state = model.config.variant, {k: v.numpy() for k, v in model.state_dict().items()}
    g = GraphBuilder()
    stride = model.config.conv1_stride
    conv_names = {
        "v1": ["onnx::Conv_1519", "onnx::Conv_1520", "onnx::Conv_1521", "onnx::Conv_1522"],
        "v1_25hz": ["encoders.conv1.weight", "encoders.conv1.bias", "encoders.conv2.weight", "encoders.conv2.bias"],
        "v2": ["onnx::Conv_2216", "onnx::Conv_2217", "onnx::Conv_2218", "onnx::Conv_2219"],
    }
    for layer, s in ((1, stride), (2, 2)):
        w, b = state[f"encoder.conv{layer}.weight"], state[f"encoder.conv{layer}.bias"]
        if variant == "v3":  # v3 names nodes after modules; parameters are anonymous
            g.node(
                "Conv",
                f"/conv{layer}/Conv",
                g.param(f"onnx::Conv_w{layer}", w),
                g.param(f"onnx::Conv_b{layer}", b),
                strides=[s],
                pads=[1, 1],
            )
        else:
            names = conv_names[variant][2 * (layer - 1) : 2 * layer]
            g.node(
                "Conv",
                f"/encoders/conv{layer}/Conv",
                g.param(names[0], w),
                g.param(names[1], b),
                strides=[s],
                pads=[1, 1],
            )
        g.node("Gelu", f"/encoders/gelu{layer}/Gelu")
    if "encoder.positional_embedding" in state:
        g.node("Add", "/encoders/Add", g.param("encoders.positional_embedding", state["encoder.positional_embedding"]))
    counter = iter(range(10_000, 99_999))
    for n in range(model.config.n_audio_layer):
        p = f"encoder.blocks.{n}."
        for norm in ("attn_ln", "mlp_ln"):
            weight, bias = state[p + norm + ".weight"], state[p + norm + ".bias"]
            if variant == "v2":  # one fused node
                g.node(
                    "LayerNormalization",
                    f"/blocks.{n}/{norm}/LayerNormalization",
                    g.param(f"onnx::LN_w{next(counter)}", weight),
                    g.param(f"onnx::LN_b{next(counter)}", bias),
                )
            else:  # decomposed: epsilon and power as scalar Constants, then Mul (scale) and Add_1 (shift)
                g.node("ReduceMean", f"/blocks.{n}/{norm}/ReduceMean")
                g.node("Pow", f"/blocks.{n}/{norm}/Pow", g.param(f"c{next(counter)}", np.array(2.0), constant=True))
                g.node("Add", f"/blocks.{n}/{norm}/Add", g.param(f"c{next(counter)}", np.array(1e-5), constant=True))
                g.node("Div", f"/blocks.{n}/{norm}/Div")
                g.node("Mul", f"/blocks.{n}/{norm}/Mul", g.param(f"onnx::Mul_{next(counter)}", weight))
                g.node(
                    "Add",
                    f"/blocks.{n}/{norm}/Add_1",
                    g.param(f"onnx::Add_{next(counter)}", bias, constant=variant == "v3"),
                )
            if norm == "attn_ln":
                for proj in ("query", "key", "value", "out"):
                    g.node(
                        "MatMul",
                        f"/blocks.{n}/attn/{proj}/MatMul",
                        g.param(f"onnx::MatMul_{next(counter)}", state[p + f"attn.{proj}.weight"].T),
                    )
                    if p + f"attn.{proj}.bias" in state:
                        g.node(
                            "Add",
                            f"/blocks.{n}/attn/{proj}/Add",
                            g.param(
                                f"onnx::Add_{next(counter)}", state[p + f"attn.{proj}.bias"], constant=variant == "v3"
                            ),
                        )
                g.node("Mul", f"/blocks.{n}/attn/Mul", g.param(f"c{next(counter)}", np.array(0.35), constant=True))
                if p + "attn.fsmn_block.weight" in state:
                    name = f"blocks.{n}.attn.fsmn_block.weight" if variant == "v3" else f"onnx::Conv_{next(counter)}"
                    g.node(
                        "Conv",
                        f"/blocks.{n}/attn/fsmn_block/Conv",
                        g.param(name, state[p + "attn.fsmn_block.weight"]),
                        group=model.config.n_audio_state,
                    )
            else:
                for layer in ("0", "2"):
                    g.node(
                        "MatMul",
                        f"/blocks.{n}/mlp/mlp.{layer}/MatMul",
                        g.param(f"onnx::MatMul_{next(counter)}", state[p + f"mlp.{layer}.weight"].T),
                    )
                    g.node(
                        "Add",
                        f"/blocks.{n}/mlp/mlp.{layer}/Add",
                        g.param(f"onnx::Add_{next(counter)}", state[p + f"mlp.{layer}.bias"]),
                    )
    if variant in ("v1", "v1_25hz"):
        embed_t = g.param("onnx::Pow_codebook", state["quantizer._codebook.embed"].T)  # stored (C, K)
        g.node("Pow", "/quantizer/rq/model/layers.0/_codebook/Pow_1", embed_t)
        g.node("MatMul", "/quantizer/rq/model/layers.0/_codebook/MatMul", embed_t)
    else:
        weight = state["quantizer._codebook.project_down.weight"].T
        name = "onnx::MatMul_2536" if variant == "v2" else "onnx::MatMul_quant"
        g.node(
            "MatMul",
            "/quantizer/project_down/MatMul" if variant == "v2" else "/quantizer/MatMul",
            g.param(name, weight),
        )
        g.node(
            "Add",
            "/quantizer/Add",
            g.param("quantizer.project_in.bias", state["quantizer._codebook.project_down.bias"]),
        )
    g.save(path)


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
