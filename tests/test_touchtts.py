"""TouchTTS behaviour at tiny random sizes: KV cache, sampling limits, Euler schedule, chunk masks, streaming,
the zoo surface and bad input. Upstream parity lives in test_touchtts_parity.py."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from audio.touchtts.flow import FlowConfig, TouchFlow, stream_mel
from audio.touchtts.lm import LMConfig, SpeechLM
from audio.touchtts.model import ChunkedVocoder, TouchTTS, TouchTTSConfig, tiny_config
from audio.touchtts.trunk import QwenShape
from zoo.api import Tokens
from zoo.errors import ConfigError, InputError, NotSupportedError

N_CODES = 64  # a small speech vocabulary keeps the random models quick
TRUNK = QwenShape(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=2048,
)  # fmt: skip


def _randomise(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Weights far from HF's std-0.02 init, so attention and logits are not near-uniform (as the fixtures do)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
            else:
                parameter.copy_(1 + std * torch.randn(parameter.shape, generator=generator))
    return module.eval()


@functools.lru_cache(maxsize=1)
def tiny_lm() -> SpeechLM:
    return _randomise(SpeechLM(LMConfig(trunk=TRUNK, num_speech_tokens=N_CODES)), seed=1)


@functools.lru_cache(maxsize=4)
def tiny_flow(**overrides) -> TouchFlow:
    return _randomise(TouchFlow(FlowConfig(trunk=TRUNK, num_speech_tokens=N_CODES, **overrides)), seed=2)


class FrameVocoder(nn.Module):
    """A test vocoder: each frame's samples come from it and its two neighbours (a 1-frame receptive field)."""

    kind = "test-frame"

    def __init__(self, n_mels: int = 80, hop_length: int = 256, sample_rate: int = 22050):
        super().__init__()
        self.n_mels, self.hop_length, self.sample_rate = n_mels, hop_length, sample_rate
        self.conv = nn.Conv1d(n_mels, hop_length, 3, padding=1)
        _randomise(self, seed=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, M, T) -> (B, T * hop)
        return torch.tanh(self.conv(mel)).transpose(1, 2).reshape(mel.shape[0], -1)

    def vocode(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waves = torch.zeros(mel.shape[0], int(frames.max()) * self.hop_length)
        for i, n in enumerate(frames.tolist()):
            waves[i, : n * self.hop_length] = self(mel[i : i + 1, :, :n])[0]
        return waves, frames * self.hop_length

    def config_dict(self) -> dict:
        return {"n_mels": self.n_mels}


@functools.lru_cache(maxsize=1)
def tiny_tts() -> TouchTTS:
    model = TouchTTS(tiny_config(N_CODES, speakers=("amy", "bob"), stream_chunk_frames=12), vocoder=FrameVocoder())
    model.lm.load_state_dict(_randomise(SpeechLM(model.config.lm), seed=1).state_dict())
    model.flow.load_state_dict(_randomise(TouchFlow(model.config.flow), seed=2).state_dict())
    with torch.no_grad():
        model.speaker_table.copy_(torch.randn(model.speaker_table.shape, generator=torch.Generator().manual_seed(4)))
    return model.eval()


def _prompts(lm: SpeechLM, texts: list[str]):
    batch = lm.collate([lm.layout(t, 0, inference=True) for t in texts])
    return batch["input_ids"], batch["attention_mask"].sum(1), batch["text_lengths"]


# ---- LM ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "seeded-sampling"])
def test_lm_generation_with_kv_cache_equals_recomputing_the_prefix(sample):
    lm = tiny_lm()
    ids, lengths, text_lengths = _prompts(lm, ["hello there", "ok"])
    outputs = []
    for use_cache in (True, False):
        generators = [torch.Generator().manual_seed(11) for _ in range(2)] if sample else None
        outputs.append(lm.generate(ids, lengths, text_lengths, generators, sample, use_cache, 40, return_scores=True))
    (cached, n_cached, s_cached), (plain, n_plain, s_plain) = outputs
    assert torch.equal(cached, plain) and torch.equal(n_cached, n_plain)
    torch.testing.assert_close(s_cached["raw"], s_plain["raw"], atol=1e-4, rtol=1e-4)


def test_lm_samples_the_same_ids_alone_and_in_a_padded_batch():
    lm = tiny_lm()
    texts = ["a longer one to pad", "hi"]
    ids, lengths, text_lengths = _prompts(lm, texts)
    together, n_together = lm.generate(ids, lengths, text_lengths, [torch.Generator().manual_seed(5) for _ in texts])
    for row, text in enumerate(texts):
        alone, n_alone = lm.generate(*_prompts(lm, [text]), [torch.Generator().manual_seed(5)])
        assert int(n_alone[0]) == int(n_together[row])
        assert torch.equal(alone[0, : n_alone[0]], together[row, : n_together[row]])


def test_lm_stops_no_earlier_than_2x_and_no_later_than_30x_the_text_ids():
    lm = tiny_lm()
    ids, lengths, text_lengths = _prompts(lm, ["abc"])
    # Make the stop id overwhelmingly likely: it must still wait for 2 x 3 new ids.
    eager = SpeechLM(lm.config)
    eager.load_state_dict(lm.state_dict())
    with torch.no_grad():
        eager.llm.model.embed_tokens.weight[lm.eos_id] *= 50
        eager.llm.model.norm.weight.fill_(1.0)
    out, n = eager.generate(ids, lengths, text_lengths, sample=False)
    assert int(n[0]) >= 2 * 3 and not torch.isin(out[0, : 2 * 3], torch.tensor(lm.stop_ids)).any()
    out, n = lm.generate(ids, lengths, text_lengths, sample=False, max_new_tokens=None)
    assert int(n[0]) <= 30 * 3


def test_lm_state_dict_keeps_one_copy_of_the_tied_embedding_and_loads_strictly():
    lm = tiny_lm()
    state = lm.state_dict()
    assert "llm.lm_head.weight" not in state and "llm.model.embed_tokens.weight" in state
    other = SpeechLM(lm.config)
    other.load_state_dict(state, strict=True)
    assert other.llm.lm_head.weight is other.llm.model.embed_tokens.weight
    assert torch.equal(other.llm.lm_head.weight, lm.llm.lm_head.weight)


def test_lm_loss_on_scored_positions_only_equals_the_full_causal_lm_loss():
    lm = tiny_lm()
    items = [lm.layout(t, n) for t, n in (("hello there", 12), ("ok", 5))]
    batch = lm.collate(items)
    codes = torch.randint(0, N_CODES, (2, 12), generator=torch.Generator().manual_seed(0))
    ids, labels = lm.fill_speech(
        batch["input_ids"], batch["labels"], batch["audio_offsets"], batch["batch_idx"], codes, torch.tensor([12, 5])
    )
    full = lm(ids, batch["attention_mask"], labels).loss
    torch.testing.assert_close(lm.loss(ids, batch["attention_mask"], labels), full, atol=1e-6, rtol=1e-6)


def test_lm_refuses_speech_codes_outside_its_vocabulary():
    lm = tiny_lm()
    with pytest.raises(InputError, match=f"\\[0, {N_CODES}\\)"):
        lm.check_codes(torch.tensor([[0, N_CODES]]), torch.tensor([2]))


# ---- flow: sampler and masks ------------------------------------------------------------------------
def test_flow_euler_sampler_reaches_t_1_and_the_old_loop_stops_one_step_short():
    flow = tiny_flow()
    for n in (1, 5, 10):
        t, dt = flow.euler_schedule(n)[-1]
        assert len(flow.euler_schedule(n)) == n and float(t + dt) == pytest.approx(1.0, abs=1e-6)
    truncated = tiny_flow(euler_loop="truncated")
    schedule = truncated.euler_schedule(5)
    assert len(schedule) == 4
    assert float(schedule[-1][0] + schedule[-1][1]) == pytest.approx(float(flow.time_grid(5)[4]), abs=1e-6)


def test_flow_trained_with_dynamic_chunks_samples_with_full_context_unless_told_a_chunk():
    dynamic = tiny_flow(use_dynamic_chunk=True, use_dynamic_left_chunk=True)  # training setting: draw per batch
    codes, lengths = _codes(16)[None], torch.tensor([16])
    runs = [dynamic.sample(codes, lengths, generators=[torch.Generator().manual_seed(1)])[0] for _ in range(2)]
    full = tiny_flow().sample(codes, lengths, generators=[torch.Generator().manual_seed(1)])[0]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], full)
    static = tiny_flow(static_chunk_size=8, num_decoding_left_chunks=1)
    chunked = static.sample(codes, lengths, generators=[torch.Generator().manual_seed(1)])[0]
    told = tiny_flow().sample(codes, lengths, generators=[torch.Generator().manual_seed(1)], chunk=(8, 1))[0]
    assert torch.equal(chunked, told) and not torch.equal(chunked, full)


def _streams(flow: TouchFlow, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, frames, 5 * flow.config.mel_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("left", [-1, 0, 1])
def test_flow_trunk_under_a_chunk_mask_reads_only_its_chunk_and_allowed_left_chunks(left):
    flow, chunk, frames = tiny_flow(), 4, 20
    layers = flow.config.trunk.num_hidden_layers
    valid = torch.ones(1, frames, dtype=torch.bool)
    bias = flow.attention_bias(valid, chunk=(chunk, left))
    base = _streams(flow, frames)
    with torch.no_grad():
        before = flow.velocity(base, bias)
        for changed in range(frames):
            edited = base.clone()
            edited[:, changed] += 3.0
            moved = (flow.velocity(edited, bias) - before).abs().amax(dim=-1)[0] > 1e-5  # (T,)
            for query in torch.nonzero(moved).flatten().tolist():
                assert changed // chunk <= query // chunk, "a frame read a later chunk"
                if left >= 0:  # each layer reaches `left` chunks further back
                    assert query // chunk - changed // chunk <= left * layers, "a frame read beyond its left context"


def test_flow_additive_01_mask_lets_every_frame_read_every_other():
    flow = tiny_flow(attention_mask_form="additive_01")
    frames = 12
    bias = flow.attention_bias(torch.ones(1, frames, dtype=torch.bool), chunk=(4, 0))
    base = _streams(flow, frames)
    edited = base.clone()
    edited[:, -1] += 3.0
    with torch.no_grad():
        assert (flow.velocity(edited, bias)[0, 0] - flow.velocity(base, bias)[0, 0]).abs().max() > 1e-4


def test_flow_per_item_token_condition_does_not_depend_on_the_other_items():
    flow = tiny_flow()
    codes = torch.randint(0, N_CODES, (2, 9), generator=torch.Generator().manual_seed(0))
    code_lengths, frames = torch.tensor([9, 5]), torch.tensor([31, 17])
    with torch.no_grad():
        together = flow.token_condition(flow.code_features(codes, code_lengths), code_lengths, frames)
        alone = flow.token_condition(flow.code_features(codes[1:, :5], code_lengths[1:]), code_lengths[1:], frames[1:])
    torch.testing.assert_close(together[1, :17], alone[0], atol=1e-6, rtol=0)
    assert not together[1, 17:].any()


def test_flow_samples_each_item_the_same_alone_and_in_a_padded_batch():
    flow = tiny_flow()
    codes = torch.randint(0, N_CODES, (2, 12), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([12, 7])
    speaker = torch.randn(2, flow.config.spk_dim, generator=torch.Generator().manual_seed(2))
    mel, frames = flow.sample(codes, lengths, speaker, generators=[torch.Generator().manual_seed(3) for _ in range(2)])
    alone, n = flow.sample(codes[1:, :7], lengths[1:], speaker[1:], generators=[torch.Generator().manual_seed(3)])
    assert int(n[0]) == int(frames[1]) == flow.config.mel_frames(7)
    torch.testing.assert_close(mel[1, : n[0]], alone[0], atol=1e-4, rtol=1e-4)


# ---- flow: streaming --------------------------------------------------------------------------------
def _codes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, N_CODES, (n,), generator=torch.Generator().manual_seed(seed))


def _pieces(codes: torch.Tensor, sizes=(1, 4, 2, 7, 3)) -> list[torch.Tensor]:
    pieces, start = [], 0
    while start < len(codes):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(codes[start : start + size])
        start += size
    return pieces


def test_flow_stream_with_one_full_context_chunk_equals_offline_sampling():
    flow, codes = tiny_flow(), _codes(23)
    speaker = torch.randn(1, flow.config.spk_dim, generator=torch.Generator().manual_seed(4))
    offline, frames = flow.sample(
        codes[None], torch.tensor([len(codes)]), speaker, generators=[torch.Generator().manual_seed(6)]
    )
    stream = flow.stream(10_000, -1, speaker, total_codes=len(codes), generator=torch.Generator().manual_seed(6))
    pieces = list(stream_mel(stream, _pieces(codes)))
    assert len(pieces) == 1
    torch.testing.assert_close(pieces[0], offline[0, : frames[0]], atol=2e-5, rtol=0)


@pytest.mark.parametrize("left", [-1, 1])
def test_flow_stream_equals_offline_sampling_under_the_same_chunk_mask(left):
    flow, codes = tiny_flow(), _codes(30, seed=1)
    offline, frames = flow.sample(
        codes[None], torch.tensor([len(codes)]), generators=[torch.Generator().manual_seed(7)], chunk=(8, left)
    )
    stream = flow.stream(8, left, total_codes=len(codes), generator=torch.Generator().manual_seed(7))
    pieces = list(stream_mel(stream, _pieces(codes)))
    assert all(len(p) % 8 == 0 for p in pieces[:-1]) and len(pieces) > 3
    torch.testing.assert_close(torch.cat(pieces), offline[0, : frames[0]], atol=2e-5, rtol=0)


def test_flow_stream_of_arriving_codes_equals_offline_sampling_at_the_fixed_code_rate():
    flow, codes = tiny_flow(), _codes(30, seed=2)
    rate = 1 / flow.config.frames_per_token
    offline, frames = flow.sample(
        codes[None], torch.tensor([len(codes)]), generators=[torch.Generator().manual_seed(8)], chunk=(8, 2),
        codes_per_frame=rate,
    )  # fmt: skip
    stream = flow.stream(8, 2, generator=torch.Generator().manual_seed(8))  # total unknown
    mel = torch.cat(list(stream_mel(stream, _pieces(codes))))
    torch.testing.assert_close(mel, offline[0, : frames[0]], atol=2e-5, rtol=0)


def test_flow_stream_chunks_do_not_change_when_later_codes_change():
    flow = tiny_flow()
    first, second = _codes(30, seed=3), _codes(30, seed=3).clone()
    second[20:] = (second[20:] + 1) % N_CODES
    outputs = []
    for codes in (first, second):
        stream = flow.stream(8, -1, generator=torch.Generator().manual_seed(9))
        outputs.append(torch.cat(list(stream_mel(stream, _pieces(codes)))))
    # Frames whose chunk ends before code 19 is read are identical; the rest differ.
    rate = flow.config.frames_per_token
    safe = int((19 - 1) * rate) // 8 * 8
    assert safe >= 16
    assert torch.equal(outputs[0][:safe], outputs[1][:safe])
    assert not torch.equal(outputs[0], outputs[1])


def test_flow_stream_returns_frames_only_once_their_codes_have_arrived():
    flow = tiny_flow()
    stream = flow.stream(8, -1, generator=torch.Generator().manual_seed(0))
    assert len(stream.push(_codes(2))) == 0  # 2 codes cannot fill an 8-frame chunk
    got = stream.push(_codes(10, seed=1))
    assert len(got) % 8 == 0 and len(got) > 0
    rest = stream.finish()
    assert len(got) + len(rest) == flow.config.mel_frames(12)


# ---- chunked vocoder --------------------------------------------------------------------------------
def test_chunked_vocoder_equals_vocoding_the_whole_mel_when_context_covers_the_receptive_field():
    vocoder = FrameVocoder()
    mel = torch.randn(80, 37, generator=torch.Generator().manual_seed(0))
    chunked = ChunkedVocoder(vocoder, context=2)
    with torch.no_grad():
        pieces = [chunked.push(mel[:, a:b]) for a, b in ((0, 5), (5, 6), (6, 20), (20, 37))] + [chunked.finish()]
        whole = vocoder(mel[None])[0]
    torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-5, rtol=0)


# ---- the zoo model ----------------------------------------------------------------------------------
def test_synthesize_returns_padded_waveforms_whose_lengths_follow_the_speech_tokens():
    model = tiny_tts()
    texts = ["hello", "hi"]
    tokens = model.encode(texts, seed=1)
    assert tokens.ids.dtype == torch.int64 and tokens.meta["codebook_size"] == N_CODES
    assert int(tokens.ids[tokens.mask].max()) < N_CODES
    waves, lengths = model.synthesize(texts, seed=1, return_lengths=True)
    frames = torch.tensor([model.config.flow.mel_frames(int(n)) for n in tokens.lengths])
    assert torch.equal(lengths, frames * 256) and waves.shape == (2, int(lengths.max()))
    assert torch.isfinite(waves).all() and not waves[1, int(lengths[1]) :].any()


def test_synthesize_is_deterministic_per_seed_and_the_same_alone_or_batched():
    model = tiny_tts()
    waves, lengths = model.synthesize(["longer one", "short"], speaker="amy", seed=3, return_lengths=True)
    again = model.synthesize(["longer one", "short"], speaker="amy", seed=3)
    assert torch.equal(waves, again)
    alone = model.synthesize("short", speaker="amy", seed=3)
    assert alone.dim() == 1 and len(alone) == int(lengths[1])
    torch.testing.assert_close(alone, waves[1, : lengths[1]], atol=1e-4, rtol=0)
    other = model.synthesize("short", speaker="amy", seed=4)
    assert not torch.equal(other, alone)


def test_decode_turns_s3_tokens_into_speech_and_speakers_change_it():
    model = tiny_tts()
    ids = torch.randint(0, N_CODES, (2, 15), generator=torch.Generator().manual_seed(0))
    mask = torch.arange(15)[None, :] < torch.tensor([[15], [9]])
    tokens = Tokens(ids=ids, mask=mask, meta={"token_rate": 25, "codebook_size": N_CODES, "sample_rate": 16000})
    waves, lengths = model.decode(tokens, speaker="bob")
    assert lengths.tolist() == [model.config.flow.mel_frames(15) * 256, model.config.flow.mel_frames(9) * 256]
    vector = model.speaker_table[0].detach()
    by_vector, _ = model.decode(tokens, speaker=vector)
    by_name, _ = model.decode(tokens, speaker="amy")
    assert torch.equal(by_vector, by_name) and not torch.equal(by_name, waves)
    mel, frames = model.decode_mel(tokens[1])
    assert mel.shape == (1, 80, int(frames[0]))


def test_streamed_synthesis_yields_several_pieces_of_the_expected_total_length():
    model = tiny_tts()
    tokens = model.encode("stream this", seed=2)
    pieces = list(model.synthesize("stream this", stream=True, seed=2))
    assert len(pieces) > 2 and all(p.dim() == 1 for p in pieces)
    assert sum(len(p) for p in pieces) == model.config.flow.mel_frames(int(tokens.lengths[0])) * 256
    assert not torch.is_inference_mode_enabled()


def test_model_saves_and_loads_its_folder_with_the_same_output(tmp_path):
    model = tiny_tts()
    mel, _ = model.decode_mel(model.encode("round trip", seed=0))
    config = dataclasses.replace(model.config, vocoder=None)  # the test vocoder is no registered type
    plain = TouchTTS(config)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("vocoder.")})
    plain.save_pretrained(tmp_path)
    loaded = TouchTTS.from_folder(tmp_path)
    assert loaded.config == config
    again, _ = loaded.decode_mel(loaded.encode("round trip", seed=0))
    assert torch.equal(mel, again)
    with pytest.raises(NotSupportedError, match="no vocoder"):
        loaded.synthesize("round trip")


def test_a_loaded_lm_ties_its_output_projection_to_the_embedding(tmp_path):
    # zoo.load assigns tensors to a meta-built model: the head must be the embedding's parameter again,
    # or fine-tuning would update one tensor through two parameters with two optimiser states.
    model = TouchTTS(tiny_config(N_CODES))
    model.save_pretrained(tmp_path)
    llm = TouchTTS.from_folder(tmp_path).lm.llm
    assert llm.lm_head.weight is llm.model.embed_tokens.weight


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("日本語", "only characters"),
        ([], "non-empty list"),
        (["fine", ""], r"text\[1\] is empty"),
        (3, "must be a string"),
    ],
)
def test_bad_text_is_refused_with_a_clear_error(text, message):
    with pytest.raises(InputError, match=message):
        tiny_tts().encode(text)


def test_unsupported_characters_are_dropped_with_a_warning(caplog):
    model = tiny_tts()
    with caplog.at_level("WARNING"):
        tokens = model.encode("café", seed=0)
    assert "é" in caplog.text and tokens.lengths[0] > 0


@pytest.mark.parametrize(
    "ids,meta,message",
    [
        ([[0, N_CODES]], {}, f"\\[0, {N_CODES}\\)"),
        ([[-1, 3]], {}, f"\\[0, {N_CODES}\\)"),
        ([[1, 2]], {"codebook_size": 6561}, "6561-token codebook"),
        ([[1, 2]], {"token_rate": 50}, "50 per second"),
    ],
)
def test_decode_refuses_ids_outside_the_speech_vocabulary(ids, meta, message):
    with pytest.raises(InputError, match=message):
        tiny_tts().decode(Tokens(ids=torch.tensor(ids), meta=meta))


@pytest.mark.parametrize(
    "speaker,message",
    [
        (torch.zeros(191), "must have 192 values"),
        (torch.zeros(3, 192), "must have 192 values"),
        ("carol", "unknown speaker 'carol'"),
        (torch.zeros(192, dtype=torch.int64), "float tensor"),
        (torch.full((192,), float("nan")), "NaN"),
    ],
)
def test_bad_speakers_are_refused_with_a_clear_error(speaker, message):
    tokens = Tokens(ids=torch.tensor([[1, 2, 3]]))
    with pytest.raises(InputError, match=message):
        tiny_tts().decode(tokens, speaker=speaker)


def test_streaming_takes_one_string():
    with pytest.raises(InputError, match="one text"):
        tiny_tts().synthesize(["a", "b"], stream=True)


def test_config_refuses_an_lm_and_flow_that_disagree_on_the_speech_vocabulary():
    with pytest.raises(ConfigError, match="4096 speech tokens but the flow reads 6561"):
        TouchTTSConfig(lm=LMConfig(num_speech_tokens=4096), flow=FlowConfig(num_speech_tokens=6561))


def test_training_loss_covers_lm_and_flow_batches_and_gives_gradients():
    model = tiny_tts()
    codes = torch.randint(0, N_CODES, (2, 10), generator=torch.Generator().manual_seed(0))
    code_lengths = torch.tensor([10, 6])
    lm_batch = model.lm_batch(["hello", "hi"], codes, code_lengths)
    mel = torch.randn(2, 80, 34) * (torch.arange(34) < torch.tensor([[34], [20]]))[:, None, :]
    flow_batch = dict(mel=mel, mel_lengths=torch.tensor([34, 20]), codes=codes, code_lengths=code_lengths,
                      speaker_ids=torch.tensor([0, 1]))  # fmt: skip
    trainable = TouchTTS(model.config, vocoder=FrameVocoder())
    trainable.load_state_dict(model.state_dict())
    trainable.train()
    loss = trainable.training_loss({"lm": lm_batch, "flow": flow_batch}, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert trainable.lm.llm.model.embed_tokens.weight.grad is not None
    assert trainable.flow.input_projector.weight.grad is not None and trainable.speaker_table.grad is not None
    with pytest.raises(InputError, match="'lm' and/or a 'flow'"):
        trainable.training_loss({})
