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
    folder = require_fixture(fixture_dir, FAMILY)
    info, io, lm = _info(folder), _io(folder), _lm(folder)
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
    folder = require_fixture(fixture_dir, FAMILY)
    tol, io, lm = _info(folder)["tolerances"], _io(folder), _lm(folder)
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
    folder = require_fixture(fixture_dir, FAMILY)
    info, io, lm = _info(folder), _io(folder), _lm(folder)
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
    folder = require_fixture(fixture_dir, FAMILY)
    info, io, lm = _info(folder), _io(folder), _lm(folder)
    item, ids = _generation_prompt(lm, info, io)
    assert torch.equal(item["input_ids"], io["gen_batch_input_ids"])
    assert torch.equal(item["attention_mask"], io["gen_batch_attention_mask"])
    assert torch.equal(item["audio_offsets"], io["gen_batch_audio_offsets"].long())
    assert torch.equal(item["text_lengths"], io["gen_batch_text_lengths"].long())
    assert torch.equal(ids, io["gen_prompt_input_ids_reorg"])


@pytest.mark.parametrize("fixture_dir", fixtures("lm"))
def test_parity_touchtts_lm_seeded_sampling_draws_upstreams_ids_step_by_step(fixture_dir):
    folder = require_fixture(fixture_dir, FAMILY)
    info, io, lm = _info(folder), _io(folder), _lm(folder)
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
