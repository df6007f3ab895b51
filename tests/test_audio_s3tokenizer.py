"""S3Tokenizer's zoo surface: encode/decode contract, batching, long audio, audio input and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from audio.features import log_mel_spectrogram, mel_filters
from audio.io import load_audio, pad_batch, resample
from audio.s3tokenizer import S3Tokenizer, S3TokenizerConfig, length_groups, merge_windows, window_starts
from zoo.errors import ConfigError, CorruptFileError, InputError, NotSupportedError


def tiny(variant: str = "v2", seed: int = 0) -> S3Tokenizer:
    torch.manual_seed(seed)
    fsq = variant in ("v2", "v3")
    config = S3TokenizerConfig(
        variant=variant, n_audio_state=64, n_audio_head=1, n_audio_layer=2, n_codebook_size=6561 if fsq else 4096
    )
    return S3Tokenizer(config).eval()


def speechlike(seconds: float, seed: int = 0, rate: int = 16000) -> torch.Tensor:
    """Amplitude-modulated harmonics with noise: enough structure to give varied tokens."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.rand(1, generator=g)
    wave = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t + torch.rand(1, generator=g) * 6)
    return (0.2 * wave * envelope + 0.01 * torch.randn(t.shape, generator=g)).float()


def test_encode_returns_tokens_with_ids_mask_and_rates():
    model = tiny("v2")
    tokens = model.encode(speechlike(1.0))
    assert tokens.ids.dtype == torch.int64 and tokens.ids.shape == (1, 25)
    assert tokens.mask.all()
    assert tokens.meta["sample_rate"] == 16000 and tokens.meta["token_rate"] == 25
    assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < 6561


@pytest.mark.parametrize("variant,rate", [("v1", 50), ("v1_25hz", 25), ("v2", 25), ("v3", 25)])
def test_token_rate_follows_the_variant(variant, rate):
    tokens = tiny(variant).encode(speechlike(2.0))
    assert tokens.meta["token_rate"] == rate and tokens.ids.shape[1] == 2 * rate


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_batched_ids_equal_each_clip_alone(variant):
    model = tiny(variant)
    clips = [speechlike(s, seed=i) for i, s in enumerate([1.3, 0.4, 2.2, 0.03])]
    batch = model.encode(clips)
    for i, clip in enumerate(clips):
        alone = model.encode(clip)
        n = int(alone.lengths[0])
        assert int(batch.lengths[i]) == n
        assert torch.equal(batch.ids[i, :n], alone.ids[0])
        assert not batch.mask[i, n:].any()


def test_padded_tensor_with_lengths_equals_the_list_of_clips():
    model = tiny("v2")
    clips = [speechlike(1.0, seed=1), speechlike(0.5, seed=2)]
    padded = torch.zeros(2, 16000)
    padded[0], padded[1, :8000] = clips[0], clips[1]
    a = model.encode(padded, lengths=torch.tensor([16000, 8000]))
    b = model.encode(clips)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)


def test_encode_takes_what_preprocess_returns():
    model = tiny("v2")
    clips = [speechlike(1.0, seed=1), speechlike(0.5, seed=2)]
    assert torch.equal(model.encode(model.preprocess(clips)).ids, model.encode(clips).ids)


def test_decode_is_not_offered_and_names_touchtts():
    model = tiny("v2")
    with pytest.raises(NotSupportedError, match="TouchTTS"):
        model.decode(model.encode(speechlike(0.5)))


def test_save_pretrained_and_zoo_load_round_trip(tmp_path):
    model = tiny("v1_25hz")
    model.save_pretrained(tmp_path / "m")
    loaded = zoo.load(tmp_path / "m")
    wave = speechlike(1.0)
    assert loaded.config == model.config
    assert torch.equal(loaded.encode(wave).ids, model.encode(wave).ids)


def test_config_rejects_an_unknown_variant_by_field_name():
    with pytest.raises(ConfigError, match="variant"):
        S3TokenizerConfig(variant="v4")


def test_config_rejects_a_vq_sized_codebook_for_fsq():
    with pytest.raises(ConfigError, match="n_codebook_size"):
        S3TokenizerConfig(variant="v2", n_codebook_size=4096)


# ---- long audio ---------------------------------------------------------------------------------
def test_upstream_windows_keep_sliding_past_the_end_and_complete_windows_stop():
    # 5291 frames: the window at 2600 already reaches the end; upstream still opens one at 5200.
    assert window_starts(5291, "upstream") == [0, 2600, 5200]
    assert window_starts(5291, "complete") == [0, 2600]
    assert window_starts(3730, "upstream") == window_starts(3730, "complete") == [0, 2600]


def test_merge_drops_the_seam_tokens_like_python_slices():
    windows = [torch.arange(10), torch.arange(10, 20), torch.arange(20, 23)]
    assert merge_windows(windows, 4).tolist() == list(range(6)) + list(range(14, 16))  # last window too short
    assert merge_windows(windows[:2], 4).tolist() == list(range(6)) + list(range(14, 20))


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_complete_mode_gives_every_token_of_a_long_clip_and_upstream_mode_loses_the_tail(variant):
    model = tiny(variant)
    frames = 5291  # as the fixture's long_b: the last window starts < 4 s before the end
    mel = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(0)) * 0.3
    complete_ids, complete_len = model.quantize(mel, torch.tensor([frames]))
    upstream_ids, upstream_len = model.quantize(mel, torch.tensor([frames]), sliding_window="upstream")
    expected = ((frames - 1) // model.config.conv1_stride + 1 - 1) // 2 + 1
    assert int(complete_len[0]) == expected
    assert int(upstream_len[0]) == expected - 2 * model.token_rate
    assert torch.equal(complete_ids[0, : int(upstream_len[0])], upstream_ids[0, : int(upstream_len[0])])


def test_long_clips_are_encoded_a_few_windows_at_a_time(monkeypatch):
    model = tiny("v2")
    frames = 2600 * 5 + 700  # six windows
    mel = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(1)) * 0.3
    reference, _ = model.quantize(mel, torch.tensor([frames]), window_batch=8)
    widths = []
    original = model.encode_mel

    def recording(m, lengths):
        widths.append(m.shape[0])
        return original(m, lengths)

    monkeypatch.setattr(model, "encode_mel", recording)
    chunked, _ = model.quantize(mel, torch.tensor([frames]), window_batch=2)
    assert widths == [2, 2, 2]
    assert torch.equal(chunked, reference)


def test_encode_accepts_the_upstream_sliding_window_option_and_records_it():
    model = tiny("v2")
    tokens = model.encode(speechlike(31.0), sliding_window="upstream")
    assert tokens.meta["sliding_window"] == "upstream" and tokens.ids.shape[1] == 775


def test_length_groups_bound_the_padding_and_cover_every_clip_once():
    lengths = [790, 120, 310, 560, 240, 680, 430, 170]
    groups = length_groups(lengths, max_padding=0.25)
    assert sorted(i for g in groups for i in g) == list(range(8))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 1.25 * sum(lengths[i] for i in g)
    assert length_groups(lengths, max_padding=100.0) == [sorted(range(8), key=lambda i: -lengths[i])]


@pytest.mark.parametrize("samples", [201, 250, 359, 401, 480_321, 1_040_000])
def test_log_mel_in_chunks_equals_one_centred_stft_at_every_length(samples):
    wave = speechlike(samples / 16000, seed=5)[:samples]
    mel, frames = log_mel_spectrogram(wave[None])
    spectrum = torch.stft(wave, 400, 160, window=torch.hann_window(400), return_complex=True)[:, :-1]
    reference = torch.clamp(mel_filters() @ spectrum.abs() ** 2, min=1e-10).log10()
    reference = (torch.maximum(reference, reference.max() - 8.0) + 4.0) / 4.0
    assert int(frames[0]) == samples // 160
    torch.testing.assert_close(mel[0], reference, atol=1e-5, rtol=0)


# ---- audio input --------------------------------------------------------------------------------
def test_mel_filters_are_area_normalised_triangles_rising_in_frequency():
    filters = mel_filters(128)
    assert filters.shape == (128, 201) and (filters >= 0).all()
    hz_per_bin = 8000 / 200  # upper filters span many bins, so their sampled area is close to 1 (per Hz)
    assert torch.allclose(filters[64:].sum(dim=1) * hz_per_bin, torch.ones(64), atol=0.1)
    peaks = filters.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all() and int(peaks[-1]) > 190


def test_a_wav_file_at_44k1_is_resampled_to_16k(tmp_path):
    wave = speechlike(1.0, rate=44100)
    sf.write(tmp_path / "a.wav", wave.numpy(), 44100, subtype="FLOAT")
    loaded = load_audio(tmp_path / "a.wav")
    assert loaded.shape == (16000,)
    torch.testing.assert_close(loaded, resample(wave, 44100), atol=1e-6, rtol=0)


def test_stereo_files_are_down_mixed_not_reduced_to_channel_zero(tmp_path):
    wave = speechlike(1.0)
    stereo = np.stack([np.zeros_like(wave.numpy()), wave.numpy()], axis=1)  # speech in the right channel only
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    torch.testing.assert_close(load_audio(tmp_path / "s.wav"), wave / 2)


def test_encode_takes_paths_and_gives_the_ids_of_the_waveform(tmp_path):
    model = tiny("v2")
    waves = [speechlike(1.0, seed=3), speechlike(0.6, seed=4)]
    paths = []
    for i, w in enumerate(waves):
        sf.write(tmp_path / f"{i}.wav", w.numpy(), 16000, subtype="FLOAT")
        paths.append(tmp_path / f"{i}.wav")
    assert torch.equal(model.encode(paths).ids, model.encode(waves).ids)
    assert torch.equal(model.encode(str(paths[0])).ids, model.encode(waves[0]).ids)


def test_array_input_at_another_rate_is_resampled():
    model = tiny("v2")
    tokens = model.encode(speechlike(1.0, rate=8000).numpy(), sample_rate=8000)
    assert tokens.ids.shape == (1, 25) and int(tokens.meta["num_samples"][0]) == 16000


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.zeros(0), "empty"),
        (torch.tensor([0.1, float("nan")] * 400), "NaN"),
        (torch.zeros(150), "shorter than 201 samples"),
        (torch.zeros(1000, dtype=torch.int16), "floating point"),
        (torch.zeros(1, 1, 1, 400), "dimensions|shape"),
        ([], "empty"),
        (42, "path, a numpy array or a torch.Tensor"),
    ],
)
def test_bad_waveforms_raise_input_errors_that_name_the_problem(bad, message):
    with pytest.raises(InputError, match=message):
        tiny("v2").encode(bad)


def test_an_unreadable_file_raises_a_corrupt_file_error(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really audio")
    with pytest.raises(CorruptFileError, match="broken.wav"):
        tiny("v2").encode(tmp_path / "broken.wav")


def test_a_missing_file_raises_naming_the_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tiny("v2").encode(tmp_path / "nothing.wav")


def test_an_unknown_sliding_window_mode_is_refused():
    with pytest.raises(InputError, match="sliding_window"):
        tiny("v2").encode(speechlike(31.0), sliding_window="drop")


def test_pad_batch_right_pads_waveforms_and_mels_along_time_and_returns_their_lengths():
    waves, n = pad_batch([torch.ones(3), torch.ones(5)])
    assert waves.shape == (2, 5) and n.tolist() == [3, 5] and waves[0, 3:].eq(0).all()
    mels, frames = pad_batch([torch.ones(4, 2), torch.full((4, 6), 2.0)])
    assert mels.shape == (2, 4, 6) and frames.tolist() == [2, 6]
    assert mels[0, :, :2].eq(1).all() and mels[0, :, 2:].eq(0).all() and mels[1].eq(2).all()
