"""SEED against upstream, number for number, from every fixture folder under $TOKENZOO_PARITY_DIR/seed.

Sizes come from the weight shapes (through vision/seed/convert.py); what no weight holds (head counts,
the cross-attention period, the query count that switches causality on) from the fixture's config.json.
Only io tensors that config.json's ``io_tensors`` lists are read, and every tolerance comes from its
``recommended_tolerances`` (compared by zoo.parity's rule: ids and codebook rows exact, except an id
whose upstream VQ input sits within the stated tolerance of a tie).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import parity_fixture, parity_params
from zoo.parity import ToleranceTable, assert_close, assert_same_vq_ids

FIXTURES = parity_params("seed")


def _describes(*keys):
    """Keep the fixture folders whose config.json lists every one of ``keys`` in io_tensors."""
    return lambda folder: all(k in json.loads((folder / "config.json").read_text())["io_tensors"] for k in keys)


WITH_RELEASE_PREP = parity_params("seed", where=_describes("prep224_input_uint8", "prep224_output"))


@lru_cache(maxsize=4)
def _model(fixture_dir: Path, weights_file: Path):
    from safetensors.torch import load_file

    from vision.seed.convert import config_from_shapes, load_upstream_state

    config = parity_fixture(fixture_dir, "seed").config
    weights = load_file(str(weights_file))
    settings = upstream_settings(config)
    return load_upstream_state(weights, config_from_shapes({k: tuple(v.shape) for k, v in weights.items()}, **settings))


def upstream_settings(config: dict) -> dict:
    """What no weight holds, from the fixture's config.json: head counts, the cross-attention period, causality."""
    built = config["constructor"]
    return dict(
        vit_heads=built["vision_encoder"]["kwargs"]["num_heads"],
        qformer_heads=built["qformer"]["bert_config"]["num_attention_heads"],
        detok_heads=config["hyperparameters"]["blocks_image"]["num_heads"],
        cross_attention_freq=built["qformer"]["extra_config"]["cross_attention_freq"],
        # upstream's BertModel switches the causal query mask on when exactly 32 queries come in
        causal_queries=built["kwargs"]["num_query_token"] == 32,
    )


def _fixture(fixture_dir):
    """(config, described io, our model with upstream's weights, stated tolerances)."""
    fixture = parity_fixture(fixture_dir, "seed")
    tols = ToleranceTable(fixture.config["recommended_tolerances"])
    return fixture.config, fixture.io, _model(fixture_dir, fixture.weights_file), tols


def _close(actual, expected, tols, name):
    assert_close(actual, expected, tols[name], name)


def assert_upstream_ids(ids, io, model, tols, name: str = "token_ids") -> None:
    """``ids`` equal upstream's, except where upstream's own VQ input (pre_quant, within its stated
    tolerance) puts another codeword as near as upstream's choice."""
    pre = io["pre_quant"]
    budget = tols["pre_quant"].budget(pre)
    assert_same_vq_ids(ids, io["token_ids"], pre, model.quantize.embed, budget, name)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_config_read_from_the_weights_matches_the_constructor(fixture_dir):
    config, _, model, _ = _fixture(fixture_dir)
    kwargs = config["constructor"]["kwargs"]
    vit = config["constructor"]["vision_encoder"]["kwargs"]
    bert = config["constructor"]["qformer"]["bert_config"]
    c = model.config
    assert (c.image_size, c.patch_size, c.vit_width, c.vit_depth) == (
        vit["img_size"],
        vit["patch_size"],
        vit["embed_dim"],
        vit["depth"],
    )
    assert c.vit_mlp_hidden == int(vit["embed_dim"] * vit["mlp_ratio"])
    assert (c.qformer_width, c.qformer_layers, c.qformer_intermediate) == (
        bert["hidden_size"],
        bert["num_hidden_layers"],
        bert["intermediate_size"],
    )
    assert (c.codebook_size, c.codebook_dim, c.num_query_tokens) == (
        kwargs["n_embed"],
        kwargs["codebook_embed_dim"],
        kwargs["num_query_token"],
    )
    assert (c.detok_depth, c.generation_dim) == (kwargs["decode_depth"], kwargs["image_features_dim"])
    assert c.cross_attention_layers == config["hyperparameters"]["qformer_cross_attention_layers"]


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_encoder_stages_match_upstream(fixture_dir):
    _, io, model, tols = _fixture(fixture_dir)
    stages = {}
    with torch.no_grad():
        ids = model.tokenize(io["images"], stages)
    for name in ("vit_out", "ln_vision_out", "qformer_query_out", "pre_quant"):
        _close(stages[name], io[name], tols, name)
    assert_upstream_ids(ids, io, model, tols)
    # upstream's z + (e - z) is its codeword to ~1 ulp: where the ids agree, so do the quantized vectors
    same = (ids == io["token_ids"])[..., None].expand_as(stages["quant"])
    quant = torch.where(same, stages["quant"], io["quant_straight_through"])
    _close(quant, io["quant_straight_through"], tols, "quant_straight_through")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_token_ids_are_exact_through_encode(fixture_dir):
    _, io, model, tols = _fixture(fixture_dir)
    tokens = model.encode(io["images"])
    assert tokens.ids.dtype == torch.int64
    assert_upstream_ids(tokens.ids, io, model, tols)


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_each_image_alone_gets_the_ids_it_gets_in_the_batch(fixture_dir):
    _, io, model, _ = _fixture(fixture_dir)
    together = model.encode(io["images"]).ids
    for i in range(io["images"].shape[0]):
        assert torch.equal(model.encode(io["images"][i : i + 1]).ids, together[i : i + 1])


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_detokenizer_stages_and_generation_embedding(fixture_dir):
    _, io, model, tols = _fixture(fixture_dir)
    stages = {}
    with torch.no_grad():
        embedding = model.generation_embedding(io["token_ids"], stages)
        query_up = model.decode_task_layer(io["quant_straight_through"])
    _close(stages["codebook_vectors"], io["codebook_vectors"], tols, "codebook_vectors")
    for name in ("detok_query_up", "detok_blocks_out", "detok_image_down"):
        _close(stages[name], io[name], tols, name)
    _close(embedding, io["gen_embedding"], tols, "gen_embedding")
    _close(query_up, io["query_output_up"], tols, "query_output_up")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_probe_ids_decode_to_upstream_embeddings_through_decode(fixture_dir):
    from zoo.api import Tokens

    _, io, model, tols = _fixture(fixture_dir)
    embedding = model.decode(Tokens(ids=io["probe_ids"]), output="embedding")
    _close(embedding, io["gen_embedding_probe"], tols, "gen_embedding_probe")


def _pillow_bicubic(image: np.ndarray, width: int, height: int, vertical_first: bool) -> np.ndarray:
    """Pillow's 8-bit separable bicubic resize (a = -0.5, support widened by the downscale factor,
    22-bit fixed-point weights, the intermediate rounded to 8 bits), with either pass first."""
    precision = 22

    def weights(size_in: int, size_out: int):
        scale = size_in / size_out
        stretch = max(scale, 1.0)
        support = 2.0 * stretch
        rows = []
        for i in range(size_out):
            center = (i + 0.5) * scale
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size_in)
            x = np.abs((np.arange(lo, hi) - center + 0.5) / stretch)
            w = np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((x - 5) * x + 8) * x * -0.5 + 2, 0.0))
            w = w / w.sum()
            rows.append((lo, np.where(w >= 0, w * (1 << precision) + 0.5, w * (1 << precision) - 0.5).astype(np.int64)))
        return rows

    def one_pass(a: np.ndarray, size_out: int, axis: int) -> np.ndarray:
        a = np.moveaxis(a, axis, 0).astype(np.int64)
        out = [
            (1 << (precision - 1)) + np.tensordot(w, a[lo : lo + len(w)], axes=(0, 0))
            for lo, w in weights(a.shape[0], size_out)
        ]
        return np.moveaxis(np.clip(np.stack(out) >> precision, 0, 255), 0, axis)

    if vertical_first:
        return one_pass(one_pass(image, height, 0), width, 1).astype(np.uint8)
    return one_pass(one_pass(image, width, 1), height, 0).astype(np.uint8)


def _check_preprocessing(ours, sources, expected, size, tol, name):
    """Equal to the fixture (made with Pillow 13) on the installed Pillow, whatever its version: ours runs
    Pillow 13's pass order everywhere. Where Pillow 13 goes vertically first, the other order (Pillow <= 12's
    plain resize, reproduced by ``_pillow_bicubic``) must miss the fixture, or the check would prove nothing."""
    from PIL import Image

    from vision.seed.model import squash_normalize, vertical_pass_first

    assert_close(ours, expected, tol, name)
    for i, source in enumerate(sources):
        h, w = source.shape[:2]
        if vertical_pass_first(w, h, size, size):
            other = squash_normalize(Image.fromarray(_pillow_bicubic(source, size, size, False)), size)
            assert float(((other - expected[i]).abs() - tol.budget(expected[i])).max()) > 0, f"{name}[{i}]"


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_preprocessing_squashes_with_pil_bicubic_and_clip_normalisation(fixture_dir):
    from PIL import Image

    _, io, model, tols = _fixture(fixture_dir)
    keys = sorted((k for k in io if re.fullmatch(r"src_image_\d+_uint8", k)), key=lambda k: int(k.split("_")[2]))
    sources = [np.ascontiguousarray(io[k].numpy()) for k in keys]
    ours = model.preprocess([Image.fromarray(s) for s in sources])
    _check_preprocessing(ours, sources, io["images"], model.config.image_size, tols["images"], "images")


@pytest.mark.parametrize("fixture_dir", WITH_RELEASE_PREP)
def test_parity_seed_release_preprocessing_at_its_own_size(fixture_dir):
    from PIL import Image

    from vision.seed.model import squash_normalize

    _, io, _, tols = _fixture(fixture_dir)
    size = io["prep224_output"].shape[-1]
    source = np.ascontiguousarray(io["prep224_input_uint8"].numpy())
    ours = squash_normalize(Image.fromarray(source), size)[None]
    _check_preprocessing(ours, [source], io["prep224_output"], size, tols["prep224_output"], "prep224_output")


@pytest.mark.parametrize("fixture_dir", FIXTURES)
def test_parity_seed_pil_sources_give_upstreams_ids_on_the_installed_pillow(fixture_dir):
    from PIL import Image

    _, io, model, tols = _fixture(fixture_dir)
    keys = sorted((k for k in io if re.fullmatch(r"src_image_\d+_uint8", k)), key=lambda k: int(k.split("_")[2]))
    ids = model.encode([Image.fromarray(np.ascontiguousarray(io[k].numpy())) for k in keys]).ids
    assert_upstream_ids(ids, io, model, tols)
