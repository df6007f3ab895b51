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


# ---- an "upstream release" of the tiny model and its converter, for zoo.official's tests -----------------
CONVERTER_TARGET = "tests.tiny_model:convert_checkpoint"
CONVERTER_VERSION = 1


def save_upstream_release(model: TinyModel, path, extra: dict | None = None) -> None:
    """The tiny model as an upstream training script would pickle it: ``net.``-prefixed weights + training state."""
    checkpoint = {f"net.{k}": v for k, v in model.state_dict().items()}
    checkpoint.update({"epoch": 7, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, **(extra or {})})
    torch.save(checkpoint, path)


def convert_checkpoint(arch: str, src, out, bias_shift=None, dim: int | None = None, **unknown):
    """Upstream release (``save_upstream_release``) -> zoo folder. ``bias_shift``: a second upstream file (a
    pickled tensor) added to ``proj.bias``, as a multi-file release feeds a converter option.

    For the cache tests: every call appends a line to $TINY_CONVERT_LOG; $TINY_CONVERT_SLEEP seconds pass
    before the folder is written; $TINY_CONVERT_CRASH=1 kills the process halfway through writing it.
    """
    import os
    import time
    from pathlib import Path

    from zoo.pickles import load_weights_only

    if unknown:
        raise ConfigError(f"unknown options {sorted(unknown)}")
    if os.environ.get("TINY_CONVERT_LOG"):
        with open(os.environ["TINY_CONVERT_LOG"], "a") as log:
            log.write(f"{os.getpid()} {Path(src).name}\n")
    state = load_weights_only(src)
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    vocab_size, width = weights["table.weight"].shape
    model = TinyModel(TinyConfig(vocab_size=vocab_size, dim=dim or width))
    model.load_state_dict(weights, strict=True)
    if bias_shift is not None:
        with torch.no_grad():
            model.proj.bias += load_weights_only(bias_shift)
    time.sleep(float(os.environ.get("TINY_CONVERT_SLEEP", "0")))
    out = Path(out)
    if os.environ.get("TINY_CONVERT_CRASH"):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"half a file")
        os._exit(3)
    model.save_pretrained(out)
    return out
