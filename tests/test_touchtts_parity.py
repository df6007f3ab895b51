"""TouchTTS against upstream's own outputs (../shared/parity/touchtts, see its README and each folder's).

Each fixture folder says what it holds in config.json (``folder``: lm, flow, masks, lr, mel); a test
runs on every folder of its kind, so a second fixture set with other sizes, seeds, vocabularies and
lengths runs through the same tests. Only the io keys config.json's ``io_tensors`` describes are read
(``parity_fixture``); sizes come from config.json and tensor shapes, tolerances from its ``tolerances``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from audio.touchtts import masks as M
from tests.helpers import parity_fixture, parity_params

FAMILY = "touchtts"


def _info(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _kind(folder: Path) -> str:
    return _info(folder).get("folder", folder.name)


def fixtures(kind: str) -> list:
    return parity_params(FAMILY, where=lambda folder: _kind(folder) == kind)


# ---- masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_subsequent_chunk_masks_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    cases, io = fixture.config["cases"], fixture.io
    keys = [k for k in io if k.startswith("subsequent_chunk_mask")]
    assert keys
    for key in keys:
        case = cases[key]
        ours = M.subsequent_chunk_mask(case["size"], case["chunk_size"], case["num_left_chunks"])
        assert torch.equal(ours, io[key]), key


@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_padding_and_full_context_masks_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    io = fixture.io
    lengths = io["lengths"]
    assert torch.equal(M.make_pad_mask(lengths), io["make_pad_mask"])
    assert torch.equal(M.make_pad_mask(lengths, io["make_pad_mask_maxlen"].shape[-1]), io["make_pad_mask_maxlen"])
    assert torch.equal(M.non_causal_mask(lengths), io["non_causal_mask"])


@pytest.mark.parametrize("fixture_dir", fixtures("masks"))
def test_parity_touchtts_optional_chunk_masks_and_their_draws_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    cases, io = fixture.config["cases"], fixture.io
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
    fixture = parity_fixture(fixture_dir, FAMILY)
    io = fixture.io
    keys = [k for k in io if k.startswith("mask_to_bias_")]
    assert keys
    for key in keys:
        source = "aocm_" + key[len("mask_to_bias_") :]
        ours = M.mask_to_bias(io[source], io[key].dtype)
        assert torch.equal(ours, io[key]), key


# ---- LM -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _lm(folder: Path):
    from audio.touchtts.convert import upstream_fixture_lm

    return upstream_fixture_lm(folder)


def _layout(lm, item: dict, inference: bool = False) -> dict:
    """One fixture item (txt, n_codes and optional spk / ins / syn_txt) through our layout."""
    if inference:
        return lm.layout(
            item["syn_txt"], item["n_codes"], item.get("spk", ""), item.get("ins", ""), item["txt"], inference=True
        )
    return lm.layout(item["txt"], item["n_codes"], item.get("spk", ""), item.get("ins", ""))


def _codes(padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixture codes right-padded with -1 -> (codes padded with 0, lengths)."""
    return padded.clamp(min=0), (padded >= 0).sum(dim=1)


def _target_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[:, j + 1]) at position j, 0 where the label is ignored: (B, L - 1)."""
    targets = labels[:, 1:]
    logprob = logits[:, :-1].float().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return logprob * (targets != -100)


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_training_layout_matches_upstream_before_and_after_speech_ids(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io, lm = fixture.config, fixture.io, _lm(folder)
    batch = lm.collate([_layout(lm, item) for item in info["inputs"]["train_items"]])
    assert torch.equal(batch["input_ids"], io["train_batch_input_ids"])
    assert torch.equal(batch["labels"], io["train_batch_labels"])
    assert torch.equal(batch["attention_mask"], io["train_batch_attention_mask"])
    assert torch.equal(batch["audio_offsets"], io["train_batch_audio_offsets"].long())
    assert torch.equal(batch["text_lengths"], io["train_batch_text_lengths"].long())
    assert torch.equal(batch["batch_idx"], io["train_batch_batch_idx"].long())
    codes, lengths = _codes(io["train_speech_codes"])
    assert torch.equal(lengths, io["train_speech_code_lengths"])
    ids, labels = lm.fill_speech(
        batch["input_ids"], batch["labels"], batch["audio_offsets"], batch["batch_idx"], codes, lengths
    )
    assert torch.equal(ids, io["train_input_ids_reorg"])
    assert torch.equal(labels, io["train_labels_reorg"])
    assert torch.equal(lm.llm.get_input_embeddings()(ids), io["train_inputs_embeds"])


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_forward_logits_and_loss_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    tol, io, lm = fixture.config["tolerances"], fixture.io, _lm(folder)
    ids, labels, mask = io["train_input_ids_reorg"], io["train_labels_reorg"], io["train_batch_attention_mask"]
    with torch.no_grad():
        hidden = lm.llm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        out = lm(ids, mask, labels)
    torch.testing.assert_close(hidden[mask], io["train_last_hidden"][mask], **tol["train_last_hidden"])
    logits = tol["train_logits"]
    torch.testing.assert_close(out.logits[mask], io["train_logits"][mask], atol=logits["atol"], rtol=logits["rtol"])
    torch.testing.assert_close(out.loss.reshape(1), io["train_loss"], atol=tol["train_loss"]["atol"], rtol=0)
    torch.testing.assert_close(
        _target_logprob(out.logits, labels), io["train_target_logprob"], atol=tol["target_logprob"]["atol"], rtol=0
    )


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_pack_layout_and_per_sequence_attention_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io, lm = fixture.config, fixture.io, _lm(folder)
    inputs = info["inputs"]
    pack = lm.pack([_layout(lm, item) for item in inputs["pack_items"]], inputs["pack_size"])
    for key in ("input_ids", "labels", "position_ids", "audio_offsets", "batch_idx", "text_lengths"):
        assert torch.equal(pack[key], io[f"pack_{key}"].long()), key
    codes, lengths = _codes(io["pack_speech_codes"])
    ids, labels = lm.fill_speech(
        pack["input_ids"], pack["labels"], pack["audio_offsets"], pack["batch_idx"], codes, lengths
    )
    assert torch.equal(ids, io["pack_input_ids_reorg"].long())
    assert torch.equal(labels, io["pack_labels_reorg"])
    with torch.no_grad():
        logits = lm(ids, position_ids=pack["position_ids"]).logits
    atol = info["tolerances"]["target_logprob"]["atol"]
    torch.testing.assert_close(_target_logprob(logits, labels), io["pack_target_logprob_varlen"], atol=atol, rtol=0)


def _generation_prompt(lm, info: dict, io: dict):
    item = lm.collate([_layout(lm, info["inputs"]["gen_item"], inference=True)])
    codes = io["gen_prompt_codes"][None]
    ids, _ = lm.fill_speech(
        item["input_ids"], None, item["audio_offsets"], item["batch_idx"], codes, torch.tensor([codes.shape[1]])
    )
    return item, ids


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_inference_prompt_matches_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io, lm = fixture.config, fixture.io, _lm(folder)
    item, ids = _generation_prompt(lm, info, io)
    assert torch.equal(item["input_ids"], io["gen_batch_input_ids"])
    assert torch.equal(item["attention_mask"], io["gen_batch_attention_mask"])
    assert torch.equal(item["audio_offsets"], io["gen_batch_audio_offsets"].long())
    assert torch.equal(item["text_lengths"], io["gen_batch_text_lengths"].long())
    assert torch.equal(ids, io["gen_prompt_input_ids_reorg"])


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_seeded_sampling_draws_upstreams_ids_step_by_step(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io, lm = fixture.config, fixture.io, _lm(folder)
    atol = info["tolerances"]["train_logits"]["atol"]
    item, ids = _generation_prompt(lm, info, io)
    generator = torch.Generator().manual_seed(info["inputs"]["gen_seed"])
    lengths = torch.tensor([ids.shape[1]])
    out, n, scores = lm.generate(ids, lengths, item["text_lengths"], generators=[generator], return_scores=True)
    raw, processed = scores["raw"][0], scores["processed"][0]  # (S, V)
    first = io["gen_raw_logits_first4"]
    torch.testing.assert_close(raw[: first.shape[0]], first, atol=atol, rtol=0)
    # The per-step processed scores, teacher-forced comparison first: it localises a differing sampler.
    torch.testing.assert_close(torch.isfinite(processed).sum(-1), io["gen_proc_n_kept"])
    top_ids = io["gen_proc_top_ids"]
    stored = io["gen_proc_top_scores"]
    ours = processed.gather(1, top_ids)
    finite = torch.isfinite(stored)
    assert torch.equal(torch.isfinite(ours), finite)
    torch.testing.assert_close(ours[finite], stored[finite], atol=atol, rtol=0)
    assert torch.equal(out, io["gen_output_ids"]) and int(n) == io["gen_output_ids"].shape[1]
    torch.testing.assert_close(raw.gather(1, out[0][:, None])[:, 0], io["gen_raw_logits_sampled"], atol=atol, rtol=0)
    codes, count = lm.speech_codes(out, n)
    expected = io["gen_speech_codes"]
    assert torch.equal(codes[0, : int(count)], expected[expected >= 0])


# ---- flow -----------------------------------------------------------------------------------------
def _flow(folder: Path, **overrides):
    from audio.touchtts.convert import upstream_fixture_flow

    return upstream_fixture_flow(folder, **overrides)


def _atol(info: dict, key: str) -> float:
    return info["tolerances"][key]["atol"]


def _train_inputs(io: dict) -> dict:
    codes, lengths = io["flow_train_codes"], io["flow_train_code_lengths"]
    return dict(
        mel=io["flow_train_mel_vocoder"],
        mel_lengths=io["flow_train_mel_lengths"],
        codes=codes.clamp(min=0),  # upstream's tokenizer pads codes with 0
        code_lengths=lengths,
        speaker=io["flow_train_spk_emb"],
    )


def _train_draws(io: dict, chunk=None):
    from audio.touchtts.flow import FlowDraws

    return FlowDraws(
        io["flow_train_draw_prompt_index"],
        io["flow_train_draw_t_raw"],
        io["flow_train_draw_cfg_keep"],
        io["flow_train_draw_noise"],
        chunk=chunk,
    )


def _valid_rows(io: dict) -> torch.Tensor:
    lengths = io["flow_train_mel_lengths"]
    return torch.arange(io["flow_train_mel_vocoder"].shape[1])[None, :] < lengths[:, None]  # (B, T)


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_conditions_match_upstream(fixture_dir):
    from audio.touchtts.flow import cosine_time, time_embedding

    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    flow = _flow(folder)
    atol = _atol(info, "embed_token_encoder_interp")
    inputs = _train_inputs(io)
    with torch.no_grad():
        embed = flow.llm.model.embed_tokens(inputs["codes"])
        features = flow.code_features(inputs["codes"], inputs["code_lengths"])
        torch.testing.assert_close(embed, io["flow_train_embed"], atol=atol, rtol=0)
        torch.testing.assert_close(flow.token_encoder(embed), io["flow_train_token_encoder_out"], atol=atol, rtol=0)
        torch.testing.assert_close(features, io["flow_train_interp_in"], atol=atol, rtol=0)
        hidden = flow.config.trunk.hidden_size
        torch.testing.assert_close(
            time_embedding(io["flow_time_probe_t"], hidden), io["flow_time_probe_emb"], atol=atol, rtol=0
        )
        torch.testing.assert_close(
            flow.time_condition(io["flow_time_probe_t"]), io["flow_time_probe_encoded"], atol=atol, rtol=0
        )
        t = cosine_time(io["flow_train_draw_t_raw"])
        torch.testing.assert_close(time_embedding(t, hidden), io["flow_train_time_emb"], atol=atol, rtol=0)
        torch.testing.assert_close(flow.time_condition(t), io["flow_train_time_encoder_out"], atol=atol, rtol=0)
        torch.testing.assert_close(
            torch.nn.functional.normalize(inputs["speaker"], dim=1), io["flow_train_spk_normed"], atol=atol, rtol=0
        )
        torch.testing.assert_close(
            flow.speaker_condition(inputs["speaker"], 2), io["flow_train_spk_cond"], atol=atol, rtol=0
        )
    assert torch.equal(t, io["flow_train_draw_t"])
    assert torch.equal(
        io["flow_train_draw_cfg_uniform"] > flow.config.training_cfg_rate, io["flow_train_draw_cfg_keep"]
    )


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_token_condition_is_per_item_by_default_and_upstreams_batched_on_request(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    atol = _atol(info, "embed_token_encoder_interp")
    inputs = _train_inputs(io)
    for option, key in (("per_item", "flow_train_token_cond_per_item_ref"), ("batched", "flow_train_token_cond")):
        flow = _flow(folder, token_interpolation=option)
        with torch.no_grad():
            features = flow.code_features(inputs["codes"], inputs["code_lengths"])
            ours = flow.token_condition(features, inputs["code_lengths"], inputs["mel_lengths"])
        torch.testing.assert_close(ours, io[key], atol=atol, rtol=0, msg=option)
    # The probe: plain interpolation of a zero-padded batch to each target length (downsampling included).
    flow = _flow(folder, token_interpolation="batched")
    x, ylens = io["flow_interp_probe_x"], io["flow_interp_probe_ylens"]
    ours = flow.token_condition(x, torch.full_like(ylens, x.shape[1]), ylens)
    torch.testing.assert_close(ours, io["flow_interp_probe_out"], atol=atol, rtol=0)


def _variants(info: dict, io: dict) -> dict:
    """Attention variants stored by the fixture: name -> (FlowConfig overrides, fixed chunk draw or None)."""
    variants = {"full": ({}, None)}
    for name, spec in info["observed"]["variants"].items():
        chunk = tuple(io["flow_train_dynamic_draw"].tolist()) if spec.get("dynamic_draw") is not None else None
        variants[name] = (spec["config"], chunk)
    return variants


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_training_forward_and_loss_match_upstream_for_every_mask(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    valid = _valid_rows(io)
    for name, (overrides, chunk) in _variants(info, io).items():
        flow = _flow(folder, token_interpolation="batched", **overrides)
        with torch.no_grad():
            loss, parts = flow.training_loss(**_train_inputs(io), draws=_train_draws(io, chunk), return_parts=True)
            trunk = flow.llm.model(inputs_embeds=flow.input_projector(parts["streams"]), attention_mask=parts["bias"])
        mask = (parts["bias"] == 0).expand(-1, -1, valid.shape[1], -1)[:, 0]  # (B, T, T) allowed
        assert torch.equal(mask, io[f"flow_train_att_mask_{name}"]), name
        rows = valid[..., None]
        torch.testing.assert_close(
            parts["streams"], io["flow_train_cond_concat"], atol=_atol(info, "cond_concat"), rtol=0
        )
        torch.testing.assert_close(parts["target"], io["flow_train_ut"], atol=_atol(info, "cond_concat"), rtol=0)
        out = trunk.last_hidden_state * rows
        torch.testing.assert_close(
            out, io[f"flow_train_trunk_out_{name}"], atol=_atol(info, "trunk_out"), rtol=0, msg=name
        )
        torch.testing.assert_close(
            parts["velocity"] * rows, io[f"flow_train_vt_{name}"], atol=_atol(info, "vt"), rtol=0, msg=name
        )
        torch.testing.assert_close(
            loss.reshape(1), io[f"flow_train_loss_{name}"], rtol=info["tolerances"]["loss"]["rtol"], atol=0
        )
    with torch.no_grad():
        inproj = _flow(folder, token_interpolation="batched").input_projector(io["flow_train_cond_concat"])
    torch.testing.assert_close(inproj, io["flow_train_inproj_out"], atol=_atol(info, "cond_concat"), rtol=0)


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_additive_01_mask_reproduces_upstreams_unmasked_attention(fixture_dir):
    """A 0/1 mask added to scores lifts every allowed score by 1: harmless without padding, no mask otherwise."""
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    valid = _valid_rows(io)
    full_rows = valid.all(dim=1)  # items without padding: a key-padding mask has nothing to mask there
    atol = _atol(info, "vt")
    for name, (overrides, chunk) in _variants(info, io).items():
        flow = _flow(folder, token_interpolation="batched", attention_mask_form="additive_01", **overrides)
        with torch.no_grad():
            _, parts = flow.training_loss(**_train_inputs(io), draws=_train_draws(io, chunk), return_parts=True)
        ours, stored = parts["velocity"] * valid[..., None], io[f"flow_train_vt_{name}"]
        allowed = io[f"flow_train_att_mask_{name}"]  # (B, T, T)
        masks_something = (~allowed & valid[:, :, None] & valid[:, None, :]).any(dim=(1, 2)) | ~full_rows
        if name == "full":
            torch.testing.assert_close(ours[full_rows], stored[full_rows], atol=atol, rtol=0)
        if masks_something.any():
            gap = (ours[masks_something] - stored[masks_something]).abs().max()
            assert gap > 100 * atol, f"{name}: the 0/1 mask should not mask ({gap})"


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_sampler_matches_upstream_step_by_step_and_reaches_t_1(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    atol = info["tolerances"]["sampler_outputs"]["atol"]
    flow = _flow(folder)
    prompt, prompt_codes, codes = (
        io["flow_sampler_prompt_mel"],
        io["flow_sampler_prompt_codes"][None],
        io["flow_sampler_llm_codes"],
    )
    args = (codes, torch.tensor([codes.shape[1]]), io["flow_sampler_spk_emb"], prompt, torch.tensor([prompt.shape[1]]),
            prompt_codes, torch.tensor([prompt_codes.shape[1]]))  # fmt: skip
    mel, lengths, steps = flow.sample(*args, noise=io["flow_sampler_noise"], return_steps=True)
    cond = flow.prepare(*args)
    m = flow.config.mel_dim
    torch.testing.assert_close(cond["streams"][:1, :, m : 2 * m], io["flow_sampler_token_cond"], atol=atol, rtol=0)
    torch.testing.assert_close(cond["streams"][0, 0, 3 * m : 4 * m], io["flow_sampler_spk_cond"][0], atol=atol, rtol=0)
    assert torch.equal(flow.time_grid(len(io["flow_sampler_t_span"]) - 1), io["flow_sampler_t_span"])
    assert torch.equal(steps["t"], io["flow_sampler_t_used"]) and torch.equal(steps["dt"], io["flow_sampler_dt_used"])
    assert float(steps["t"][-1] + steps["dt"][-1]) == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(flow.time_condition(steps["t"]), io["flow_sampler_t_cond"], atol=atol, rtol=0)
    torch.testing.assert_close(steps["v_cond"][:, 0], io["flow_sampler_vt_cond"], atol=atol, rtol=0)
    torch.testing.assert_close(steps["v_uncond"][:, 0], io["flow_sampler_vt_uncond"], atol=atol, rtol=0)
    torch.testing.assert_close(steps["x"][:, 0], io["flow_sampler_pt_steps"], atol=atol, rtol=0)
    assert int(lengths[0]) == io["flow_sampler_output"].shape[1]
    torch.testing.assert_close(mel, io["flow_sampler_output"], atol=atol, rtol=0)
    # The noise upstream drew right after torch.manual_seed(noise_seed) comes from a generator seeded alike
    # (to float rounding: the vectorised and scalar normal samplers round differently).
    generator = torch.Generator().manual_seed(info["inputs"]["sampler"]["noise_seed"])
    torch.testing.assert_close(flow.sample(*args, generators=[generator])[0], mel, atol=atol, rtol=0)


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_truncated_and_chunked_samplers_match_upstream(fixture_dir):
    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    atol = info["tolerances"]["sampler_outputs"]["atol"]
    prompt, prompt_codes, codes = (
        io["flow_sampler_prompt_mel"],
        io["flow_sampler_prompt_codes"][None],
        io["flow_sampler_llm_codes"],
    )
    args = (codes, torch.tensor([codes.shape[1]]), io["flow_sampler_spk_emb"], prompt, torch.tensor([prompt.shape[1]]),
            prompt_codes, torch.tensor([prompt_codes.shape[1]]))  # fmt: skip
    noise = io["flow_sampler_noise"]
    truncated = _flow(folder, euler_loop="truncated")
    schedule = truncated.euler_schedule(truncated.config.n_timesteps)
    assert float(schedule[-1][0] + schedule[-1][1]) == pytest.approx(
        info["inputs"]["sampler"]["truncated_final_t"], abs=1e-6
    )
    torch.testing.assert_close(
        truncated.sample(*args, noise=noise)[0], io["flow_sampler_output_truncated_loop"], atol=atol, rtol=0
    )
    chunked = _flow(folder).sample(*args, noise=noise, chunk=(info["inputs"]["static_chunk"], -1))[0]
    torch.testing.assert_close(chunked, io["flow_sampler_output_static_chunk"], atol=atol, rtol=0)


@pytest.mark.parametrize("fixture_dir", fixtures("flow"))
def test_parity_touchtts_flow_stream_reproduces_upstreams_offline_and_chunked_samplers(fixture_dir):
    from audio.touchtts.flow import stream_mel

    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    atol = info["tolerances"]["sampler_outputs"]["atol"]
    flow = _flow(folder)
    codes = io["flow_sampler_llm_codes"][0]
    pieces = [codes[: len(codes) // 3], codes[len(codes) // 3 : len(codes) // 2], codes[len(codes) // 2 :]]
    total = io["flow_sampler_noise"].shape[1]
    for chunk, key in (
        (total, "flow_sampler_output"),
        (info["inputs"]["static_chunk"], "flow_sampler_output_static_chunk"),
    ):
        prompt = dict(prompt_mel=io["flow_sampler_prompt_mel"], prompt_codes=io["flow_sampler_prompt_codes"])
        stream = flow.stream(
            chunk, -1, io["flow_sampler_spk_emb"], **prompt, total_codes=len(codes), noise=io["flow_sampler_noise"]
        )
        mel = torch.cat(list(stream_mel(stream, pieces)))
        torch.testing.assert_close(mel, io[key][0], atol=atol, rtol=0, msg=key)


# ---- legacy length regulator ------------------------------------------------------------------------
@pytest.mark.parametrize("fixture_dir", fixtures("lr"))
def test_parity_touchtts_legacy_interpolate_regulator_matches_upstream(fixture_dir):
    from audio.touchtts.convert import upstream_fixture_regulator

    fixture = parity_fixture(fixture_dir, FAMILY)
    folder = fixture.folder
    info, io = fixture.config, fixture.io
    atol = info["tolerances"]["outputs"]["atol"]
    x, x_lengths, ylens = io["x"], io["x_lengths"], io["ylens"]
    regulator = upstream_fixture_regulator(folder)
    with torch.no_grad():
        torch.testing.assert_close(regulator(x, x_lengths, ylens, per_item=False), io["out_batched"], atol=atol, rtol=0)
        torch.testing.assert_close(regulator(x, x_lengths, ylens, per_item=True), io["out_per_item"], atol=atol, rtol=0)
        plain = upstream_fixture_regulator(folder, only_interpolate=True)
        torch.testing.assert_close(
            plain(x, x_lengths, ylens, per_item=False), io["out_only_interpolate"], atol=atol, rtol=0
        )
