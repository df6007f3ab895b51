"""The vocoder interface: our HiFi-GAN generator, BigVGAN through the bigvgan package, and the Griffin-Lim fallback."""

from __future__ import annotations

import json
import math

import pytest
import torch

from audio.touchtts.mel import DEFAULT_MEL, MelConfig, mel_spectrogram
from audio.touchtts.vocoder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    BigVGAN,
    GriffinLim,
    HiFiGAN,
    HiFiGANConfig,
    convert_bigvgan_checkpoint,
    load_vocoder,
)
from zoo.errors import CheckpointMismatchError, ConfigError, InputError, ModelFileNotFoundError, UnsafeFormatError

# The reference BigVGAN models built here use torch's old weight_norm, as the published checkpoints do.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

TINY = HiFiGANConfig(
    upsample_rates=(8, 8, 4),
    upsample_kernel_sizes=(16, 16, 8),
    upsample_initial_channel=32,
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 3), (1, 3)),
)


def tiny_hifigan(seed: int = 0) -> HiFiGAN:
    torch.manual_seed(seed)
    return HiFiGAN(TINY).eval()


def random_mel(batch: int = 2, frames: int = 20, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, frames, generator=generator) - 5.0


def tiny_bigvgan_hparams() -> dict:
    """A small BigVGAN v2 config in the package's own format (upsampling 8 x 8 x 4 = the 256-sample hop)."""
    return {
        "resblock": "1",
        "upsample_rates": [8, 8, 4],
        "upsample_kernel_sizes": [16, 16, 8],
        "upsample_initial_channel": 32,
        "resblock_kernel_sizes": [3, 7],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "activation": "snakebeta",
        "snake_logscale": True,
        "use_tanh_at_final": False,
        "use_bias_at_final": False,
        "num_mels": 80,
        "n_fft": 1024,
        "hop_size": 256,
        "win_size": 1024,
        "sampling_rate": 22050,
        "fmin": 0,
        "fmax": 8000,
        "segment_size": 65536,
    }


# ---- the interface and our HiFi-GAN --------------------------------------------------------------
def test_hifigan_turns_each_mel_frame_into_one_hop_of_samples_in_range():
    vocoder = tiny_hifigan()
    with torch.no_grad():
        wave = vocoder(random_mel(frames=20))
    assert (vocoder.sample_rate, vocoder.hop_length, vocoder.n_mels) == (22050, 256, 80)
    assert wave.shape == (2, 20 * 256)
    assert wave.abs().max() <= 1.0 and torch.isfinite(wave).all()


def test_vocode_gives_each_clip_the_same_waveform_alone_or_in_a_padded_batch():
    vocoder = tiny_hifigan()
    mel = random_mel(frames=30)
    mel[1, :, 17:] = math.log(1e-5)
    waves, lengths = vocoder.vocode(mel, torch.tensor([30, 17]))
    assert lengths.tolist() == [30 * 256, 17 * 256]
    assert torch.equal(waves[0], vocoder.vocode(mel[:1])[0][0])
    assert torch.equal(waves[1, : 17 * 256], vocoder.vocode(mel[1:, :, :17])[0][0])
    assert (waves[1, 17 * 256 :] == 0).all()


def test_vocode_rejects_the_wrong_number_of_mel_bins_and_bad_frame_counts():
    vocoder = tiny_hifigan()
    with pytest.raises(InputError, match=r"\(B, 80, T\)"):
        vocoder.vocode(torch.zeros(1, 100, 10))
    with pytest.raises(InputError, match="frames"):
        vocoder.vocode(random_mel(frames=10), torch.tensor([10, 11]))
    with pytest.raises(InputError, match="NaN"):
        vocoder.vocode(torch.full((1, 80, 10), float("nan")))


def test_hifigan_config_refuses_a_hop_other_than_the_mels_and_uneven_kernels():
    with pytest.raises(ConfigError, match="multiply to 128"):
        HiFiGAN(HiFiGANConfig(upsample_rates=(8, 8, 2), upsample_kernel_sizes=(16, 16, 4), upsample_initial_channel=64))
    with pytest.raises(ConfigError, match="even difference"):
        HiFiGANConfig(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 15, 8))


def test_require_mel_names_each_setting_that_differs():
    vocoder = tiny_hifigan()
    vocoder.require_mel(DEFAULT_MEL)
    with pytest.raises(ConfigError, match="fmax: vocoder 8000.0 vs 11025"):
        vocoder.require_mel(MelConfig(fmax=11025))


def test_hifigan_round_trips_through_safetensors(tmp_path):
    vocoder = tiny_hifigan()
    vocoder.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["type"] == "hifigan"
    loaded = load_vocoder(tmp_path)
    mel = random_mel()
    assert torch.equal(loaded.vocode(mel)[0], vocoder.vocode(mel)[0])
    assert not loaded.training


def test_loading_refuses_weights_that_do_not_fit_and_unknown_types(tmp_path):
    tiny_hifigan().save(tmp_path / "a")
    HiFiGAN(HiFiGANConfig(**{**TINY.__dict__, "upsample_initial_channel": 64})).save(tmp_path / "b")
    (tmp_path / "a" / WEIGHTS_FILE).replace(tmp_path / "b" / WEIGHTS_FILE)
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        load_vocoder(tmp_path / "b")
    data = json.loads((tmp_path / "b" / CONFIG_FILE).read_text())
    (tmp_path / "b" / CONFIG_FILE).write_text(json.dumps({**data, "type": "os.system"}))
    with pytest.raises(ConfigError, match="unknown vocoder type 'os.system'"):
        load_vocoder(tmp_path / "b")
    with pytest.raises(ModelFileNotFoundError, match=CONFIG_FILE):
        load_vocoder(tmp_path / "missing")


def test_a_pickled_vocoder_checkpoint_is_refused_unopened(tmp_path):
    vocoder = tiny_hifigan()
    vocoder.save(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    torch.save(vocoder.state_dict(), tmp_path / "vocoder.pt")
    with pytest.raises(UnsafeFormatError, match="vocoder.pt"):
        load_vocoder(tmp_path)


def test_vocoder_config_keys_are_checked(tmp_path):
    tiny_hifigan().save(tmp_path)
    data = json.loads((tmp_path / CONFIG_FILE).read_text())
    data["generator"]["upsample_scale"] = 2
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown keys for HiFiGANConfig: upsample_scale"):
        load_vocoder(tmp_path)


def test_hifigan_learns_to_reproduce_a_tone_from_its_mel():
    """A few steps of the training loss (mel L1) move the output towards the target: the generator is trainable."""
    from audio.touchtts.train_vocoder import reconstruction_loss

    torch.manual_seed(0)
    vocoder = HiFiGAN(TINY)
    wave = 0.5 * torch.sin(2 * math.pi * 330 * torch.arange(256 * 24) / 22050)[None]
    mel, _ = mel_spectrogram(wave)
    optimiser = torch.optim.Adam(vocoder.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = reconstruction_loss(vocoder(mel), wave)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# ---- BigVGAN through the bigvgan package ---------------------------------------------------------
def test_bigvgan_wrapper_computes_what_the_package_model_computes():
    import bigvgan
    from bigvgan.env import AttrDict

    torch.manual_seed(0)
    reference = bigvgan.BigVGAN(AttrDict(tiny_bigvgan_hparams())).eval()
    ours = BigVGAN(tiny_bigvgan_hparams()).eval()
    ours.generator.load_state_dict(reference.state_dict())
    mel = random_mel(frames=12)
    with torch.no_grad():
        expected = torch.cat([reference(mel[i : i + 1])[:, 0] for i in range(2)])  # vocode runs clip by clip
    assert torch.equal(ours.vocode(mel)[0], expected)
    assert expected.shape == (2, 12 * 256)
    ours.require_mel(DEFAULT_MEL)


def test_published_bigvgan_folder_converts_to_safetensors_and_loads_strictly(tmp_path):
    import bigvgan
    from bigvgan.env import AttrDict

    torch.manual_seed(3)
    published = tmp_path / "bigvgan_base_22khz_80band"
    published.mkdir()
    reference = bigvgan.BigVGAN(AttrDict(tiny_bigvgan_hparams())).eval()
    (published / "config.json").write_text(json.dumps(tiny_bigvgan_hparams()))
    torch.save({"generator": reference.state_dict()}, published / "bigvgan_generator.pt")  # NVIDIA's layout

    folder = convert_bigvgan_checkpoint(published, tmp_path / "ours")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    vocoder = load_vocoder(folder)
    assert isinstance(vocoder, BigVGAN) and vocoder.sample_rate == 22050 and vocoder.hop_length == 256
    mel = random_mel(batch=1, frames=10)
    with torch.no_grad():
        assert torch.equal(vocoder.vocode(mel)[0], reference(mel)[:, 0])


def test_bigvgan_checkpoint_missing_a_key_is_refused(tmp_path):
    import bigvgan
    from bigvgan.env import AttrDict

    reference = bigvgan.BigVGAN(AttrDict(tiny_bigvgan_hparams()))
    state = reference.state_dict()
    state.pop("conv_post.weight_v")
    (tmp_path / "config.json").write_text(json.dumps(tiny_bigvgan_hparams()))
    torch.save({"generator": state}, tmp_path / "bigvgan_generator.pt")
    with pytest.raises(CheckpointMismatchError, match="generator.conv_post.weight_v"):
        convert_bigvgan_checkpoint(tmp_path, tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_bigvgan_config_without_mel_settings_or_with_the_wrong_hop_is_refused():
    hparams = tiny_bigvgan_hparams()
    with pytest.raises(ConfigError, match="lacks the mel settings"):
        BigVGAN({k: v for k, v in hparams.items() if k != "fmax"})
    with pytest.raises(ConfigError, match="do not multiply to hop_size"):
        BigVGAN({**hparams, "upsample_rates": [8, 8, 2]})


# ---- Griffin-Lim fallback -------------------------------------------------------------------------
def test_griffin_lim_fallback_is_labelled_and_keeps_the_pitch_of_a_tone(caplog):
    with caplog.at_level("WARNING"):
        vocoder = GriffinLim()
    assert vocoder.fallback and "fallback" in caplog.text
    assert not HiFiGAN.fallback and not BigVGAN.fallback
    tone = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(22050) / 22050)[None]
    mel, _ = mel_spectrogram(tone)
    wave, lengths = vocoder.vocode(mel)
    assert wave.shape == (1, mel.shape[-1] * 256) and lengths.tolist() == [mel.shape[-1] * 256]
    spectrum = torch.fft.rfft(wave[0]).abs()
    assert abs(float(spectrum.argmax()) * 22050 / wave.shape[-1] - 440) < 5
    assert torch.equal(vocoder.vocode(mel)[0], wave)  # deterministic: no random initial phase


def test_griffin_lim_round_trips_through_its_json(tmp_path):
    GriffinLim(n_iter=8).save(tmp_path)
    assert not (tmp_path / WEIGHTS_FILE).exists()
    loaded = load_vocoder(tmp_path)
    assert isinstance(loaded, GriffinLim) and loaded.n_iter == 8


# ---- the bundled tiny vocoder (hub_cards/touchtts-tiny, made by audio/touchtts/train_vocoder.py) -------
def test_bundled_tiny_vocoder_resynthesises_held_out_speech_that_stays_readable():
    """On the three held-out espeak clips bundled with the tiny S3 tokenizer (never trained on): the resynthesis
    keeps the mel (random weights are over 4x further off) and the tiny recogniser still reads it."""
    from audio.io import load_audio, resample
    from audio.touchtts.data import TinyRecogniser, corpus_cer
    from zoo.registry import cards_dir

    vocoder = load_vocoder(cards_dir() / "touchtts-tiny")
    assert isinstance(vocoder, HiFiGAN) and vocoder.sample_rate == 22050
    torch.manual_seed(0)
    untrained = HiFiGAN(vocoder.config).eval()
    samples = cards_dir().parent / "audio" / "samples"
    clips = json.loads((samples / "transcripts.json").read_text())
    resynthesised = []
    for clip in clips:
        wave = load_audio(samples / clip["file"], vocoder.sample_rate)
        mel, _ = mel_spectrogram(wave)
        ours = vocoder.vocode(mel)[0][0]
        mel_l1 = (mel_spectrogram(ours)[0] - mel).abs().mean()
        untrained_l1 = (mel_spectrogram(untrained.vocode(mel)[0][0])[0] - mel).abs().mean()
        assert mel_l1 < 0.6 and untrained_l1 > 4 * mel_l1, (clip["file"], mel_l1, untrained_l1)
        resynthesised.append(resample(ours, vocoder.sample_rate, 16000))
    _, hypotheses = TinyRecogniser()(resynthesised)
    assert corpus_cer([c["text"] for c in clips], hypotheses) < 0.4
