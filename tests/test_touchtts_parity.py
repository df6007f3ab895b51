"""TouchTTS against upstream's own outputs (../shared/parity/touchtts, see its README and each folder's).

Each fixture folder says what it holds in config.json (``folder``: lm, flow, masks, lr, mel); a test
runs on every folder of its kind, so a second fixture set with other sizes, seeds, vocabularies and
lengths runs through the same tests. Only the io keys config.json's ``io_tensors`` describes are
read; sizes come from config.json and tensor shapes, tolerances from config.json's ``tolerances``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from audio.touchtts import masks as M
from tests.helpers import parity_params, require_fixture

FAMILY = "touchtts"


def _info(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _kind(folder: Path) -> str:
    return _info(folder).get("folder", folder.name)


def fixtures(kind: str) -> list:
    return parity_params(FAMILY, where=lambda folder: _kind(folder) == kind)


@functools.lru_cache(maxsize=8)
def _io(folder: Path) -> dict[str, torch.Tensor]:
    """The io tensors config.json describes (nothing else in io.safetensors is read), checked against their shapes."""
    described = _info(folder)["io_tensors"]
    with safe_open(str(folder / "io.safetensors"), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in described}
    for key, spec in described.items():
        assert list(tensors[key].shape) == spec["shape"], f"{folder}: io {key} shape disagrees with config.json"
    return tensors


# ---- masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_subsequent_chunk_masks_match_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    cases, io = _info(folder)["cases"], _io(folder)
    keys = [k for k in io if k.startswith("subsequent_chunk_mask")]
    assert keys
    for key in keys:
        case = cases[key]
        ours = M.subsequent_chunk_mask(case["size"], case["chunk_size"], case["num_left_chunks"])
        assert torch.equal(ours, io[key]), key


@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_padding_and_full_context_masks_match_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    io = _io(folder)
    lengths = io["lengths"]
    assert torch.equal(M.make_pad_mask(lengths), io["make_pad_mask"])
    assert torch.equal(M.make_pad_mask(lengths, io["make_pad_mask_maxlen"].shape[-1]), io["make_pad_mask_maxlen"])
    assert torch.equal(M.non_causal_mask(lengths), io["non_causal_mask"])


@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_optional_chunk_masks_and_their_draws_match_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    cases, io = _info(folder)["cases"], _io(folder)
    keys = [k for k in io if k.startswith("aocm_")]
    assert keys
    for key in keys:
        case = cases[key]
        length = io[key].shape[-1]
        valid = ~M.make_pad_mask(io["lengths"], length)[:, None, :]  # (B, 1, L)
        seed = case.get("seed")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        ours = M.add_optional_chunk_mask(valid, **case["kwargs"], generator=generator)
        assert torch.equal(ours, io[key]), key
        if case.get("draw"):
            generator = torch.Generator().manual_seed(seed)
            chosen = M.choose_chunk(length, **case["kwargs"], generator=generator)
            assert chosen == (case["draw"]["chunk_size"], case["draw"]["num_left_chunks"]), key


@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_mask_to_bias_matches_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    io = _io(folder)
    keys = [k for k in io if k.startswith("mask_to_bias_")]
    assert keys
    for key in keys:
        source = "aocm_" + key[len("mask_to_bias_") :]
        ours = M.mask_to_bias(io[source], io[key].dtype)
        assert torch.equal(ours, io[key]), key
