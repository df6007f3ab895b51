"""TouchTTS text -> speech-token LM: a Qwen2 causal LM whose last N vocabulary ids are S3 speech tokens.

Shape letters: B batch, L sequence length, P prompt length, S generated steps, V vocabulary, C speech codes.

Sequence layout (upstream ``ExtractorTouchTTS.extract`` and ``SpeechDataset._batch``/``_pack_sequence``)::

    training   [bos] txt <|audio_bos|> speech eos       labels -100 over bos, txt and <|audio_bos|>
    SFT        the txt part is  spk <|spk_eos|> ins <|ins_eos|> txt
    inference  [bos] prompt_txt syn_txt <|audio_bos|> prompt_speech    (no eos), then sample

Speech code k is vocabulary id ``k + vocab_size - N``. The loss is the causal-LM cross entropy over
the speech ids and eos only. Sampling follows the LibriTTS recipe's generation config: repetition
penalty over the generated ids (upstream generates from ``inputs_embeds``, so the prompt is not
penalised), no stop token before ``2 x`` the number of text ids to synthesise, then temperature,
top-k and top-p, at most ``30 x`` that number of new ids. Generation keeps a KV cache; ``use_cache=False``
recomputes the whole prefix at every step (same ids, for testing and benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.touchtts.text import AUDIO_SPECIAL_TOKENS, CharTokenizer, default_text_tokens
from audio.touchtts.trunk import QwenShape
from zoo.errors import ConfigError, InputError

IGNORE_INDEX = -100  # labels the loss skips (HF's LabelSmoother.ignore_index)
AUDIO_BOS, SPK_EOS, INS_EOS = "<|audio_bos|>", "<|spk_eos|>", "<|ins_eos|>"


@dataclass(frozen=True)
class LMConfig:
    """The LM and its sampling. Defaults: Qwen2.5-0.5B's shape over S3Tokenizer v2/v3's 6561 codes."""

    trunk: QwenShape = field(default_factory=QwenShape)
    text_tokens: tuple[str, ...] = field(default_factory=default_text_tokens)
    # Vocabulary rows before the speech ids; 0 = len(text_tokens). A BPE text vocabulary reserves its own
    # size here (Qwen2.5's tokenizer + the 5 audio tokens: 151,670).
    text_vocab_size: int = 0
    num_speech_tokens: int = 6561  # 4096 for S3Tokenizer v1 / v1_25hz
    bos_token: str = "<|im_start|>"  # upstream's init_tokenizer sets bos to <|im_start|>
    eos_token: str = "<|im_end|>"
    pad_token: str = "<|endoftext|>"
    stop_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")  # the recipe's eos_token_id list
    # Sampling (examples/libritts/tts/conf/generation_config.json and TouchTTS.generate).
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 0.8
    repetition_penalty: float = 1.1
    min_new_per_text_token: int = 2
    max_new_per_text_token: int = 30

    def __post_init__(self):
        object.__setattr__(self, "trunk", QwenShape.coerce(self.trunk, "LMConfig.trunk"))
        object.__setattr__(self, "text_tokens", tuple(self.text_tokens))
        object.__setattr__(self, "stop_tokens", tuple(self.stop_tokens))
        named = [self.bos_token, self.eos_token, self.pad_token, *self.stop_tokens, *AUDIO_SPECIAL_TOKENS]
        missing = [t for t in dict.fromkeys(named) if t not in self.text_tokens]
        if missing:
            raise ConfigError(f"LMConfig.text_tokens lacks the special tokens {', '.join(missing)}")
        if self.text_vocab_size and self.text_vocab_size < len(self.text_tokens):
            raise ConfigError(
                f"LMConfig.text_vocab_size={self.text_vocab_size} is smaller than the "
                f"{len(self.text_tokens)} text tokens"
            )
        if self.num_speech_tokens < 1:
            raise ConfigError(f"LMConfig.num_speech_tokens={self.num_speech_tokens} must be positive")
        if not (self.temperature > 0 and self.top_k >= 0 and 0 < self.top_p <= 1 and self.repetition_penalty > 0):
            raise ConfigError(
                "LMConfig sampling needs temperature > 0, top_k >= 0, 0 < top_p <= 1 and repetition_penalty > 0, got "
                f"{self.temperature}, {self.top_k}, {self.top_p}, {self.repetition_penalty}"
            )
        if not 0 <= self.min_new_per_text_token <= self.max_new_per_text_token or self.max_new_per_text_token < 1:
            raise ConfigError(
                "LMConfig needs 0 <= min_new_per_text_token <= max_new_per_text_token and max >= 1, got "
                f"{self.min_new_per_text_token}, {self.max_new_per_text_token}"
            )

    @property
    def vocab_size(self) -> int:
        return max(self.text_vocab_size, len(self.text_tokens)) + self.num_speech_tokens

    @property
    def speech_start(self) -> int:
        """The vocabulary id of speech code 0 (``vocab_size - num_speech_tokens``)."""
        return self.vocab_size - self.num_speech_tokens


@dataclass
class GenerationStep:
    """One step of batched generation: each row's new id (pad once the row is done) and why.

    counted: (B,) True where the id belongs to the row's output (the row was still running);
    done: (B,) True once the row drew a stop id or reached its limit; logits / scores: (B, V) raw
    and processed next-token scores.
    """

    token: Tensor
    counted: Tensor
    done: Tensor
    logits: Tensor
    scores: Tensor


class SpeechLM(nn.Module):
    """``llm`` is a ``transformers.Qwen2ForCausalLM``; parameter names are upstream's ``TouchTTS`` ones (``llm.*``).

    The output projection is tied to the input embedding (as in Qwen2.5-0.5B), so the state dict
    holds ``llm.model.embed_tokens.weight`` only, like upstream's saved checkpoints.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.config = config
        self.tokenizer = CharTokenizer(config.text_tokens)
        token_id = self.tokenizer.token_id
        self.bos_id, self.eos_id, self.pad_id = map(token_id, (config.bos_token, config.eos_token, config.pad_token))
        self.stop_ids = tuple(map(token_id, config.stop_tokens))
        qwen = config.trunk.qwen2_config(config.vocab_size, bos_token_id=self.bos_id, eos_token_id=self.eos_id)
        self.llm = Qwen2ForCausalLM(qwen)
        self.register_state_dict_post_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_tie_head)
        self.register_load_state_dict_post_hook(_retie_head)

    @property
    def speech_start(self) -> int:
        return self.config.speech_start

    # ---- layout -----------------------------------------------------------------------------------
    def content(self, text: str, spk: str = "", ins: str = "", prompt_text: str = "") -> str:
        """The text part of an item, ``<|audio_bos|>`` included (upstream's ``content`` string)."""
        body = prompt_text + text + AUDIO_BOS
        return spk + SPK_EOS + ins + INS_EOS + body if spk or ins else body

    def layout(
        self, text: str, n_codes: int, spk: str = "", ins: str = "", prompt_text: str = "", inference: bool = False
    ) -> dict:
        """One item as upstream's extractor lays it out, with ``n_codes`` placeholder ids 0 where speech goes.

        Training items end with eos and carry labels; inference items (``prompt_text`` + ``text`` to
        synthesise, ``n_codes`` prompt codes) end with the prompt's speech and record ``text_length``,
        the number of ids of ``text`` that sets the new-token limits.
        """
        prefix = [self.bos_id, *self.tokenizer.encode(self.content(text, spk, ins, prompt_text))]
        tail = [] if inference else [self.eos_id]
        ids = prefix + [0] * n_codes + tail
        labels = [IGNORE_INDEX] * len(prefix) + [0] * n_codes + tail
        return {
            "input_ids": torch.tensor(ids, dtype=torch.int64),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "audio_offset": len(prefix),
            "text_length": len(self.tokenizer.encode(text)) if inference else 0,
        }

    def collate(self, items: list[dict]) -> dict[str, Tensor]:
        """Right-pad items into a batch (ids with pad, labels with -100); the attention mask marks real positions."""
        lengths = torch.tensor([len(item["input_ids"]) for item in items])
        width = int(lengths.max())
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.int64)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.int64)
        for row, item in enumerate(items):
            input_ids[row, : lengths[row]] = item["input_ids"]
            labels[row, : lengths[row]] = item["labels"]
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": torch.arange(width)[None, :] < lengths[:, None],  # (B, L)
            "audio_offsets": torch.tensor([item["audio_offset"] for item in items]),
            "text_lengths": torch.tensor([item["text_length"] for item in items]),
            "batch_idx": torch.arange(len(items)),
        }

    def pack(self, items: list[dict], pack_size: int) -> dict[str, Tensor]:
        """Concatenate training items into one row of ``pack_size`` (upstream's pack mode).

        Positions restart at 0 for every item, which is what keeps items apart: transformers turns
        restarting ``position_ids`` without an attention mask into one causal block per item (what
        upstream gets from flash-attention's varlen kernels). The first label of every item is -100;
        the unused tail holds id 0, label -100, position 0.
        """
        total = sum(len(item["input_ids"]) for item in items)
        if total > pack_size:
            raise InputError(f"{len(items)} items of {total} ids do not fit a pack of {pack_size}")
        input_ids = torch.zeros(1, pack_size, dtype=torch.int64)
        labels = torch.full((1, pack_size), IGNORE_INDEX, dtype=torch.int64)
        position_ids = torch.zeros(1, pack_size, dtype=torch.int64)
        offsets, start = [], 0
        for item in items:
            n = len(item["input_ids"])
            input_ids[0, start : start + n] = item["input_ids"]
            labels[0, start + 1 : start + n] = item["labels"][1:]
            position_ids[0, start : start + n] = torch.arange(n)
            offsets.append(start + item["audio_offset"])
            start += n
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "audio_offsets": torch.tensor(offsets),
            "text_lengths": torch.tensor([item["text_length"] for item in items]),
            "batch_idx": torch.zeros(len(items), dtype=torch.int64),
        }

    def fill_speech(
        self,
        input_ids: Tensor,
        labels: Tensor | None,
        audio_offsets: Tensor,
        batch_idx: Tensor,
        codes: Tensor,
        code_lengths: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """Put each item's speech ids (code + speech_start) at its placeholders, in ids and labels (``reorg_ids``).

        codes: (items, C) int64, right-padded; item i fills row ``batch_idx[i]`` from ``audio_offsets[i]``.
        Returns new tensors; the inputs are left as they were.
        """
        self.check_codes(codes, code_lengths)
        input_ids = input_ids.clone()
        labels = None if labels is None else labels.clone()
        for i in range(codes.shape[0]):
            row, start, n = int(batch_idx[i]), int(audio_offsets[i]), int(code_lengths[i])
            speech = codes[i, :n].to(input_ids) + self.speech_start
            input_ids[row, start : start + n] = speech
            if labels is not None:
                labels[row, start : start + n] = speech
        return input_ids, labels

    def check_codes(self, codes: Tensor, code_lengths: Tensor) -> None:
        """Raise InputError unless every valid code lies in [0, N)."""
        n = self.config.num_speech_tokens
        valid = torch.arange(codes.shape[1], device=codes.device)[None, :] < code_lengths.to(codes.device)[:, None]
        bad = codes[valid]
        bad = bad[(bad < 0) | (bad >= n)]
        if bad.numel():
            raise InputError(
                f"speech token ids must lie in [0, {n}) for this model's {n}-token speech vocabulary; "
                f"got {sorted(set(bad.tolist()))[:8]}"
            )

    def speech_codes(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Generated ids -> (codes (B, C) right-padded with 0, lengths (B,)): only speech ids are kept, as upstream."""
        valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        is_speech = valid & (ids >= self.speech_start) & (ids < self.config.vocab_size)
        counts = is_speech.sum(dim=1)
        codes = torch.zeros(ids.shape[0], max(int(counts.max()) if len(counts) else 0, 1), dtype=torch.int64)
        for row in range(ids.shape[0]):
            codes[row, : counts[row]] = ids[row][is_speech[row]] - self.speech_start
        return codes.to(ids.device), counts

    # ---- forward and loss -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        position_ids: Tensor | None = None,
    ):
        """Teacher-forced pass: the transformers output (``logits`` (B, L, V), ``loss`` when labels are given)."""
        return self.llm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            position_ids=position_ids,
            use_cache=False,
        )

    def loss(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        labels: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """The teacher-forced loss ``forward(...).loss`` gives (transformers' causal-LM cross entropy: the id
        at position l + 1 predicted at l, mean over labels != -100), with the output projection computed only
        at the scored positions: a row's text part (about 40% of it) never reaches the V-wide projection."""
        hidden = self.llm.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, L, H)
        targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]  # (B, L): the next id at every position
        scored = targets != IGNORE_INDEX
        return F.cross_entropy(self.llm.lm_head(hidden[scored]).float(), targets[scored])

    # ---- sampling ---------------------------------------------------------------------------------
    def process_scores(self, logits: Tensor, generated: Tensor, min_new: Tensor, sample: bool) -> Tensor:
        """Upstream's processor chain on (B, V) next-token logits; ``generated`` (B, S) are the ids so far.

        Repetition penalty (over generated ids) -> no stop id before ``min_new`` (B,) new ids -> and,
        when sampling, temperature -> top-k -> top-p (transformers' own processors, in generate's order).
        """
        from transformers import (
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        config = self.config
        scores = logits
        if config.repetition_penalty != 1.0 and generated.shape[1]:
            scores = RepetitionPenaltyLogitsProcessor(config.repetition_penalty)(generated, scores)
        too_early = generated.shape[1] < min_new  # (B,)
        if too_early.any():
            stop = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            stop[list(self.stop_ids)] = True
            scores = scores.masked_fill(too_early[:, None] & stop[None, :], float("-inf"))
        if sample:
            if config.temperature != 1.0:
                scores = TemperatureLogitsWarper(config.temperature)(generated, scores)
            if config.top_k > 0:
                scores = TopKLogitsWarper(config.top_k)(generated, scores)
            if config.top_p < 1.0:
                scores = TopPLogitsWarper(config.top_p)(generated, scores)
        return scores

    def new_token_limits(self, text_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(min_new, max_new) per item: 2x and 30x the text ids to synthesise (at least one new id)."""
        text_lengths = text_lengths.to(torch.int64)
        return text_lengths * self.config.min_new_per_text_token, (
            text_lengths * self.config.max_new_per_text_token
        ).clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        lengths: Tensor,
        text_lengths: Tensor,
        generators: list[torch.Generator | None] | None = None,
        sample: bool = True,
        use_cache: bool = True,
        max_new_tokens: int | None = None,
        return_scores: bool = False,
    ):
        """Continue (B, P) right-padded prompts (``lengths`` real ids each) until a stop id or the new-token limit.

        Args:
            text_lengths: (B,) ids of the text to synthesise; they set each item's min/max new tokens.
            generators: one per item (None: the global RNG, as upstream): an item draws from its own,
                so it samples the same ids alone or in any batch. Ignored when ``sample`` is False (greedy).
            use_cache: keep keys/values of the prefix (default); False recomputes it every step.
            max_new_tokens: an extra cap on top of the per-item limit.
            return_scores: also return the raw and processed scores of every step, (B, S, V) each.

        Returns:
            ids (B, S) new ids only, stop id included when one was drawn, padded with pad; lengths (B,);
            and with ``return_scores`` a dict ``{"raw": ..., "processed": ...}``.
        """
        steps = list(
            self.iter_generate(input_ids, lengths, text_lengths, generators, sample, use_cache, max_new_tokens)
        )
        ids = torch.stack([step.token for step in steps], dim=1)
        new_lengths = torch.stack([step.counted for step in steps], dim=1).sum(dim=1)
        if return_scores:
            raw = torch.stack([step.logits for step in steps], dim=1)
            return ids, new_lengths, {"raw": raw, "processed": torch.stack([step.scores for step in steps], dim=1)}
        return ids, new_lengths

    def iter_generate(
        self,
        input_ids: Tensor,
        lengths: Tensor,
        text_lengths: Tensor,
        generators: list[torch.Generator | None] | None = None,
        sample: bool = True,
        use_cache: bool = True,
        max_new_tokens: int | None = None,
    ) -> Iterator[GenerationStep]:
        """``generate`` one step at a time (for streaming): yields a GenerationStep per new id of the batch.

        Run it under ``torch.no_grad()`` or ``torch.inference_mode()``.
        """
        batch, device = input_ids.shape[0], input_ids.device
        if generators is not None and len(generators) != batch:
            raise InputError(f"generate: {len(generators)} generators for a batch of {batch}")
        lengths = lengths.to(device=device, dtype=torch.int64)
        min_new, max_new = (t.to(device) for t in self.new_token_limits(text_lengths))
        if max_new_tokens is not None:
            max_new = max_new.clamp(max=max_new_tokens)
        # Left-pad, so every row's next id sits in the last column; positions count real ids only.
        width = int(lengths.max())
        shift = width - lengths
        columns = torch.arange(width, device=device)
        source = (columns[None, :] - shift[:, None]).clamp(min=0)
        attention = columns[None, :] >= shift[:, None]  # (B, P)
        sequence = torch.where(
            attention, input_ids.gather(1, source), torch.full_like(input_ids[:, :width], self.pad_id)
        )
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        stop = torch.tensor(self.stop_ids, device=device)
        generated = torch.empty(batch, 0, dtype=torch.int64, device=device)
        count = torch.zeros(batch, dtype=torch.int64, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        cache, step_ids, step_positions = None, sequence, positions
        for _ in range(int(max_new.max())):
            if use_cache:
                out = self.llm(
                    input_ids=step_ids,
                    attention_mask=attention,
                    position_ids=step_positions,
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = out.cache
            else:
                out = self.llm(
                    input_ids=sequence,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=1,
                )
            logits = out.logits[:, -1].float()  # (B, V)
            scores = self.process_scores(logits, generated, min_new, sample)
            token = self._pick(scores, generators, sample)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            counted = ~done
            generated = torch.cat([generated, token[:, None]], dim=1)
            count = count + counted.long()
            done = done | torch.isin(token, stop) | (count >= max_new)
            yield GenerationStep(token, counted, done, logits, scores)
            if bool(done.all()):
                return
            step_ids, step_positions = token[:, None], positions[:, -1:] + 1
            sequence = torch.cat([sequence, step_ids], dim=1)
            positions = torch.cat([positions, step_positions], dim=1)
            attention = torch.cat([attention, torch.ones_like(done)[:, None]], dim=1)

    @staticmethod
    def _pick(scores: Tensor, generators: list | None, sample: bool) -> Tensor:
        """(B, V) processed scores -> (B,) ids: argmax, or one multinomial draw per row from its own generator."""
        if not sample:
            return scores.argmax(dim=-1)
        probs = scores.softmax(dim=-1)
        rows = [
            torch.multinomial(probs[row : row + 1], 1, generator=None if generators is None else generators[row])
            for row in range(probs.shape[0])
        ]
        return torch.cat(rows).flatten()


def _drop_tied_head(module, state_dict, prefix, local_metadata):
    """State-dict hook: the tied output projection is the input embedding, so it is not stored twice."""
    state_dict.pop(prefix + "llm.lm_head.weight", None)


def _tie_head(module, state_dict, prefix, *args):
    """Load hook: give the tied output projection the embedding's tensor, so a strict load finds it."""
    embed = state_dict.get(prefix + "llm.model.embed_tokens.weight")
    if embed is not None:
        state_dict.setdefault(prefix + "llm.lm_head.weight", embed)


def _retie_head(module, incompatible_keys):
    """Load hook: make the output projection the embedding's parameter again.

    A load with ``assign=True`` (``zoo.load`` builds on the meta device) gives ``lm_head.weight`` its
    own Parameter object; training would then update the one tensor twice with two optimiser states.
    """
    module.llm.lm_head.weight = module.llm.model.embed_tokens.weight
