"""WeNet-style attention masks for the TouchTTS flow: padding, full context, static and dynamic chunks.

Shape letters: B batch, L sequence length (mel frames). Boolean masks are True where attention is
allowed (or, for ``make_pad_mask``, where a position is padding). A chunk mask lets frame i see
every frame of its own chunk of ``chunk_size`` frames and of ``num_left_chunks`` chunks before it
(all of them when negative), never a later chunk: one model then serves streaming (small chunks)
and offline synthesis (one chunk spanning everything).

Upstream reference: ``west/utils/mask.py`` (wenet-e2e/west), itself WeNet's; the random draw of a
dynamic chunk uses the same torch calls in the same order, so a seeded run draws the same chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError

BIAS_MASKED = -1.0e10  # what a disallowed score gets added: large, finite, so a fully masked row stays finite


def make_pad_mask(lengths: Tensor, max_len: int = 0) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True at padded positions (max_len defaults to max(lengths))."""
    max_len = max_len if max_len > 0 else int(lengths.max())
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] >= lengths[:, None]


def non_causal_mask(lengths: Tensor) -> Tensor:
    """(B,) lengths -> (B, L, L) bool, True where both the query and the key are valid frames."""
    valid = ~make_pad_mask(lengths)
    return valid[:, :, None] & valid[:, None, :]


def subsequent_chunk_mask(size: int, chunk_size: int, num_left_chunks: int = -1, device=None) -> Tensor:
    """(size, size) bool: row i sees its own chunk and ``num_left_chunks`` chunks to the left (all when < 0)."""
    if chunk_size < 1:
        raise InputError(f"chunk_size={chunk_size} must be >= 1")
    index = torch.arange(size, device=device)
    chunk = index // chunk_size
    end = torch.clamp((chunk + 1) * chunk_size, max=size)
    if num_left_chunks < 0:
        start = torch.zeros_like(chunk)
    else:
        start = torch.clamp((chunk - num_left_chunks) * chunk_size, min=0)
    return (index[None, :] >= start[:, None]) & (index[None, :] < end[:, None])


def choose_chunk(
    max_len: int,
    use_dynamic_chunk: bool,
    use_dynamic_left_chunk: bool,
    decoding_chunk_size: int,
    static_chunk_size: int,
    num_decoding_left_chunks: int,
    enable_full_context: bool = True,
    max_chunk_size: int = 25,
    generator: torch.Generator | None = None,
) -> tuple[int, int] | None:
    """The (chunk_size, num_left_chunks) a sequence of ``max_len`` frames is masked with, or None for no chunking.

    Dynamic chunks win over a static chunk. For dynamic chunks ``decoding_chunk_size`` < 0 means full
    context, > 0 that chunk with ``num_decoding_left_chunks``, and 0 (training) draws one:
    ``c = randint(1, max_len)``; past half the length (with ``enable_full_context``) the whole
    sequence is one chunk, else ``c = c % max_chunk_size + 1`` and, with ``use_dynamic_left_chunk``,
    ``left = randint(0, (max_len - 1) // c)``. Draws come from ``generator`` (the global RNG when
    None, as upstream). Where upstream's draws would fail (a one-frame sequence, or no left chunk to
    draw from) the whole context is used instead.
    """
    if use_dynamic_chunk:
        if decoding_chunk_size < 0:
            return max_len, -1
        if decoding_chunk_size > 0:
            return decoding_chunk_size, num_decoding_left_chunks
        if max_len < 2:
            return max(max_len, 1), -1
        chunk_size = int(torch.randint(1, max_len, (1,), generator=generator))
        if chunk_size > max_len // 2 and enable_full_context:
            return max_len, -1
        chunk_size = chunk_size % max_chunk_size + 1
        num_left_chunks = -1
        max_left_chunks = (max_len - 1) // chunk_size
        if use_dynamic_left_chunk and max_left_chunks > 0:
            num_left_chunks = int(torch.randint(0, max_left_chunks, (1,), generator=generator))
        return chunk_size, num_left_chunks
    if static_chunk_size > 0:
        return static_chunk_size, num_decoding_left_chunks
    return None


def add_optional_chunk_mask(
    masks: Tensor,
    use_dynamic_chunk: bool,
    use_dynamic_left_chunk: bool,
    decoding_chunk_size: int,
    static_chunk_size: int,
    num_decoding_left_chunks: int,
    enable_full_context: bool = True,
    max_chunk_size: int = 25,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, 1, L) valid-frame mask -> (B, L, L) chunk mask AND-ed with it, or the input when nothing is chunked.

    The options are upstream's (see ``choose_chunk``); the chunk mask is the same for every item.
    """
    chosen = choose_chunk(
        masks.shape[-1],
        use_dynamic_chunk,
        use_dynamic_left_chunk,
        decoding_chunk_size,
        static_chunk_size,
        num_decoding_left_chunks,
        enable_full_context,
        max_chunk_size,
        generator,
    )
    if chosen is None:
        return masks
    chunk = subsequent_chunk_mask(masks.shape[-1], *chosen, device=masks.device)  # (L, L)
    return masks & chunk[None]  # (B, L, L)


def mask_to_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool mask -> additive attention bias: 0 where allowed, -1e10 where not (upstream's ``mask_to_bias``)."""
    if mask.dtype != torch.bool:
        raise InputError(f"mask_to_bias needs a bool mask, got {mask.dtype}")
    return (1.0 - mask.to(dtype)) * BIAS_MASKED
