"""The TouchTTS vocoder mel and its length rules, against upstream's outputs (../shared/parity/touchtts/mel).

The fixture folder is found by what the tests need (a config.json with ``mel_spectrogram_kwargs``); the mel
arguments, tensors and tolerances all come from it, and only io keys its config.json describes are read,
so a fixture set with other lengths, batches or mel settings runs through the same tests.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audio.features import mel_filters
from audio.touchtts.mel import (
    MelConfig,
    generated_mel_frames,
    magnitude_spectrogram,
    mel_spectrogram,
    num_frames,
    pad_for_stft,
    prompt_token_count,
)
from tests.helpers import parity_params, require_fixture
from zoo.errors import ConfigError, InputError

FAMILY = "touchtts"
FLOAT32_EPS = torch.finfo(torch.float32).eps


def _is_mel_fixture(folder: Path) -> bool:
    return "mel_spectrogram_kwargs" in json.loads((folder / "config.json").read_text())


MEL_FIXTURES = parity_params(FAMILY, where=_is_mel_fixture)


@functools.lru_cache(maxsize=4)
def _fixture(folder: Path):
    info = json.loads((folder / "config.json").read_text())
    io = load_file(str(folder / "io.safetensors"))
    described = set(info["io_tensors"])
    return info, MelConfig.from_upstream(info["mel_spectrogram_kwargs"]), {k: io[k] for k in described}


def _waves_with(io: dict, suffix: str) -> list[str]:
    """Input waveforms that have a stored ``<name><suffix>`` output (wave0, wave1, wavebatch in the public set)."""
    names = sorted(k[: -len(suffix)] for k in io if k.endswith(suffix) and k[: -len(suffix)] in io)
    assert names, f"the fixture describes no '*{suffix}' outputs"
    return names


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_filterbank_and_window_equal_upstreams_cached_constants(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, config, _ = _fixture(folder)
    constants = load_file(str(folder / "weights.safetensors"))
    ours = mel_filters(config.n_mels, config.sample_rate, config.n_fft, config.fmin, config.fmax)
    # librosa rounds to float32 twice (triangles, then area normalisation); we round once from float64.
    torch.testing.assert_close(ours, constants["mel_basis"], rtol=2 * FLOAT32_EPS, atol=0)
    assert torch.equal(torch.hann_window(config.win_length), constants["hann_window"])


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_reflect_padding_is_exact(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, config, io = _fixture(folder)
    for name in _waves_with(io, "_padded"):
        assert torch.equal(pad_for_stft(io[name], config), io[f"{name}_padded"]), name


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_stft_magnitude_matches_within_float32_fft_error(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, config, io = _fixture(folder)
    rtol = info["tolerances"]["magnitude"]["rtol"]
    for name in _waves_with(io, "_magnitude"):
        ours, ref = magnitude_spectrogram(io[name], config), io[f"{name}_magnitude"]
        assert ours.shape == ref.shape
        # A float32 FFT errs by about eps * log2(n_fft) * ||frame|| in every bin, so bins far below the frame's
        # energy carry a large *relative* error on both sides (upstream's own float32 output is 2e-3 off float64
        # there). Bound: rtol on the bin plus that absolute term, doubled for two float32 runs, doubled again.
        frames = pad_for_stft(io[name], config).unfold(-1, config.n_fft, config.hop_length)  # (B, T, n_fft)
        fft_error = 4 * FLOAT32_EPS * math.log2(config.n_fft) * frames.norm(dim=-1)[:, None, :]  # (B, 1, T)
        excess = (ours - ref).abs() - (rtol * ref.abs() + fft_error)
        assert excess.max() <= 0, f"{name}: worst bin exceeds the bound by {excess.max():.3g}"


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_log_mel_matches_upstream(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, config, io = _fixture(folder)
    atol = info["tolerances"]["mel"]["atol"]
    for name in _waves_with(io, "_mel"):
        mel, frames = mel_spectrogram(io[name], config=config)
        ref = io[f"{name}_mel"]
        assert mel.shape == ref.shape and frames.tolist() == [ref.shape[-1]] * ref.shape[0], name
        torch.testing.assert_close(mel, ref, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_each_clip_alone_matches_its_row_of_the_batch(fixture_dir):
    """Upstream mels a whole batch at once; ours with lengths mels clip by clip: the rows must agree."""
    folder = require_fixture(fixture_dir, FAMILY)
    info, config, io = _fixture(folder)
    atol = info["tolerances"]["mel"]["atol"]
    for name in _waves_with(io, "_mel"):
        waves = io[name]
        mel, _ = mel_spectrogram(waves, torch.full((waves.shape[0],), waves.shape[1]), config)
        torch.testing.assert_close(mel, io[f"{name}_mel"], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_frame_count_rule_is_exact(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, config, io = _fixture(folder)
    assert torch.equal(num_frames(io["frames_rule_n"], config), io["frames_rule_frames"])
    assert [num_frames(int(n), config) for n in io["frames_rule_n"]] == io["frames_rule_frames"].tolist()


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_generated_mel_length_rule_is_exact(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, config, io = _fixture(folder)
    assert torch.equal(generated_mel_frames(io["gen_mel_len_L"], config), io["gen_mel_len"])
    assert [generated_mel_frames(int(n), config) for n in io["gen_mel_len_L"]] == io["gen_mel_len"].tolist()


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_prompt_token_count_rule_is_exact(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    _, _, io = _fixture(folder)
    assert torch.equal(prompt_token_count(io["num_audio_token_F"]), io["num_audio_token"])
    assert [prompt_token_count(int(f)) for f in io["num_audio_token_F"]] == io["num_audio_token"].tolist()


# ---- behaviour beyond the fixture ---------------------------------------------------------------
def test_mel_of_a_padded_batch_equals_each_clip_alone_and_pads_with_silence():
    torch.manual_seed(0)
    clips = [0.3 * torch.randn(5000), 0.3 * torch.randn(3001)]
    batch = torch.zeros(2, 5000)
    batch[0], batch[1, :3001] = clips[0], clips[1]
    mel, frames = mel_spectrogram(batch, torch.tensor([5000, 3001]))
    assert frames.tolist() == [5000 // 256, 3001 // 256]
    for i, clip in enumerate(clips):
        alone, _ = mel_spectrogram(clip)
        assert torch.equal(mel[i, :, : frames[i]], alone[0])
    assert torch.equal(mel[1, :, frames[1] :], torch.full_like(mel[1, :, frames[1] :], math.log(1e-5)))


def test_digital_silence_sits_at_the_log_floor():
    mel, _ = mel_spectrogram(torch.zeros(1, 4096))
    assert torch.equal(mel, torch.full_like(mel, math.log(1e-5)))


def test_a_clip_too_short_to_reflect_pad_is_refused_by_name():
    with pytest.raises(InputError, match=r"clips \[1\] are shorter than 385 samples"):
        mel_spectrogram(torch.zeros(2, 1000), torch.tensor([1000, 384]))
    with pytest.raises(InputError, match="shorter than 385 samples"):
        mel_spectrogram(torch.zeros(300))


def test_integer_waveforms_are_refused():
    with pytest.raises(InputError, match="float"):
        mel_spectrogram(torch.zeros(1, 4000, dtype=torch.int16))


def test_mel_config_rejects_inconsistent_settings_and_unknown_upstream_names():
    with pytest.raises(ConfigError, match="hop_length"):
        MelConfig(hop_length=255)
    with pytest.raises(ConfigError, match="fmax"):
        MelConfig(fmax=12000.0)
    with pytest.raises(ConfigError, match="unknown mel arguments"):
        MelConfig.from_upstream({"n_fft": 1024, "mel_fmax": 8000})


def test_centred_stft_adds_one_frame_per_half_window_of_padding():
    config = MelConfig(center=True)
    mel, frames = mel_spectrogram(torch.randn(1, 22050), config=config)
    assert mel.shape[-1] == num_frames(22050, config) == 22050 // 256 + 4 == int(frames[0])
