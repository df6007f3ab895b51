"""tokenzoo: one registry and one contract over image, pose, speech, EM-volume and text tokenizers.

    import zoo
    zoo.list_models("*", modality="text")
    model = zoo.load("bpe-tiny")
    tokens = model.encode(["hello"])
    text = model.decode(tokens)

Importing ``zoo`` imports no model family: architectures load lazily, by name, when needed.
"""

from zoo.api import Tokens, ZooModel
from zoo.errors import ZooError
from zoo.registry import get_arch, list_archs, list_models, load, register_arch

__all__ = ["Tokens", "ZooModel", "ZooError", "get_arch", "list_archs", "list_models", "load", "register_arch"]
__version__ = "0.1.0"
