"""Test-wide settings: a private Hub cache so no test touches the user's ~/.cache or the network."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: no telemetry, no real endpoint.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault(
    "HF_ENDPOINT", "http://127.0.0.1:9"
)  # the discard port: a test that forgets its server fails fast
