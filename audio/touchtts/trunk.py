"""The transformer shape shared by the TouchTTS LM and flow: a Qwen2 decoder stack from ``transformers``.

Upstream builds both from a Qwen2.5-0.5B checkpoint's config (the LM also loads its weights; the
flow starts from random weights). ``QwenShape`` holds only the numbers that decide the stack's
shape, with Qwen2.5-0.5B's as defaults, so a config.json stays small and names no remote file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo.errors import ConfigError

ATTENTION_BACKENDS = ("sdpa", "eager")


@dataclass(frozen=True)
class QwenShape:
    """A Qwen2 decoder stack. Defaults are Qwen2.5-0.5B (494M parameters with its 151,936-row vocabulary)."""

    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2  # grouped-query attention: 7 query heads share each key/value head
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    attention: str = "sdpa"  # or "eager"; upstream's LM asks for flash_attention_2 (GPU only, same maths)

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"QwenShape.{name}={getattr(self, name)} must be positive")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"QwenShape.hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"QwenShape.num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(f"QwenShape.attention={self.attention!r} must be one of {', '.join(ATTENTION_BACKENDS)}")

    @classmethod
    def coerce(cls, value: QwenShape | Mapping[str, Any], where: str) -> QwenShape:
        """A QwenShape from itself or from config.json's dict (unknown keys are an error naming them)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of QwenShape fields, got {type(value).__name__}")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{where}: unknown QwenShape keys: {', '.join(unknown)}")
        return cls(**value)

    def qwen2_config(self, vocab_size: int, **special_ids):
        """The ``transformers.Qwen2Config`` of this shape with ``vocab_size`` rows and tied input/output embeddings."""
        from transformers import Qwen2Config

        config = Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=True,
            use_sliding_window=False,
            **special_ids,
        )
        config._attn_implementation = self.attention
        return config
