"""S3Tokenizer against upstream's own outputs (../shared/parity/s3tokenizer, see its README).

Every size comes from the fixture's config.json and weight shapes, and the variant from config.json,
so a second fixture set with other sizes runs through the same tests. Mels fed to the model are the
stored ones, so front-end rounding cannot move ids that sit near a decision boundary.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audio.features import log_mel_spectrogram
from audio.io import pad_batch
from audio.s3tokenizer import window_starts
from audio.s3tokenizer.convert import upstream_fixture_model
from tests.helpers import parity_params, require_fixture

FAMILY = "s3tokenizer"


@functools.lru_cache(maxsize=16)
def _fixture(folder: Path):
    info = json.loads((folder / "config.json").read_text())
    return info, upstream_fixture_model(folder), load_file(str(folder / "io.safetensors"))


def _long_spec(folder: Path) -> str | None:
    """config.json["long"]["file"]: the long-audio files (README section 7.4), or None where the folder has none."""
    info = json.loads((folder / "config.json").read_text())
    return (info.get("long") or {}).get("file")


LONG_FIXTURES = parity_params(FAMILY, where=lambda folder: _long_spec(folder) is not None)


def _long_files(folder: Path, info: dict):
    """(codes file, inputs file) named by config.json["long"]["file"]."""
    spec = info["long"]["file"]
    codes = folder / spec.split()[0]
    inputs = re.search(r"inputs:\s*([^\s)]+)", spec)
    return load_file(str(codes)), load_file(str((folder / inputs[1]) if inputs else codes))


def _long_names(codes) -> list[str]:
    """The long clips a codes file covers (long_a, long_b in the public set), read from its keys."""
    return sorted({k.rsplit(".", 1)[0] for k in codes if k.startswith("long") and k.endswith(".codes")})


def _tol(info):
    t = info["tolerances"]
    return t["mel_atol"], t["enc_atol"], t["enc_rtol"]


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_front_end_matches_upstream_log_mel_clip_by_clip(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, io = _fixture(folder)
    mel_atol = _tol(info)[0]
    mel, frames = log_mel_spectrogram(io["batch.wav"], io["batch.wav_len"], n_mels=model.config.n_mels)
    assert torch.equal(frames, io["batch.mel_len"])
    for i in range(io["batch.wav"].shape[0]):
        torch.testing.assert_close(mel[i, :, : frames[i]], io[f"clip{i}.mel"], atol=mel_atol, rtol=0)


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_batched_front_end_clamps_each_clip_by_its_own_maximum(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, io = _fixture(folder)
    mel, _ = log_mel_spectrogram(io["batch.wav"], io["batch.wav_len"], n_mels=model.config.n_mels)
    torch.testing.assert_close(mel, io["batch.mel"], atol=_tol(info)[0], rtol=0)


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_encoder_outputs_match_on_valid_rows(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, io = _fixture(folder)
    _, atol, rtol = _tol(info)
    with torch.inference_mode():
        hidden, _, lengths = model.encode_mel(io["batch.mel"], io["batch.mel_len"])
        assert torch.equal(lengths, io["batch.enc_len"])
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(hidden[i, :n], io["batch.enc"][i, :n], atol=atol, rtol=rtol)
            single, _, _ = model.encode_mel(io[f"clip{i}.mel"][None], torch.tensor([io[f"clip{i}.mel"].shape[-1]]))
            torch.testing.assert_close(single[0], io[f"clip{i}.enc"], atol=atol, rtol=rtol)


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_batched_ids_and_lengths_equal_upstream_exactly(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, model, io = _fixture(folder)
    ids, lengths = model.quantize(io["batch.mel"], io["batch.mel_len"])
    assert torch.equal(lengths, io["batch.codes_len"])
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(ids[i, :n], io["batch.codes"][i, :n]), f"clip {i}"
        assert (ids[i, n:] == 0).all()


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_single_clip_ids_equal_upstream_including_silence_and_short_clips(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, model, io = _fixture(folder)
    for i in range(io["batch.mel"].shape[0]):
        mel = io[f"clip{i}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]))
        assert torch.equal(ids[0], io[f"clip{i}.codes"]), f"clip {i}"


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_waveform_encode_gives_upstream_ids(fixture_dir):
    """The whole public path (waveforms -> our mels -> ids), batched, against upstream's single-clip ids."""
    folder = require_fixture(fixture_dir, FAMILY)
    _, model, io = _fixture(folder)
    tokens = model.encode(io["batch.wav"], lengths=io["batch.wav_len"])
    assert torch.equal(tokens.lengths, io["batch.codes_len"])
    for i, n in enumerate(tokens.lengths.tolist()):
        assert torch.equal(tokens.ids[i, :n], io[f"clip{i}.codes"]), f"clip {i}"


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_upstream_sliding_window_reproduces_long_audio_ids(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, _ = _fixture(folder)
    codes, inputs = _long_files(folder, info)
    for name in _long_names(codes):
        mel = inputs[f"{name}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]), sliding_window="upstream")
        assert torch.equal(ids[0, : lengths[0]], codes[f"{name}.codes"]), name


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_upstream_windows_equal_upstream_per_window_ids(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, _ = _fixture(folder)
    codes, inputs = _long_files(folder, info)
    for name in _long_names(codes):
        mel = inputs[f"{name}.mel"]
        starts = window_starts(mel.shape[-1], "upstream")
        assert starts == info["long"][name]["window_starts_frames"]
        assert len(starts) == codes[f"{name}.segment_len"].shape[0]
        for row, start in enumerate(starts):
            piece = mel[:, start : start + info["long"]["window_frames"]]
            ids, lengths = model.quantize(piece[None], torch.tensor([piece.shape[-1]]))
            n = int(codes[f"{name}.segment_len"][row])
            assert int(lengths[0]) == n
            assert torch.equal(ids[0, :n], codes[f"{name}.segment_codes"][row, :n]), f"{name} window {row}"


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_complete_sliding_window_keeps_the_tail_upstream_drops(fixture_dir):
    """Default mode: as many ids as the length formula gives, and the same ids where upstream kept them."""
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, _ = _fixture(folder)
    codes, inputs = _long_files(folder, info)
    for name in _long_names(codes):
        mel = inputs[f"{name}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]))
        expected = (mel.shape[-1] - 1) // model.config.conv1_stride + 1
        expected = (expected - 1) // 2 + 1
        assert int(lengths[0]) == expected
        assert int(lengths[0]) == info["long"][name]["tokens_if_no_loss"]
        upstream = codes[f"{name}.codes"]
        kept = min(len(upstream), int(lengths[0]) - 2 * model.token_rate)  # up to the last seam upstream kept
        assert torch.equal(ids[0, :kept], upstream[:kept]), name


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_mixed_long_and_short_batch_rows_equal_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, model, io = _fixture(folder)
    codes, inputs = _long_files(folder, info)
    items = info["long"]["mixed"]["items"]  # e.g. [long_a, clip1, long_b]
    mels = [inputs[f"{item}.mel"] if f"{item}.mel" in inputs else io[f"{item}.mel"] for item in items]
    batch, lengths = pad_batch(mels)
    ids, out_lengths = model.quantize(batch, lengths, sliding_window="upstream")
    assert len(items) == len(mels) and torch.equal(out_lengths, codes["mixed.codes_len"])
    for i, n in enumerate(out_lengths.tolist()):
        assert torch.equal(ids[i, :n], codes["mixed.codes"][i, :n]), f"row {i}"
