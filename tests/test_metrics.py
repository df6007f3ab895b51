"""The shared metrics, stated as their invariants."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.api import Tokens
from zoo.errors import InputError
from zoo.metrics import text as txm
from zoo.metrics import tokens as tm
from zoo.text import ByteTokenizer


# ---- codebook usage and perplexity ----------------------------------------------------------------
def test_uniform_ids_have_perplexity_equal_to_codebook_size():
    ids = torch.arange(64).repeat(3).reshape(2, 96)
    assert tm.codebook_perplexity(ids, 64) == pytest.approx(64.0)


def test_a_single_repeated_id_has_perplexity_one():
    assert tm.codebook_perplexity(torch.full((4, 10), 7), 256) == pytest.approx(1.0)


def test_perplexity_of_two_codes_in_ratio_three_to_one_is_exp_entropy():
    ids = torch.tensor([[0, 0, 0, 1]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert tm.codebook_perplexity(ids, 8) == pytest.approx(math.exp(entropy))


def test_perplexity_lies_between_one_and_codebook_size_for_random_ids():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        k = int(torch.randint(1, 50, (1,), generator=gen))
        ids = torch.randint(0, k, (3, 17), generator=gen)
        assert 1.0 - 1e-9 <= tm.codebook_perplexity(ids, k) <= k + 1e-9


def test_usage_is_one_when_every_code_occurs_and_counts_distinct_codes_otherwise():
    assert tm.codebook_usage(torch.arange(16).reshape(2, 8), 16) == 1.0
    assert tm.codebook_usage(torch.tensor([[1, 1, 2, 3]]), 16) == 3 / 16


def test_masked_out_positions_do_not_count_toward_usage_or_perplexity():
    ids = torch.tensor([[0, 1, 2, 3], [0, 5, 5, 5]])
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    assert tm.codebook_usage(ids, 8, mask) == 2 / 8
    assert tm.code_counts(Tokens(ids=ids, mask=mask), 8).tolist() == [2, 1, 0, 0, 0, 0, 0, 0]


def test_ids_outside_the_codebook_are_refused_with_their_range():
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        tm.codebook_usage(torch.tensor([[0, 4]]), 4)


def test_an_all_false_mask_is_refused_as_no_valid_tokens():
    with pytest.raises(InputError, match="no valid tokens"):
        tm.codebook_perplexity(torch.zeros(2, 3, dtype=torch.int64), 4, torch.zeros(2, 3, dtype=torch.bool))


def test_float_ids_are_refused():
    with pytest.raises(InputError, match="integer"):
        tm.codebook_usage(torch.zeros(2, 3), 4)


def test_embedding_only_tokens_are_refused_by_codebook_metrics():
    with pytest.raises(InputError, match="embeddings"):
        tm.codebook_usage(Tokens(embeddings=torch.zeros(1, 2, 3)), 4)


# ---- bits per unit --------------------------------------------------------------------------------
def test_bits_per_unit_is_tokens_times_log2_codebook_over_units():
    assert tm.bits_per_unit(100, 1024, 50) == pytest.approx(100 * 10 / 50)


def test_bits_per_unit_counts_only_real_tokens_of_a_padded_batch():
    t = Tokens(ids=torch.zeros(2, 4, dtype=torch.int64), mask=torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool())
    assert tm.bits_per_byte(t, 256, 4) == pytest.approx(4 * 8 / 4)


def test_byte_tokens_of_a_256_codebook_cost_exactly_eight_bits_per_byte():
    text = "Grüße, 世界! 🙂".encode()
    assert tm.bits_per_byte(len(text), 256, len(text)) == 8.0


@pytest.mark.parametrize(
    "helper", [tm.bits_per_byte, tm.bits_per_character, tm.bits_per_pixel, tm.bits_per_second, tm.bits_per_frame,
               tm.bits_per_voxel],
)  # fmt: skip
def test_every_named_unit_helper_agrees_with_bits_per_unit(helper):
    assert helper(30, 4096, 12) == pytest.approx(tm.bits_per_unit(30, 4096, 12))


def test_a_codebook_of_one_code_costs_zero_bits():
    assert tm.bits_per_pixel(10, 1, 100) == 0.0


@pytest.mark.parametrize("units", [0, -1.0, float("nan"), float("inf")])
def test_a_non_positive_or_non_finite_input_size_is_refused_naming_the_unit(units):
    with pytest.raises(InputError, match="seconds"):
        tm.bits_per_second(10, 16, units)


def test_a_non_positive_codebook_size_is_refused():
    with pytest.raises(InputError, match="codebook_size"):
        tm.bits_per_frame(10, 0, 5)


# ---- text metrics ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, words",
    [("The cat sleeps.", 3), ("  many   spaces\there ", 3), ("— , !", 0), ("你好世界", 4), ("東京タワーへ行く", 8),
     ("हर भाषा में", 3), ("사과 2킬로그램", 2), ("", 0)],
)  # fmt: skip
def test_words_are_whitespace_runs_with_a_letter_and_each_han_or_kana_character(text, words):
    assert txm.count_words(text) == words


def test_byte_tokenizer_has_exactly_one_byte_per_token():
    assert txm.bytes_per_token(ByteTokenizer(), ["Grüße", "世界 🙂", "abc"]) == 1.0


def test_byte_tokenizer_fertility_is_bytes_per_word():
    assert txm.fertility(ByteTokenizer(), ["ab cd", "éé"]) == pytest.approx((5 + 4) / 3)


def test_characters_per_token_of_the_byte_tokenizer_is_characters_over_bytes():
    assert txm.chars_per_token(ByteTokenizer(), "ü!") == pytest.approx(2 / 3)


def test_reference_language_has_premium_one_and_others_scale_with_their_token_counts():
    parallel = {"en": ["cat", "dog"], "de": ["Katze", "Hund"], "ru": ["кошка", "собака"]}
    prem = txm.premiums(ByteTokenizer(), parallel, reference="en")
    assert prem["en"] == 1.0
    assert prem["de"] == pytest.approx(9 / 6) and prem["ru"] == pytest.approx(22 / 6)


def test_parity_spread_is_one_when_every_language_costs_the_same():
    report = txm.parity_report(ByteTokenizer(), {"en": ["abc"], "fr": ["def"]})
    assert report["spread"] == 1.0 and report["max_premium"] == 1.0


def test_parity_report_names_the_worst_served_language():
    report = txm.parity_report(ByteTokenizer(), {"en": ["hi"], "el": ["γεια"], "de": ["hallo"]})
    assert report["worst_language"] == "el" and report["spread"] == pytest.approx(8 / 2)


def test_parallel_texts_of_unequal_length_are_refused():
    with pytest.raises(InputError, match="same number of sentences"):
        txm.premiums(ByteTokenizer(), {"en": ["a", "b"], "de": ["a"]})


def test_fertility_of_texts_without_words_is_refused():
    with pytest.raises(InputError, match="words"):
        txm.fertility(ByteTokenizer(), ["!!! ..."])


def test_language_report_gives_every_figure_per_language():
    report = txm.language_report(ByteTokenizer(), {"en": ["a b"], "zh": ["你好"]})
    assert report["zh"] == {
        "tokens": 6, "words": 2, "bytes": 6, "characters": 2, "fertility": 3.0, "bytes_per_token": 1.0,
        "chars_per_token": pytest.approx(1 / 3),
    }  # fmt: skip


@pytest.mark.parametrize(
    "a, b, distance",
    [("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("a▁b", "a b", 1), ("🙂", "🙃", 1)],
)
def test_edit_distance_counts_insertions_deletions_and_substitutions_of_code_points(a, b, distance):
    assert txm.edit_distance(a, b) == distance == txm.edit_distance(b, a)


def test_character_error_rate_is_zero_for_an_exact_round_trip_and_sums_over_the_batch():
    assert txm.character_error_rate(["héllo", ""], ["héllo", ""]) == 0.0
    assert txm.character_error_rate(["abcd", "ef"], ["abXd", "e"]) == pytest.approx(2 / 6)


def test_character_error_rate_refuses_batches_of_different_sizes():
    with pytest.raises(InputError, match="2 references but 1 hypotheses"):
        txm.character_error_rate(["a", "b"], ["a"])
