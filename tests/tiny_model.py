"""A tiny ZooModel for the core's tests: an embedding table and a projection, a few hundred weights.

Registered as arch ``test-tiny`` only while a test uses the ``tiny_arch`` fixture (tests/conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.api import Tokens, ZooModel, inference
from zoo.errors import ConfigError

ARCH = "test-tiny"
TARGET = "tests.tiny_model:TinyModel"


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 16
    dim: int = 4

    def __post_init__(self):
        if self.vocab_size < 2:
            raise ConfigError(f"TinyConfig.vocab_size={self.vocab_size} must be at least 2")
        if self.dim < 1:
            raise ConfigError(f"TinyConfig.dim={self.dim} must be positive")


class TinyModel(ZooModel):
    """ids (B, N) -> embeddings (B, N, D) through a table and a linear map; decode is the nearest row."""

    arch = ARCH
    modality = "text"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig = TinyConfig()):
        super().__init__(config)
        self.table = nn.Embedding(config.vocab_size, config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    @inference
    def encode(self, ids: torch.Tensor) -> Tokens:
        return Tokens(ids=ids, embeddings=self.proj(self.table(ids)))

    @inference
    def decode(self, tokens: Tokens) -> torch.Tensor:
        rows = self.proj(self.table.weight)  # (V, D)
        return torch.cdist(tokens.embeddings.float(), rows.float()[None]).argmin(-1)  # (B, N)


def seeded(seed: int, config: TinyConfig = TinyConfig()) -> TinyModel:
    """A TinyModel whose weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return TinyModel(config).eval()
