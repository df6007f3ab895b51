"""Tab builders for the demo app, one module per modality: ``demos/tabs/<modality>.py``.

The hook a family adds to get its own tab is one function in that module:

    def build(models: list[str]) -> None

called inside a ``gr.Tab`` of the app's ``gr.Blocks``, with the registered model names of that
modality (``zoo.list_models(modality=...)``). It lays out components and wires events; every event
takes an ``api_name`` starting with the modality (``text_tokenize``, ``image_encode``), so that
``gradio_client`` and the tests can drive it. A modality without its own module gets the generic
tab (``demos/tabs/generic.py``): upload a file, see the ids, and the decoded output where there is one.

Models are loaded once per process through ``load_model`` (a small cache).
"""

from __future__ import annotations

import functools

MAX_CACHED_MODELS = 4


@functools.lru_cache(maxsize=MAX_CACHED_MODELS)
def load_model(name: str):
    """``zoo.load(name)`` once per process; the demo serves every request from the cached copy."""
    import zoo

    return zoo.load(name)
