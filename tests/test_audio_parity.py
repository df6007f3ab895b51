"""S3Tokenizer against upstream's own outputs (../shared/parity/s3tokenizer, see its README).

Every size comes from the fixture's config.json and weight shapes, the variant and the clip names from
config.json (``io.batch_order``, ``long``), and every key from what those describe (README section 4), so
a second fixture set with other sizes, clips and names runs through the same tests. Mels fed to the model
are the stored ones, so front-end rounding cannot move ids that sit near a decision boundary; where the
fixture's own encoder output shows such a near-tie within the stated encoder tolerance, an id may be the
tied alternative (zoo.parity's rule), with a NearTieWarning.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch

from audio.convert import upstream_fixture_model
from audio.features import log_mel_spectrogram
from audio.io import pad_batch
from audio.s3tokenizer import window_starts
from tests.helpers import parity_fixture, parity_params
from zoo.parity import (
    Tolerance,
    ToleranceTable,
    assert_close,
    assert_same_fsq_ids,
    assert_same_vq_ids,
    gamma,
)

FAMILY = "s3tokenizer"
EXACT = Tolerance(exact=True)


# ---- what each fixture stores, from its config.json (README section 4) -----------------------------
def describe(config: dict) -> dict:
    """io.safetensors keys: the batch, and per clip of ``io.batch_order`` its mel, encoder output, codes,
    margin (and FSQ input for the FSQ variants), with the shapes config.json gives."""
    io, n_mels, width = config["io"], config["config"]["n_mels"], config["config"]["n_audio_state"]
    clips, frames, tokens = io["batch_order"], io["n_mel_frames"], io["n_tokens"]
    b = len(clips)
    keys = {
        "batch.wav": None,
        "batch.wav_len": {"shape": [b]},
        "batch.mel": {"shape": [b, n_mels, max(frames)]},
        "batch.mel_len": {"shape": [b]},
        "batch.enc": {"shape": [b, max(tokens), width]},
        "batch.enc_len": {"shape": [b]},
        "batch.codes": {"shape": [b, max(tokens)]},
        "batch.codes_len": {"shape": [b]},
    }
    for clip, t, n in zip(clips, frames, tokens):
        keys[f"{clip}.mel"] = {"shape": [n_mels, t]}
        keys[f"{clip}.enc"] = {"shape": [n, width]}
        keys[f"{clip}.codes"] = {"shape": [n]}
        keys[f"{clip}.margin"] = {"shape": [n]}
        keys[f"{clip}.fsq_z"] = {"shape": [n, None]}
    return keys


def describe_long(config: dict) -> dict:
    """Long-audio keys (README 4, "long_io / long_codes"): per long clip of ``long``, and the mixed batch."""
    long, n_mels = config["long"], config["config"]["n_mels"]
    keys = {}
    for name in long_names(config):
        spec = long[name]
        keys[f"{name}.wav"] = {"shape": [spec["n_samples"]]}
        keys[f"{name}.mel"] = {"shape": [n_mels, spec["n_mel_frames"]]}
        keys[f"{name}.codes"] = {"shape": [spec["tokens_returned"]]}
        keys[f"{name}.segment_codes"] = {"shape": [spec["n_segments"], None]}
        keys[f"{name}.segment_len"] = {"shape": [spec["n_segments"]]}
    if "mixed" in long:
        rows = len(long["mixed"]["items"])
        keys.update({"mixed.codes": {"shape": [rows, None]}, "mixed.codes_len": {"shape": [rows]}})
    return keys


def long_names(config: dict) -> list[str]:
    """The long clips config.json ``long`` describes (entries that give a clip's mel frames)."""
    return [k for k, v in config["long"].items() if isinstance(v, dict) and "n_mel_frames" in v]


@functools.lru_cache(maxsize=16)
def _fixture(folder: Path):
    fixture = parity_fixture(folder, FAMILY, describe)
    return fixture, upstream_fixture_model(folder), ToleranceTable(fixture.config["tolerances"])


def _long_spec(folder: Path) -> str | None:
    """config.json["long"]["file"]: the long-audio files (README section 7.4), or None where the folder has none."""
    info = json.loads((folder / "config.json").read_text())
    return (info.get("long") or {}).get("file")


LONG_FIXTURES = parity_params(FAMILY, where=lambda folder: _long_spec(folder) is not None)


def _long_files(fixture):
    """(codes, inputs): the files config.json["long"]["file"] names, each described by config.json."""
    spec = fixture.config["long"]["file"]
    described = describe_long(fixture.config)
    codes = fixture.tensors(spec.split()[0], described)
    inputs = re.search(r"inputs:\s*([^\s)]+)", spec)
    return codes, (fixture.tensors(inputs[1], described) if inputs else codes)


def clips(fixture) -> list[str]:
    return fixture.config["io"]["batch_order"]


def assert_upstream_ids(model, ids, expected, h, tols, name: str, z=None) -> None:
    """``ids`` (T',) equal upstream's ``expected``, except where upstream's own encoder output ``h``
    (T', C) puts the decision within the stated encoder tolerance of a tie.

    FSQ: a digit of z = project_down(h) (upstream's stored z where given) near a rounding boundary; z's
    budget is |W| times h's, plus its float32 rounding. VQ: the nearest codeword of h / |h|.
    """
    h = h.double()
    budget = tols["enc"].budget(h)  # (T', C)
    quantizer = model.quantizer._codebook
    if not model.config.uses_fsq:
        assert_same_vq_ids(ids, expected, h, quantizer.embed, budget, name, normalize=True)
        return
    weight = quantizer.project_down.weight.detach().double()
    z_noise = budget @ weight.abs().T  # (T', 8)
    if z is None:
        z = h @ weight.T + quantizer.project_down.bias.detach().double()
        z_noise = z_noise + gamma(h.shape[-1] + 1) * (h.abs() @ weight.abs().T)
    assert_same_fsq_ids(ids, expected, quantizer.fsq, z, z_noise, name)


def assert_clip_ids(model, ids, clip: str, fixture, tols, name: str) -> None:
    """``ids`` of one clip against upstream's ``<clip>.codes``, judged by ``<clip>.enc`` (and ``.fsq_z``)."""
    io = fixture.io
    z = io[f"{clip}.fsq_z"] if f"{clip}.fsq_z" in io else None
    assert_upstream_ids(model, ids, io[f"{clip}.codes"], io[f"{clip}.enc"], tols, name, z)


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_front_end_matches_upstream_log_mel_clip_by_clip(fixture_dir):
    fixture, model, tols = _fixture(fixture_dir)
    io = fixture.io
    mel, frames = log_mel_spectrogram(io["batch.wav"], io["batch.wav_len"], n_mels=model.config.n_mels)
    assert_close(frames, io["batch.mel_len"], EXACT, "batch.mel_len")
    for i, clip in enumerate(clips(fixture)):
        assert_close(mel[i, :, : frames[i]], io[f"{clip}.mel"], tols["mel"], f"{clip}.mel")


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_batched_front_end_clamps_each_clip_by_its_own_maximum(fixture_dir):
    fixture, model, tols = _fixture(fixture_dir)
    io = fixture.io
    mel, _ = log_mel_spectrogram(io["batch.wav"], io["batch.wav_len"], n_mels=model.config.n_mels)
    assert_close(mel, io["batch.mel"], tols["mel"], "batch.mel")


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_encoder_outputs_match_on_valid_rows(fixture_dir):
    fixture, model, tols = _fixture(fixture_dir)
    io = fixture.io
    with torch.inference_mode():
        hidden, _, lengths = model.encode_mel(io["batch.mel"], io["batch.mel_len"])
        assert_close(lengths, io["batch.enc_len"], EXACT, "batch.enc_len")
        for i, (clip, n) in enumerate(zip(clips(fixture), lengths.tolist())):
            assert_close(hidden[i, :n], io["batch.enc"][i, :n], tols["enc"], f"batch.enc row {i} ({clip})")
            mel = io[f"{clip}.mel"]
            single, _, _ = model.encode_mel(mel[None], torch.tensor([mel.shape[-1]]))
            assert_close(single[0], io[f"{clip}.enc"], tols["enc"], f"{clip}.enc")


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_batched_ids_and_lengths_equal_upstream_exactly(fixture_dir):
    fixture, model, tols = _fixture(fixture_dir)
    io = fixture.io
    ids, lengths = model.quantize(io["batch.mel"], io["batch.mel_len"])
    assert_close(lengths, io["batch.codes_len"], EXACT, "batch.codes_len")
    for i, (clip, n) in enumerate(zip(clips(fixture), lengths.tolist())):
        expected, h = io["batch.codes"][i, :n], io["batch.enc"][i, :n]
        assert_upstream_ids(model, ids[i, :n], expected, h, tols, f"batch row {i} ({clip})")
        assert (ids[i, n:] == 0).all()


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_single_clip_ids_equal_upstream_including_silence_and_short_clips(fixture_dir):
    fixture, model, tols = _fixture(fixture_dir)
    for clip in clips(fixture):
        mel = fixture.io[f"{clip}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]))
        assert_clip_ids(model, ids[0], clip, fixture, tols, clip)


@pytest.mark.parametrize("fixture_dir", parity_params(FAMILY))
def test_parity_s3tokenizer_waveform_encode_gives_upstream_ids(fixture_dir):
    """The whole public path (waveforms -> our mels -> ids), batched, against upstream's single-clip ids."""
    fixture, model, tols = _fixture(fixture_dir)
    io = fixture.io
    tokens = model.encode(io["batch.wav"], lengths=io["batch.wav_len"])
    assert_close(tokens.lengths, io["batch.codes_len"], EXACT, "batch.codes_len")
    for i, (clip, n) in enumerate(zip(clips(fixture), tokens.lengths.tolist())):
        assert_clip_ids(model, tokens.ids[i, :n], clip, fixture, tols, f"encoded {clip}")


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_upstream_sliding_window_reproduces_long_audio_ids(fixture_dir):
    fixture, model, _ = _fixture(fixture_dir)
    codes, inputs = _long_files(fixture)
    for name in long_names(fixture.config):
        mel = inputs[f"{name}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]), sliding_window="upstream")
        assert_close(ids[0, : lengths[0]], codes[f"{name}.codes"], EXACT, f"{name}.codes")


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_upstream_windows_equal_upstream_per_window_ids(fixture_dir):
    fixture, model, _ = _fixture(fixture_dir)
    long = fixture.config["long"]
    codes, inputs = _long_files(fixture)
    for name in long_names(fixture.config):
        mel = inputs[f"{name}.mel"]
        starts = window_starts(mel.shape[-1], "upstream")
        assert starts == long[name]["window_starts_frames"]
        assert len(starts) == codes[f"{name}.segment_len"].shape[0]
        for row, start in enumerate(starts):
            piece = mel[:, start : start + long["window_frames"]]
            ids, lengths = model.quantize(piece[None], torch.tensor([piece.shape[-1]]))
            n = int(codes[f"{name}.segment_len"][row])
            assert int(lengths[0]) == n
            window = codes[f"{name}.segment_codes"][row, :n]
            assert_close(ids[0, :n], window, EXACT, f"{name} window {row}")


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_complete_sliding_window_keeps_the_tail_upstream_drops(fixture_dir):
    """Default mode: as many ids as the length formula gives, and the same ids where upstream kept them."""
    fixture, model, _ = _fixture(fixture_dir)
    codes, inputs = _long_files(fixture)
    for name in long_names(fixture.config):
        mel = inputs[f"{name}.mel"]
        ids, lengths = model.quantize(mel[None], torch.tensor([mel.shape[-1]]))
        expected = (mel.shape[-1] - 1) // model.config.conv1_stride + 1
        expected = (expected - 1) // 2 + 1
        assert int(lengths[0]) == expected
        assert int(lengths[0]) == fixture.config["long"][name]["tokens_if_no_loss"]
        upstream = codes[f"{name}.codes"]
        kept = min(len(upstream), int(lengths[0]) - 2 * model.token_rate)  # up to the last seam upstream kept
        assert_close(ids[0, :kept], upstream[:kept], EXACT, name)


@pytest.mark.parametrize("fixture_dir", LONG_FIXTURES)
def test_parity_s3tokenizer_mixed_long_and_short_batch_rows_equal_upstream(fixture_dir):
    fixture, model, _ = _fixture(fixture_dir)
    codes, inputs = _long_files(fixture)
    items = fixture.config["long"]["mixed"]["items"]  # e.g. [long_a, clip1, long_b]
    mels = [inputs[f"{item}.mel"] if f"{item}.mel" in inputs else fixture.io[f"{item}.mel"] for item in items]
    batch, lengths = pad_batch(mels)
    ids, out_lengths = model.quantize(batch, lengths, sliding_window="upstream")
    assert_close(out_lengths, codes["mixed.codes_len"], EXACT, "mixed.codes_len")
    for i, (item, n) in enumerate(zip(items, out_lengths.tolist())):
        assert_close(ids[i, :n], codes["mixed.codes"][i, :n], EXACT, f"mixed row {i} ({item})")
