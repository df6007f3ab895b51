"""Text tokenizers: round trips on hard text, batching, special tokens, files, and bad input.

Which tokenizers are lossless (decode(encode(s)) == s), and which this file holds to it:
- byte-utf8, bpe-tiny, unigram-tiny, tiktoken-tiny: every string (byte-level, nothing normalised).
- spm-tiny: every string without U+2581, sentencepiece's space mark, which decodes as a space; its
  config says lossless=false, and a test pins down exactly that one loss.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import zoo
from zoo.api import Tokens
from zoo.errors import ConfigError, CorruptFileError, InputError, ModelFileNotFoundError
from zoo.text import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    TiktokenTokenizer,
    byte_level_chars,
    load_corpus,
)

BUNDLED = ["byte-utf8", "bpe-tiny", "unigram-tiny", "spm-tiny", "tiktoken-tiny"]
LOSSLESS = ["byte-utf8", "bpe-tiny", "unigram-tiny", "tiktoken-tiny"]
SPACE_MARK = "\u2581"

HARD_TEXT = {
    "emoji": "I ❤️ tokenizers 😀🎉",
    "zwj_family": "👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 🐈‍⬛",
    "flags": "🇩🇪🇯🇵🇺🇳 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "skin_tones_and_keycaps": "👍🏿 1️⃣ #️⃣",
    "combining_marks": "e\u0301 n\u0303 a\u0308\u0323 Z\u0351\u0352\u0353\u0354 ḱ",
    "decomposed_vs_precomposed": "\u00e9 e\u0301 \u212b A\u030a",
    "cjk": "漢字かなカタカナ한국어 中文：你好，世界！",
    "arabic_rtl": "مرحبًا بالعالم، كيف حالك؟",
    "hebrew_with_points": "שָׁלוֹם עוֹלָם",
    "bidi_controls": "abc \u202eRTL override\u202c \u200fmark\u200e \u2067iso\u2069",
    "devanagari": "नमस्ते दुनिया क्षत्रिय",
    "control_characters": "a\x00b\x01c\x07d\x1b[31mred\x1b[0m\x7f\x85end",
    "zero_width": "zero\u200bwidth\u200cjoin\u200dnbsp\u00a0bom\ufeff",
    "very_long_word": "Donaudampfschifffahrtsgesellschaft" * 300,
    "long_run_of_one_char": "a" * 10_000,
    "whitespace_runs": "  lead\t\ttabs\n\n\nlines   \r\n\u3000ideographic\u2003em  trail   ",
    "only_whitespace": " \t\n \u00a0 ",
    "specials_as_text": "<|endoftext|> <pad> <s> </s> <unk> <0x41>",
    "private_use_and_astral": "\ue000\U000f0000 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓂀",
    "empty": "",
}


@pytest.fixture(scope="module")
def models():
    return {name: zoo.load(name) for name in BUNDLED}


def random_unicode(rng: random.Random, length: int) -> str:
    """Random code points from every plane, weighted toward scripts, marks, controls and emoji."""
    pools = [
        (0x00, 0x7F), (0x80, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
        (0x2000, 0x206F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF),
        (0xFE00, 0xFE0F), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF),
    ]  # fmt: skip
    chars = []
    for _ in range(length):
        lo, hi = rng.choice(pools)
        cp = rng.randint(lo, hi)
        chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")  # lone surrogates are not text
    return "".join(chars)


# ---- the registry -----------------------------------------------------------------------------------
def test_every_bundled_text_tokenizer_is_listed_as_text():
    assert set(BUNDLED) <= set(zoo.list_models(modality="text"))


@pytest.mark.parametrize("arch", ["byte-tokenizer", "hf-tokenizer", "sentencepiece", "tiktoken"])
def test_each_text_arch_resolves_to_a_class_declaring_that_arch(arch):
    assert zoo.get_arch(arch).arch == arch


@pytest.mark.parametrize("name", BUNDLED)
def test_the_config_promise_of_losslessness_matches_this_files_list(models, name):
    assert getattr(models[name].config, "lossless", True) == (name in LOSSLESS)


# ---- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(HARD_TEXT))
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_tokenizers_round_trip_hard_text_exactly(models, name, case):
    text = HARD_TEXT[case]
    assert models[name].decode(models[name].encode(text)) == [text]


@pytest.mark.parametrize("case", sorted(HARD_TEXT))
def test_sentencepiece_round_trips_hard_text_without_its_space_mark_exactly(models, case):
    text = HARD_TEXT[case]
    assert SPACE_MARK not in text
    assert models["spm-tiny"].decode(models["spm-tiny"].encode(text)) == [text]


def test_sentencepiece_turns_its_space_mark_into_a_space_and_changes_nothing_else(models):
    text = f"a{SPACE_MARK}b {SPACE_MARK}"
    assert models["spm-tiny"].decode(models["spm-tiny"].encode(text)) == [text.replace(SPACE_MARK, " ")]


def test_byte_tokenizer_is_lossless_for_random_unicode_strings():
    rng = random.Random(0)
    model = ByteTokenizer()
    for _ in range(300):
        texts = [random_unicode(rng, rng.randint(0, 40)) for _ in range(rng.randint(1, 4))]
        assert model.decode(model.encode(texts)) == texts


@pytest.mark.parametrize("name", LOSSLESS[1:] + ["spm-tiny"])
def test_trained_tokenizers_are_lossless_for_random_unicode_strings_without_the_space_mark(models, name):
    rng = random.Random(1)
    model = models[name]
    for _ in range(40):
        texts = [random_unicode(rng, rng.randint(0, 60)).replace(SPACE_MARK, "_") for _ in range(3)]
        assert model.decode(model.encode(texts)) == texts


@pytest.mark.parametrize("name", BUNDLED)
def test_held_out_corpus_round_trips_in_one_padded_batch(models, name):
    texts = [s for sentences in load_corpus("held_out").values() for s in sentences]
    assert models[name].decode(models[name].encode(texts)) == texts


def test_tiktoken_tiny_gives_the_same_ids_as_the_bpe_it_was_converted_from(models):
    texts = [s for sentences in load_corpus("all").values() for s in sentences]
    bpe, tik = models["bpe-tiny"].encode(texts), models["tiktoken-tiny"].encode(texts)
    assert torch.equal(bpe.ids, tik.ids) and torch.equal(bpe.mask, tik.mask)


def test_trained_tokenizers_compress_the_held_out_corpus_better_than_bytes(models):
    texts = [s for sentences in load_corpus("held_out").values() for s in sentences]
    n_bytes = int(models["byte-utf8"].encode(texts).mask.sum())
    for name in BUNDLED[1:]:
        assert int(models[name].encode(texts).mask.sum()) < 0.75 * n_bytes, name


# ---- batches, padding and special tokens ------------------------------------------------------------
@pytest.mark.parametrize("name", BUNDLED)
def test_a_batch_is_right_padded_with_the_pad_id_and_masked(models, name):
    model = models[name]
    tokens = model.encode(["a much longer sentence than the other", "", "hi"])
    assert tokens.ids.dtype == torch.int64 and tokens.mask.dtype == torch.bool
    lengths = tokens.lengths.tolist()
    assert lengths[1] == 0 and lengths[0] == tokens.num_positions > lengths[2] > 0
    assert (tokens.ids[~tokens.mask] == model.pad_id).all()
    assert tokens.mask[2, : lengths[2]].all() and not tokens.mask[2, lengths[2] :].any()


@pytest.mark.parametrize("name", BUNDLED)
def test_encoding_in_a_batch_gives_each_string_the_ids_it_gets_alone(models, name):
    model = models[name]
    texts = ["Grüße aus Köln", "東京", "👩‍👩‍👧"]
    batch = model.encode(texts)
    for i, text in enumerate(texts):
        alone = model.encode(text)
        assert batch.ids[i][batch.mask[i]].tolist() == alone.ids[0][alone.mask[0]].tolist()


@pytest.mark.parametrize("name", BUNDLED)
def test_a_single_string_encodes_as_a_batch_of_one(models, name):
    tokens = models[name].encode("hello")
    assert tokens.batch_size == 1 and tokens.meta["vocab_size"] == models[name].vocab_size


@pytest.mark.parametrize("name", ["bpe-tiny", "unigram-tiny", "tiktoken-tiny"])
def test_special_token_text_in_the_input_is_ordinary_text_not_a_special_id(models, name):
    model = models[name]
    specials = {model.pad_id, *getattr(model, "special_ids", {}).values(), *getattr(model, "special_id_set", ())}
    ids = model.encode("<|endoftext|><pad><s></s><unk>").ids[0].tolist()
    assert not specials & set(ids)


def test_hf_tokenizer_adds_bos_and_eos_only_when_configured_and_decode_drops_them(models):
    plain = models["unigram-tiny"]
    framed = HFTokenizer(
        type(plain.config)(pad_token="<pad>", bos_token="<s>", eos_token="</s>", add_bos=True, add_eos=True),
        plain.tokenizer_bytes,
    )
    ids = framed.encode("hello").ids[0].tolist()
    assert ids[0] == plain.backend.token_to_id("<s>") and ids[-1] == plain.backend.token_to_id("</s>")
    assert ids[1:-1] == plain.encode("hello").ids[0].tolist()
    assert framed.decode(framed.encode("hello")) == ["hello"]


def test_tiktoken_appends_eos_when_configured_and_decode_drops_it(models):
    plain = models["tiktoken-tiny"]
    config = type(plain.config)(**{**plain.config.__dict__, "add_eos": True})
    with_eos = TiktokenTokenizer(config, plain.tokenizer_bytes)
    ids = with_eos.encode("hello").ids[0].tolist()
    assert ids[-1] == dict(config.special_tokens)["<|endoftext|>"]
    assert with_eos.decode(with_eos.encode("hello")) == ["hello"]


def test_sentencepiece_adds_its_own_bos_when_configured(models):
    plain = models["spm-tiny"]
    with_bos = SentencePieceTokenizer(type(plain.config)(add_bos=True), plain.tokenizer_bytes)
    assert with_bos.encode("hi").ids[0, 0].item() == plain.backend.bos_id()
    assert with_bos.decode(with_bos.encode("hi")) == ["hi"]


def test_asking_for_eos_without_naming_the_eos_token_is_a_config_error():
    with pytest.raises(ConfigError, match="eos_token"):
        HFTokenizer.config_class(add_eos=True)


# ---- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUNDLED)
def test_an_empty_batch_is_refused(models, name):
    with pytest.raises(InputError, match="empty batch"):
        models[name].encode([])


@pytest.mark.parametrize("name", BUNDLED)
def test_non_utf8_bytes_are_refused_naming_the_item_and_position(models, name):
    with pytest.raises(InputError, match=r"item 1 is bytes that are not valid UTF-8 .*at 2"):
        models[name].encode(["fine", b"ok\xff\xfe"])


def test_valid_utf8_bytes_are_decoded_as_text(models):
    assert models["bpe-tiny"].decode(models["bpe-tiny"].encode("Grüße".encode())) == ["Grüße"]


def test_a_lone_surrogate_is_refused_as_not_encodable():
    with pytest.raises(InputError, match="lone surrogate U\\+DC80"):
        ByteTokenizer().encode("a\udc80b")


def test_a_non_string_item_is_refused_naming_its_type():
    with pytest.raises(InputError, match="item 0 must be str, got int"):
        ByteTokenizer().encode([3])


@pytest.mark.parametrize("name", BUNDLED)
def test_decoding_ids_outside_the_vocabulary_is_refused(models, name):
    model = models[name]
    bad = Tokens(ids=torch.tensor([[1, model.vocab_size]]))
    with pytest.raises(InputError, match="token ids"):
        model.decode(bad)


def test_decoding_something_other_than_tokens_is_refused():
    with pytest.raises(InputError, match="zoo.Tokens"):
        ByteTokenizer().decode(torch.zeros(1, 3, dtype=torch.int64))


def test_decoding_embedding_tokens_is_refused():
    with pytest.raises(InputError, match="ids"):
        ByteTokenizer().decode(Tokens(embeddings=torch.zeros(1, 2, 3)))


def test_masked_out_positions_are_ignored_by_decode():
    tokens = Tokens(ids=torch.tensor([[104, 105, 999]]), mask=torch.tensor([[True, True, False]]))
    assert ByteTokenizer().decode(tokens) == ["hi"]


# ---- files: save, load, corrupt -----------------------------------------------------------------
@pytest.mark.parametrize("name", BUNDLED[1:])
def test_save_then_load_gives_the_same_ids_and_keeps_the_tokenizer_file(models, name, tmp_path):
    model = models[name]
    model.save_pretrained(tmp_path / name)
    assert (tmp_path / name / model.tokenizer_file).read_bytes() == model.tokenizer_bytes
    assert model.tokenizer_file in type(model).hub_files
    again = zoo.load(tmp_path / name)
    texts = list(HARD_TEXT.values())
    assert torch.equal(again.encode(texts).ids, model.encode(texts).ids)


@pytest.mark.parametrize("name", BUNDLED[1:])
def test_a_folder_without_its_tokenizer_file_names_the_missing_file(models, name, tmp_path):
    models[name].save_pretrained(tmp_path / name)
    (tmp_path / name / models[name].tokenizer_file).unlink()
    with pytest.raises(ModelFileNotFoundError, match=models[name].tokenizer_file):
        zoo.load(tmp_path / name)


@pytest.mark.parametrize("name", BUNDLED[1:])
def test_a_corrupt_tokenizer_file_is_reported_as_corrupt(models, name, tmp_path):
    models[name].save_pretrained(tmp_path / name)
    (tmp_path / name / models[name].tokenizer_file).write_bytes(b"\x00not a tokenizer\x00 1 2 3")
    with pytest.raises(CorruptFileError, match=models[name].tokenizer_file):
        zoo.load(tmp_path / name)


def test_a_config_naming_a_pad_token_the_vocabulary_lacks_is_a_config_error(models, tmp_path):
    models["bpe-tiny"].save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "pad_token": "<nope>"}))
    with pytest.raises(ConfigError, match="<nope>"):
        zoo.load(tmp_path / "m")


def test_an_existing_tokenizer_json_loads_through_from_file(models, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(models["bpe-tiny"].tokenizer_bytes)
    model = HFTokenizer.from_file(path, lossless=True)
    assert model.encode("hello").ids.tolist() == models["bpe-tiny"].encode("hello").ids.tolist()


def test_a_file_tokenizer_cannot_be_built_from_config_json_alone():
    with pytest.raises(ConfigError, match="tokenizer.model"):
        SentencePieceTokenizer.from_config_dict({"arch": "sentencepiece"})


# ---- training from an iterator --------------------------------------------------------------------
TRAIN_TEXTS = [s for sentences in load_corpus("train").values() for s in sentences]


def test_bpe_trains_from_an_iterator_into_a_lossless_tokenizer_of_the_asked_size():
    model = HFTokenizer.train_bpe(iter(TRAIN_TEXTS), 400)
    assert model.vocab_size == 400
    assert model.decode(model.encode(list(HARD_TEXT.values()))) == list(HARD_TEXT.values())


def test_unigram_trains_from_an_iterator_into_a_lossless_tokenizer():
    model = HFTokenizer.train_unigram(iter(TRAIN_TEXTS), 400)
    assert 256 < model.vocab_size <= 400
    assert model.decode(model.encode(list(HARD_TEXT.values()))) == list(HARD_TEXT.values())


def test_sentencepiece_bpe_trains_from_an_iterator_with_byte_fallback():
    model = SentencePieceTokenizer.train_from_iterator(
        iter(TRAIN_TEXTS), 1200, model_type="bpe", character_coverage=0.98
    )
    texts = list(HARD_TEXT.values())
    assert model.decode(model.encode(texts)) == texts


def test_sentencepiece_coverage_outside_its_bounds_is_a_config_error():
    with pytest.raises(ConfigError, match="character_coverage"):
        SentencePieceTokenizer.train_from_iterator(iter(TRAIN_TEXTS), 1200, character_coverage=0.5)


def test_byte_level_table_is_the_alphabet_hf_tokenizers_uses():
    from tokenizers import pre_tokenizers

    table = byte_level_chars()
    assert sorted(table) == list(range(256))
    assert sorted(table.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())


def test_a_local_tiktoken_file_loads_through_from_file_with_its_special_tokens(models, tmp_path):
    path = tmp_path / "tiny.tiktoken"
    path.write_bytes(models["tiktoken-tiny"].tokenizer_bytes)
    model = TiktokenTokenizer.from_file(path, special_tokens=(("<|endoftext|>", 0),), eos_token="<|endoftext|>")
    assert model.encode("hello").ids.tolist() == models["bpe-tiny"].encode("hello").ids.tolist()


def test_a_tiktoken_file_missing_single_bytes_is_corrupt(models, tmp_path):
    path = tmp_path / "short.tiktoken"
    path.write_bytes(b"\n".join(models["tiktoken-tiny"].tokenizer_bytes.splitlines()[10:]))
    with pytest.raises(CorruptFileError, match="single bytes have no rank"):
        TiktokenTokenizer.from_file(path)


@pytest.mark.parametrize("name", BUNDLED[1:])
def test_a_hub_load_fetches_the_tokenizer_file_beside_config_and_weights(models, name, tmp_path, hub):
    hub.upload_folder(f"org/{name}", models[name].save_pretrained(tmp_path / "repo"))
    model = zoo.load(f"hf-hub:org/{name}@main")
    assert hub.downloads(models[name].tokenizer_file)
    assert model.encode("hello").ids.tolist() == models[name].encode("hello").ids.tolist()
