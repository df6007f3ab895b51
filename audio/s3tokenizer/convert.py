"""Upstream S3Tokenizer checkpoints -> tokenzoo model folders.

The released tokenizers are ONNX graphs (speech_tokenizer_v1.onnx, speech_tokenizer_v2.onnx,
speech_tokenizer_v3.onnx). Their weights are graph initializers (or ``Constant`` nodes) named
either by the PyTorch parameter (``encoders.conv1.weight``) or anonymously (``onnx::Conv_2216``,
``onnx::MatMul_2536``); anonymous ones are identified by the node that consumes them
(``/blocks.3/attn/query/MatMul``). We read them with the ``onnx`` package only (no onnxruntime):

- convolutions: the first two non-depthwise ``Conv`` nodes in graph order are conv1 and conv2, whatever
  their names (the releases call their initializers ``onnx::Conv_1519``, ``encoders.conv1.weight`` or
  ``/conv1/Conv``'s inputs; the names are cross-checked where known);
- MatMul weights are stored (in, out) and are transposed to ``nn.Linear``'s (out, in);
- LayerNorm is either one ``LayerNormalization`` node (scale and bias inputs) or decomposed, where
  the ``Mul`` parameter is the scale and the ``Add`` parameter of width C is the bias;
- a constant is a weight only where it flows into a weight slot: ``torch.onnx.export`` writes scalar
  operands (the codebook's ``pow(2)`` exponent, LayerNorm's epsilon) as ``Constant`` nodes beside the
  weights, and those are operands, not parameters;
- FSMN kernels are consumed by ``/blocks.N/attn/fsmn_block/Conv`` or named ``blocks.N.attn.fsmn_block.weight``;
- the VQ codebook (v1) is the parameter of ``/quantizer/rq/model/layers.0/_codebook/Pow_1``, stored (C, K);
- FSQ's ``project_down`` is ``quantizer.project_in.bias`` plus the quantizer's MatMul weight.

The variant decides the token rate and cannot be inferred from weight shapes alone (v1 and v1_25hz
have identical shapes and both release files are called speech_tokenizer_v1.onnx; upstream picks
the stride by the exact model name, so a local path silently became a 50 Hz model). We take it from
an explicit ``variant=`` option, else from the arch name (``s3tokenizer-v1_25hz``), else from the
graph itself (conv1's stride; FSMN blocks), and refuse a file name that contradicts the graph.
Every produced key must load strictly into the model that the inferred config builds.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audio.s3tokenizer.model import VARIANTS, S3Tokenizer, S3TokenizerConfig
from zoo.errors import CheckpointMismatchError, ConfigError, CorruptFileError, InputError
from zoo.files import sha256_file

logger = logging.getLogger(__name__)

# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1
# Anonymous conv initializers of the released graphs, (conv1.weight, conv1.bias, conv2.weight, conv2.bias).
_NAMED_CONV_INITIALIZERS = {
    "onnx::Conv_1519": "encoder.conv1.weight",  # v1 (50 Hz)
    "onnx::Conv_1520": "encoder.conv1.bias",
    "onnx::Conv_1521": "encoder.conv2.weight",
    "onnx::Conv_1522": "encoder.conv2.bias",
    "encoders.conv1.weight": "encoder.conv1.weight",  # v1_25hz keeps the PyTorch names
    "encoders.conv1.bias": "encoder.conv1.bias",
    "encoders.conv2.weight": "encoder.conv2.weight",
    "encoders.conv2.bias": "encoder.conv2.bias",
    "onnx::Conv_2216": "encoder.conv1.weight",  # v2
    "onnx::Conv_2217": "encoder.conv1.bias",
    "onnx::Conv_2218": "encoder.conv2.weight",
    "onnx::Conv_2219": "encoder.conv2.bias",
    "encoders.positional_embedding": "encoder.positional_embedding",
    "quantizer.project_in.bias": "quantizer._codebook.project_down.bias",
}
_PROJECT_DOWN_WEIGHT = "onnx::MatMul_2536"  # v2's anonymous FSQ projection (stored (C, 8))
_CODEBOOK_NODE = "/quantizer/rq/model/layers.0/_codebook/Pow_1"

_LINEAR_NODE = re.compile(r"^/blocks\.(\d+)/(attn/(?:query|key|value|out)|mlp/mlp\.[02])/(MatMul|Add)(?:_\d+)?$")
_NORM_NODE = re.compile(r"^/blocks\.(\d+)/(attn_ln|mlp_ln)/(Mul|Add|LayerNormalization)(?:_\d+)?$")
_FSMN_NODE = re.compile(r"^/blocks\.(\d+)/attn/fsmn_block/Conv$")
_FSMN_INITIALIZER = re.compile(r"^(?:encoder\.)?blocks\.(\d+)\.attn\.fsmn_block\.weight$")
_CONV_NODE = re.compile(r"^/conv([12])/Conv$")


# ---- ONNX -> upstream state dict ----------------------------------------------------------------
def _onnx_constants(graph) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph by name: initializers, ``Constant`` node outputs, and the
    ``Identity`` nodes through which ``torch.onnx.export`` names equal tensors it stores once.

    Not all of them are weights: ``torch.onnx.export`` writes scalar operands (the exponent of
    ``x.pow(2)``, LayerNorm's epsilon, attention's scale) as ``Constant`` nodes too. Which constants are
    weights is decided by where they flow (:func:`_weight_inputs`), not by how they are stored.
    """
    from onnx import numpy_helper

    params = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # in graph order, so an Identity of a Constant sees it
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    params[node.output[0]] = numpy_helper.to_array(attribute.t)
        elif node.op_type == "Identity" and node.input[0] in params:
            # the exporter stores equal tensors once and names the copies through Identity nodes
            params[node.output[0]] = params[node.input[0]]
    return params


# Input slots of an op that take operands, never weights: Pow's exponent, shapes, axes, indices.
_OPERAND_SLOTS = {
    "Pow": (1,),
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "Gather": (1,),
    "Slice": (1, 2, 3, 4),
}


def _weight_inputs(node, params: dict[str, np.ndarray]) -> list[str]:
    """The constant inputs of ``node`` that carry weights, decided by the slot each one flows into.

    An operand slot (:data:`_OPERAND_SLOTS`) never holds a weight, so the codebook's ``pow(2)`` gives the
    codebook (slot 0) and not its exponent (slot 1). In elementwise arithmetic a single number is an
    operand (LayerNorm's epsilon, attention's scale), never a per-channel weight; so are integer tensors.
    """
    operand_slots = _OPERAND_SLOTS.get(node.op_type, ())
    weights = []
    for slot, name in enumerate(node.input):
        if name not in params or slot in operand_slots:
            continue
        value = params[name]
        if not np.issubdtype(value.dtype, np.floating):
            continue
        if node.op_type in ("Add", "Sub", "Mul", "Div") and value.size <= 1:
            continue
        weights.append(name)
    return weights


def _front_convs(graph) -> list:
    """The two front convolutions in graph order (ONNX keeps nodes topologically sorted): conv1 reads the
    mel, conv2 reads conv1's output. Depthwise convolutions (FSMN memory, ``group`` > 1) are not among them.
    """
    convs = []
    for node in graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and groups == 1:
            convs.append(node)
    return convs


def _stride(node) -> int | None:
    strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), None)
    return int(strides[0]) if strides else None


def read_onnx_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Upstream-named state dict from an S3Tokenizer ONNX graph, plus facts about the graph (conv1 stride)."""
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is in the audio extra
        raise ConfigError("converting ONNX needs the `onnx` package (pip install 'tokenzoo[audio]')") from err
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:
        raise CorruptFileError(str(path), f"not a readable ONNX model ({err})") from err
    params = _onnx_constants(graph)
    state: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}

    def put(key: str, value: np.ndarray, source: str) -> None:
        if key in state and not np.array_equal(state[key], value):
            raise CorruptFileError(str(path), f"two different tensors map to {key} ({sources[key]}, {source})")
        state[key], sources[key] = value, source

    for name, value in params.items():  # parameters recognisable by their own name
        if name in _NAMED_CONV_INITIALIZERS:
            put(_NAMED_CONV_INITIALIZERS[name], value, name)
        elif name == _PROJECT_DOWN_WEIGHT:
            put("quantizer._codebook.project_down.weight", value.T, name)
        elif match := _FSMN_INITIALIZER.match(name):
            put(f"encoder.blocks.{match[1]}.attn.fsmn_block.weight", value, name)

    convs = _front_convs(graph)
    if len(convs) != 2:
        raise CorruptFileError(str(path), f"expected the two front convolutions, found {len(convs)} Conv nodes")
    for layer, node in enumerate(convs, start=1):  # recognisable by where they sit in the graph
        for slot, kind in ((1, "weight"), (2, "bias")):
            if len(node.input) > slot and node.input[slot] in params:
                put(f"encoder.conv{layer}.{kind}", params[node.input[slot]], node.name or f"Conv #{layer}")

    for node in graph.node:  # parameters recognisable by the node that consumes them
        weights = [n for n in _weight_inputs(node, params) if n not in _NAMED_CONV_INITIALIZERS]
        if node.name == _CODEBOOK_NODE:
            for name in weights:
                put("quantizer._codebook.embed", params[name].T, node.name)
        elif "quantizer" in node.name and node.op_type == "MatMul":
            for name in weights:  # FSQ's projection is (C, 8); a VQ graph's codebook MatMul is (C, K) and skipped
                if params[name].ndim == 2 and params[name].shape[1] == 8:
                    put("quantizer._codebook.project_down.weight", params[name].T, node.name)
        elif match := _FSMN_NODE.match(node.name):
            for name in weights:
                put(f"encoder.blocks.{match[1]}.attn.fsmn_block.weight", params[name], node.name)
        elif match := _LINEAR_NODE.match(node.name):
            prefix = f"encoder.blocks.{match[1]}.{match[2].replace('mlp/mlp.', 'mlp.').replace('/', '.')}"
            for name in weights:
                value = params[name]
                if match[3] == "MatMul" and value.ndim == 2:
                    put(f"{prefix}.weight", value.T, node.name)  # ONNX MatMul keeps (in, out)
                elif match[3] == "Add" and value.ndim == 1:
                    put(f"{prefix}.bias", value, node.name)
        elif match := _NORM_NODE.match(node.name):
            prefix = f"encoder.blocks.{match[1]}.{match[2]}"
            if match[3] == "LayerNormalization":
                for slot, kind in ((1, "weight"), (2, "bias")):
                    if len(node.input) > slot and node.input[slot] in weights:
                        put(f"{prefix}.{kind}", params[node.input[slot]], node.name)
            else:  # decomposed LayerNorm: scale by Mul, shift by Add (its epsilon Add has a scalar operand)
                for name in weights:
                    if params[name].ndim == 1:
                        put(f"{prefix}.{'weight' if match[3] == 'Mul' else 'bias'}", params[name], node.name)
    facts = {
        "conv1_stride": _stride(convs[0]),
        "layout": "named-nodes" if any(_CONV_NODE.match(n.name) for n in graph.node) else "anonymous-initializers",
    }
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}
    return tensors, facts


# ---- variant and config -------------------------------------------------------------------------
def variant_from_name(text: str) -> str | None:
    """The variant a file or arch name states, if it states exactly one (speech_tokenizer_v1.onnx does not)."""
    lowered = text.lower()
    if "v1_25hz" in lowered or "v1-25hz" in lowered:
        return "v1_25hz"
    for variant in ("v3", "v2"):
        if re.search(rf"(?<![a-z0-9]){variant}(?![0-9])", lowered):
            return variant
    if re.search(r"(?<![a-z0-9])v1(?![0-9])", lowered):
        return "v1"
    return None


def resolve_variant(arch: str, src: Path, state: dict[str, torch.Tensor], facts: dict[str, Any], option: str | None):
    """Explicit option > arch suffix > graph evidence > file name; contradictions are errors."""
    has_fsmn = any(k.endswith("fsmn_block.weight") for k in state)
    stride = facts.get("conv1_stride")
    candidates = {
        "option": option,
        "arch": variant_from_name(arch.removeprefix("s3tokenizer")) if arch != "s3tokenizer" else None,
    }
    chosen = next((v for v in candidates.values() if v), None)
    file_variant = variant_from_name(src.name) if chosen is None else None  # an explicit choice wins over names
    if chosen is None:
        if has_fsmn:  # v2 and v3 compute alike (v3 has 12 blocks); the file name, else the graph's naming, tells
            if file_variant in ("v2", "v3"):
                chosen = file_variant
            else:
                chosen = "v3" if facts.get("layout") == "named-nodes" else "v2"
        elif stride is not None:
            chosen = "v1" if stride == 1 else "v1_25hz"
        elif file_variant is not None and file_variant != "v1":
            chosen = file_variant
        else:
            raise ConfigError(
                f"{src.name}: cannot tell v1 (50 Hz) from v1_25hz (the weights have the same shapes); "
                "pass variant='v1' or variant='v1_25hz'"
            )
    if chosen not in VARIANTS:
        raise ConfigError(f"variant={chosen!r} must be one of {', '.join(VARIANTS)}")
    if file_variant is not None and (file_variant in ("v2", "v3")) != has_fsmn:
        raise ConfigError(
            f"{src.name} names {file_variant}, but the weights {'have' if has_fsmn else 'lack'} FSMN blocks; "
            "rename the file or pass variant=... explicitly"
        )
    if has_fsmn != (chosen in ("v2", "v3")):
        raise ConfigError(
            f"{src.name}: the weights {'have' if has_fsmn else 'lack'} FSMN blocks, which contradicts variant {chosen}"
        )
    if stride is not None and chosen in ("v1", "v1_25hz") and stride != (1 if chosen == "v1" else 2):
        raise ConfigError(f"{src.name}: conv1 has stride {stride} in the graph, which contradicts variant {chosen}")
    return chosen


def config_from_state(variant: str, state: dict[str, torch.Tensor], n_audio_head: int | None = None):
    """Sizes from weight shapes; the head count is not visible in shapes (upstream fixes the head width at 64)."""
    if "encoder.conv1.weight" not in state:
        raise CheckpointMismatchError("s3tokenizer", "checkpoint", missing=["encoder.conv1.weight"])
    n_state, n_mels, _ = state["encoder.conv1.weight"].shape
    blocks = {int(m[1]) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))}
    values: dict[str, Any] = dict(
        variant=variant,
        n_mels=int(n_mels),
        n_audio_state=int(n_state),
        n_audio_head=int(n_audio_head or max(int(n_state) // 64, 1)),
        n_audio_layer=max(blocks) + 1 if blocks else 0,
    )
    if variant in ("v1", "v1_25hz"):
        if "quantizer._codebook.embed" in state:
            values["n_codebook_size"] = int(state["quantizer._codebook.embed"].shape[0])
        if "encoder.positional_embedding" in state:
            values["n_audio_ctx"] = int(state["encoder.positional_embedding"].shape[0])
    else:
        values["n_codebook_size"] = 3**8
        kernels = [v.shape[-1] for k, v in state.items() if k.endswith("fsmn_block.weight")]
        if kernels:
            values["fsmn_kernel_size"] = int(kernels[0])
    return S3TokenizerConfig(**values)


def model_from_state(
    variant: str, state: dict[str, torch.Tensor], n_audio_head: int | None = None, source: str = "checkpoint"
) -> S3Tokenizer:
    """Build the model the weights describe and load them strictly (missing or extra keys raise, by name)."""
    from zoo.hub import load_state_dict_strict

    model = S3Tokenizer(config_from_state(variant, state, n_audio_head))
    load_state_dict_strict(model, {k: v.float() for k, v in state.items()}, source)
    return model.eval()


def upstream_fixture_model(folder: Path) -> S3Tokenizer:
    """A parity fixture folder (config.json + upstream-named weights.safetensors) as our model."""
    from zoo.hub import read_safetensors

    info = json.loads((Path(folder) / "config.json").read_text())
    state = read_safetensors(Path(folder) / "weights.safetensors")
    model = model_from_state(info["variant"], state, info["config"]["n_audio_head"], "weights.safetensors")
    declared = info["config"]
    for field in ("n_mels", "n_audio_state", "n_audio_layer", "n_codebook_size"):
        if getattr(model.config, field) != declared[field]:
            raise ConfigError(
                f"{folder}: config.json says {field}={declared[field]} but the weights give "
                f"{getattr(model.config, field)}"
            )
    return model


# ---- the converter ------------------------------------------------------------------------------
def convert_checkpoint(arch: str, src: Path, out: Path, **options: Any) -> Path:
    """Convert an upstream S3Tokenizer checkpoint into a tokenzoo folder (README.md, config.json, model.safetensors).

    Args:
        arch: "s3tokenizer", or "s3tokenizer-v1" / "-v1_25hz" / "-v2" / "-v3" to state the variant.
        src: a released ONNX file, or an upstream-named state dict (.safetensors; .pt/.pth read with
            ``torch.load(weights_only=True)``).
        out: the folder to write.
        options: ``variant`` (overrides everything else), ``n_audio_head`` (default n_audio_state // 64),
            ``name`` (card title).
    """
    src, out = Path(src), Path(out)
    if not arch.startswith("s3tokenizer"):
        raise ConfigError(f"audio.s3tokenizer.convert handles arch 's3tokenizer[-variant]', not {arch!r}")
    unknown = sorted(set(options) - {"variant", "n_audio_head", "name"})
    if unknown:
        raise ConfigError(f"unknown convert options for s3tokenizer: {', '.join(unknown)}")
    if not src.is_file():
        raise InputError(f"checkpoint not found: {src}")
    facts: dict[str, Any] = {}
    if src.suffix == ".onnx":
        state, facts = read_onnx_state_dict(src)
    elif src.suffix == ".safetensors":
        from zoo.hub import read_safetensors

        state = read_safetensors(src)
    elif src.suffix in (".pt", ".pth", ".bin"):
        from zoo.pickles import load_weights_only

        state = load_weights_only(src)  # upstream's onnx2torch output: a bare state_dict
    else:
        raise InputError(f"{src.name}: expected an .onnx, .safetensors or .pt checkpoint")
    variant = resolve_variant(arch, src, state, facts, options.get("variant"))
    model = model_from_state(variant, state, options.get("n_audio_head"), src.name)
    digest = sha256_file(src)
    from zoo.cards import make_card

    name = options.get("name", f"s3tokenizer-{variant}")
    card = make_card(
        name=name,
        arch="s3tokenizer",
        modality="audio",
        license="apache-2.0",
        summary=f"S3Tokenizer {variant} ({model.token_rate} tokens/s, {model.codebook_size} ids), converted here.",
        upstream_repo="xingchensong/S3Tokenizer",
        weights=f"Converted from {src.name} (sha256 {digest}) by audio.s3tokenizer.convert (variant {variant}).",
        source_sha256=digest,
    )
    model.save_pretrained(out, card=card)
    logger.info("converted %s (%s) to %s", src, variant, out)
    return out
