"""Train the bundled tiny text tokenizers on zoo/text/corpus.json and write their hub_cards/ folders.

    python -m zoo.text.train_tiny [--out hub_cards]

Trains, on the corpus' train split (20 parallel sentences in each of 12 languages + 8 emoji lines):
- bpe-tiny: byte-level BPE (HF tokenizers), 1024 ids, lossless;
- unigram-tiny: byte-level Unigram LM (HF tokenizers), up to 1024 ids, lossless;
- spm-tiny: sentencepiece Unigram with byte fallback, up to 1024 ids (256 of them byte pieces);
- tiktoken-tiny: bpe-tiny's ranks written as a .tiktoken file, with the same split regex;
and rewrites byte-utf8's card. Each card's figures (fertility, bytes per token, premium per language,
parity spread, round trip) are measured on the held-out split by zoo.metrics.text. BPE, sentencepiece
and tiktoken training is deterministic (single-threaded, seeded): a rerun reproduces the files. HF's
Unigram trainer breaks ties between equally frequent pieces in hash order, so a rerun of unigram-tiny
keeps the same 1024 pieces but may permute ~140 ids and move the scores of the ~120 rarest pieces.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers trains deterministically on one thread

from zoo.cards import make_card  # noqa: E402
from zoo.metrics import text as text_metrics  # noqa: E402
from zoo.metrics.tokens import bits_per_byte  # noqa: E402
from zoo.text.corpus import load_corpus, parallel_languages  # noqa: E402
from zoo.text.tokenizers import ByteTokenizer, HFTokenizer, SentencePieceTokenizer, TiktokenTokenizer  # noqa: E402

log = logging.getLogger("zoo.text.train_tiny")

VOCAB_SIZE = 1024
# The corpus has ~1,100 distinct characters (mostly Han and Kana); sentencepiece needs a piece for each
# covered one, so it covers the most frequent 98% of characters and spells the rest as <0xNN> bytes.
SPM_COVERAGE = 0.98
DATASET = "zoo/text/corpus.json held-out split (4 parallel sentences x 12 languages + 4 emoji lines)"
TRAINED_ON = (
    "zoo/text/corpus.json train split (the same 20 sentences, composed for tokenzoo, in English, German, French, "
    "Spanish, Russian, Greek, Arabic, Hebrew, Hindi, Chinese, Japanese and Korean, plus 8 emoji lines; CC0)"
)


def train_split_texts() -> list[str]:
    return [s for sentences in load_corpus("train").values() for s in sentences]


def figures(model) -> tuple[list[dict], str]:
    """Card metrics and a per-language markdown table, measured on the held-out split."""
    held_out = load_corpus("held_out")
    parallel = {lang: held_out[lang] for lang in parallel_languages()}
    everything = [s for sentences in held_out.values() for s in sentences]
    per_lang = text_metrics.language_report(model, held_out)
    parity = text_metrics.parity_report(model, parallel, reference="en")
    n_bytes = sum(len(s.encode("utf-8")) for s in everything)
    round_trip = sum(a == b for a, b in zip(model.decode(model.encode(everything)), everything))
    protocol = "zoo.metrics.text on the held-out split, summed over sentences"
    metrics = [
        {"name": "fertility (tokens per word)", "type": "fertility", "dataset": DATASET, "protocol": protocol,
         "value": round(text_metrics.fertility(model, everything), 3)},
        {"name": "bytes per token", "type": "bytes_per_token", "dataset": DATASET, "protocol": protocol,
         "value": round(text_metrics.bytes_per_token(model, everything), 3)},
        {"name": "bits per byte (tokens x log2 vocabulary / UTF-8 bytes)", "type": "bits_per_byte",
         "dataset": DATASET, "protocol": "zoo.metrics.tokens.bits_per_byte on the held-out split",
         "value": round(bits_per_byte(model.encode(everything), model.vocab_size, n_bytes), 3)},
        {"name": "characters per token", "type": "chars_per_token", "dataset": DATASET, "protocol": protocol,
         "value": round(text_metrics.chars_per_token(model, everything), 3)},
        {"name": f"parity spread (max/min premium; worst: {parity['worst_language']})", "type": "parity_spread",
         "dataset": DATASET, "protocol": "token counts on the 12 parallel languages, premium relative to English",
         "value": round(parity["spread"], 3)},
        {"name": "exact round trips", "type": "round_trip_fraction", "dataset": DATASET,
         "protocol": "decode(encode(s)) == s per sentence", "value": round(round_trip / len(everything), 3)},
    ]  # fmt: skip
    rows = [
        f"| {lang} | {r['fertility']:.2f} | {r['bytes_per_token']:.2f} | {r['chars_per_token']:.2f} | "
        + (f"{parity['premiums'][lang]:.2f} |" if lang in parity["premiums"] else "- |")
        for lang, r in per_lang.items()
    ]
    table = (
        "\n## Figures per language (held-out split)\n\n"
        "| language | fertility | bytes/token | chars/token | premium vs en |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    return metrics, table


def write(model, out: Path, name: str, summary: str, weights: str, lossless_note: str) -> None:
    metrics, table = figures(model)
    body = (
        f"\n## Round trip\n\n{lossless_note}\n{table}\n## How it was made\n\n"
        "`python -m zoo.text.train_tiny` (zoo/text/train_tiny.py) trains it and measures these figures (see that "
        "module's docstring for what a rerun reproduces).\n"
    )
    card = make_card(
        name=name,
        arch=model.arch,
        modality="text",
        license="apache-2.0",
        summary=summary,
        weights=weights,
        metrics=metrics,
        body=body,
        lossless=bool(getattr(model.config, "lossless", True)),  # the byte tokenizer's config has no flag
        vocab_size=model.vocab_size,
        tokens=f"variable length, {model.vocab_size} ids",
    )
    model.save_pretrained(out / name, card=card)
    log.info("wrote %s (vocab %d): %s", out / name, model.vocab_size, {m["type"]: m["value"] for m in metrics})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "hub_cards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = train_split_texts()

    write(
        ByteTokenizer(),
        args.out,
        "byte-utf8",
        "UTF-8 bytes as tokens: ids 0..255, 256 pads. The lossless baseline every text tokenizer is compared "
        "with; its fertility is bytes per word.",
        "None: the byte tokenizer has no learned parameters (model.safetensors is empty).",
        "Lossless for every Python string (tested over random Unicode).",
    )
    bpe = HFTokenizer.train_bpe(
        iter(texts), VOCAB_SIZE, special_tokens=("<|endoftext|>", "<pad>"), pad_token="<pad>",
        eos_token="<|endoftext|>",
    )  # fmt: skip
    write(
        bpe,
        args.out,
        "bpe-tiny",
        "A tiny byte-level BPE (Hugging Face `tokenizers`, GPT-2 split regex, no normaliser) trained on the "
        "bundled 12-language corpus. tokenizer.json sits beside config.json.",
        f"BpeTrainer(vocab_size={VOCAB_SIZE}, min_frequency=2, 256-byte initial alphabet, specials "
        f"<|endoftext|> (id 0) and <pad> (id 1)) on {TRAINED_ON}.",
        "Lossless for every string: every byte has a token and nothing is normalised.",
    )
    unigram = HFTokenizer.train_unigram(
        iter(texts), VOCAB_SIZE, special_tokens=("<unk>", "<pad>", "<s>", "</s>"), pad_token="<pad>",
        bos_token="<s>", eos_token="</s>",
    )  # fmt: skip
    write(
        unigram,
        args.out,
        "unigram-tiny",
        "A tiny byte-level Unigram LM tokenizer (Hugging Face `tokenizers`, GPT-2 split regex, no normaliser) "
        "trained on the bundled 12-language corpus.",
        f"UnigramTrainer(vocab_size={VOCAB_SIZE}, max_piece_length=16, 256-byte initial alphabet, specials "
        f"<unk> <pad> <s> </s>) on {TRAINED_ON}; the trainer stops below {VOCAB_SIZE} when the corpus "
        "supports fewer pieces.",
        "Lossless for every string: all 256 bytes are pieces and nothing is normalised.",
    )
    spm = SentencePieceTokenizer.train_from_iterator(
        iter(texts), VOCAB_SIZE, model_type="unigram", character_coverage=SPM_COVERAGE, seed=0
    )
    write(
        spm,
        args.out,
        "spm-tiny",
        "A tiny sentencepiece Unigram model with byte fallback, identity normalisation, no dummy prefix and kept "
        "whitespace, trained on the bundled 12-language corpus. tokenizer.model sits beside config.json.",
        f"SentencePieceTrainer(model_type=unigram, vocab_size<={VOCAB_SIZE}, byte_fallback, "
        f"character_coverage={SPM_COVERAGE}, "
        f"normalization_rule_name=identity, seed 0, one thread) on {TRAINED_ON}.",
        "Lossless for every string that does not contain U+2581 (sentencepiece's space mark, which decodes to a "
        "space); the config says lossless=false for that reason.",
    )
    tiktoken_model = TiktokenTokenizer.from_byte_level_bpe(bpe, pad_token="<pad>", eos_token="<|endoftext|>")
    write(
        tiktoken_model,
        args.out,
        "tiktoken-tiny",
        "bpe-tiny's byte-pair ranks as a local .tiktoken file (base64 token + rank per line) run by `tiktoken` "
        "with the same GPT-2 split regex; special tokens live in config.json.",
        "Converted from bpe-tiny by TiktokenTokenizer.from_byte_level_bpe (each token's bytes with its BPE id "
        "as rank).",
        "Lossless for every string (byte-level). Its ids equal bpe-tiny's on the held-out corpus "
        "(tests/test_text.py checks it).",
    )


if __name__ == "__main__":
    main()
