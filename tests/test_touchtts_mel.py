"""The TouchTTS vocoder mel and its length rules, against upstream's outputs (../shared/parity/touchtts/mel).

The fixture folder is found by what the tests need (a config.json with ``mel_spectrogram_kwargs``); the mel
arguments, tensors and tolerances all come from it, and only io keys its config.json describes are read
(``parity_fixture``), so a fixture set with other lengths, batches or mel settings runs through the same tests.
Comparisons follow the house rule (``zoo.parity.assert_close``: stated tolerance plus an error-model term).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

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
from tests.helpers import parity_fixture, parity_params
from zoo.errors import ConfigError, InputError
from zoo.parity import UNIT_ROUNDOFF, Tolerance, ToleranceTable, assert_close, gamma

FAMILY = "touchtts"
EXACT = Tolerance(exact=True)


def _is_mel_fixture(folder: Path) -> bool:
    return "mel_spectrogram_kwargs" in json.loads((folder / "config.json").read_text())


MEL_FIXTURES = parity_params(FAMILY, where=_is_mel_fixture)


def _open(fixture_dir):
    """(fixture, its mel settings, its stated tolerances)."""
    fixture = parity_fixture(fixture_dir, FAMILY)
    config = MelConfig.from_upstream(fixture.config["mel_spectrogram_kwargs"])
    return fixture, config, ToleranceTable(fixture.config["tolerances"])


def _waves_with(io, suffix: str) -> list[str]:
    """Input waveforms that have a stored ``<name><suffix>`` output (wave0, wave1, wavebatch in the public set)."""
    names = sorted(k[: -len(suffix)] for k in io if k.endswith(suffix) and k[: -len(suffix)] in io)
    assert names, f"the fixture describes no '*{suffix}' outputs"
    return names


def fft_error(windowed_frames: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(B, T, n_fft) windowed frames -> (B, 1, T): a bound on the error of every bin of one float32 FFT.

    Higham (Accuracy and Stability of Numerical Algorithms, Thm 24.2): a radix-2 FFT's computed spectrum is
    within log2(n) eta / (1 - log2(n) eta) * ||y||_2 of the exact one, eta = u + gamma_4 (sqrt 2 + u), and
    ||y||_2 = sqrt(n) ||x||_2 unnormalised. A bin's error is below the whole vector's, and so is its magnitude's.
    """
    u = UNIT_ROUNDOFF[torch.float32]
    eta = u + gamma(4) * (math.sqrt(2) + u)
    steps = math.log2(n_fft) * eta
    return (steps / (1 - steps) * math.sqrt(n_fft) * windowed_frames.double().norm(dim=-1))[:, None, :]


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_filterbank_and_window_equal_upstreams_cached_constants(fixture_dir):
    fixture, config, _ = _open(fixture_dir)
    constants = fixture.tensors("weights.safetensors", dict.fromkeys(fixture.config["weights"]["tensors"]))
    ours = mel_filters(config.n_mels, config.sample_rate, config.n_fft, config.fmin, config.fmax)
    # librosa rounds to float32 twice (triangles, then area normalisation) where we round once from float64:
    # at most a few units of roundoff apart.
    assert_close(ours, constants["mel_basis"], Tolerance(rtol=4 * UNIT_ROUNDOFF[torch.float32]), "mel_basis")
    assert_close(torch.hann_window(config.win_length), constants["hann_window"], EXACT, "hann_window")


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_reflect_padding_is_exact(fixture_dir):
    fixture, config, _ = _open(fixture_dir)
    for name in _waves_with(fixture.io, "_padded"):
        assert_close(pad_for_stft(fixture.io[name], config), fixture.io[f"{name}_padded"], EXACT, f"{name}_padded")


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_stft_magnitude_matches_within_the_float32_fft_error(fixture_dir):
    fixture, config, tolerances = _open(fixture_dir)
    for name in _waves_with(fixture.io, "_magnitude"):
        wave = fixture.io[name]
        frames = pad_for_stft(wave, config).unfold(-1, config.n_fft, config.hop_length)  # (B, T, n_fft)
        windowed = frames * torch.hann_window(config.win_length)
        # Bins far below their frame's energy carry a large relative error on both sides (upstream's own float32
        # output is 2e-3 off float64 there), hence the FFT bound, twice: ours and upstream's are both float32.
        extra = 2 * fft_error(windowed, config.n_fft).expand(-1, config.n_fft // 2 + 1, -1)
        magnitude = magnitude_spectrogram(wave, config)
        assert_close(magnitude, fixture.io[f"{name}_magnitude"], tolerances["magnitude"], name, extra=extra)


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_log_mel_matches_upstream(fixture_dir):
    fixture, config, tolerances = _open(fixture_dir)
    for name in _waves_with(fixture.io, "_mel"):
        mel, frames = mel_spectrogram(fixture.io[name], config=config)
        expected = fixture.io[f"{name}_mel"]
        assert frames.tolist() == [expected.shape[-1]] * expected.shape[0], name
        assert_close(mel, expected, tolerances["mel"], f"{name}_mel")


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_each_clip_alone_matches_its_row_of_the_batch(fixture_dir):
    """Upstream mels a whole batch at once; ours with lengths mels clip by clip: the rows must agree."""
    fixture, config, tolerances = _open(fixture_dir)
    for name in _waves_with(fixture.io, "_mel"):
        waves = fixture.io[name]
        mel, _ = mel_spectrogram(waves, torch.full((waves.shape[0],), waves.shape[1]), config)
        assert_close(mel, fixture.io[f"{name}_mel"], tolerances["mel"], f"{name}_mel clip by clip")


@pytest.mark.parametrize("fixture_dir", MEL_FIXTURES)
def test_parity_touchtts_mel_length_rules_are_exact(fixture_dir):
    """Frames per clip, the flow's generated-mel length, the LM's prompt placeholders: tensors and Python ints."""
    fixture, config, tolerances = _open(fixture_dir)
    io, exact = fixture.io, tolerances["length_rules"]
    rules = {
        "frames_rule": ("frames_rule_n", "frames_rule_frames", lambda n: num_frames(n, config)),
        "gen_mel_len": ("gen_mel_len_L", "gen_mel_len", lambda n: generated_mel_frames(n, config)),
        "num_audio_token": ("num_audio_token_F", "num_audio_token", prompt_token_count),
    }
    for name, (inputs, outputs, rule) in rules.items():
        assert_close(rule(io[inputs]), io[outputs], exact, name)
        assert [rule(int(n)) for n in io[inputs]] == io[outputs].tolist(), f"{name} on Python ints"


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
