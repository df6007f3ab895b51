"""Upstream FlexTok checkpoints -> tokenzoo.

Upstream (apple/ml-flextok) describes a model as a nested Hydra config of ``_target_`` dicts and
stores it twice: in ``config.json`` (the PyTorchModelHubMixin convention) and as ``str(dict)`` values
in the safetensors ``__metadata__``. We never instantiate anything from it. ``parse_upstream_config``
walks the dict, accepts only the class names in ``ALLOWED_TARGETS``, checks every setting our
reimplementation depends on, and returns a ``FlexTokConfig``. Sizes the config leaves out (the VAE
widths come from a module-level dict upstream) are read from the weight shapes.

Weights map by the prefix table ``UPSTREAM_TO_ZOO``; a key that matches no rule is an error, and
no key is dropped.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vision.flextok.model import LICENSE_NOTE, FlexTok, FlexTokConfig
from zoo.errors import CheckpointMismatchError, ConfigError, ModelFileNotFoundError

# Bump when a change here changes what a conversion writes (the official-model cache keys on it).
CONVERTER_VERSION = 1
UP = "flextok."
# Every class a released FlexTok config may name (module path -> role). Anything else is refused.
ALLOWED_TARGETS = {
    UP + "flextok_wrapper.FlexTok": "model",
    UP + "flextok_wrapper.FlexTokFromHub": "model",
    UP + "vae_wrapper.StableDiffusionVAE": "vae",
    UP + "model.utils.wrappers.SequentialModuleDictWrapper": "sequence",
    UP + "model.utils.dict_ops.PerSampleOp": "per_sample_op",
    UP + "model.utils.dict_ops.channels_first_to_last": "channels_first_to_last",
    UP + "model.utils.dict_ops.channels_last_to_first": "channels_last_to_first",
    UP + "model.preprocessors.patching.PatchEmbedder": "patch_embedder",
    UP + "model.utils.posembs.PositionalEmbeddingAdder": "posemb",
    UP + "model.preprocessors.registers.Registers1D": "registers",
    UP + "model.preprocessors.flex_seq_packing.BlockWiseSequencePacker": "packer",
    UP + "model.trunks.transformers.FlexTransformer": "transformer",
    UP + "model.postprocessors.seq_unpacking.SequenceUnpacker": "unpacker",
    UP + "model.postprocessors.heads.LinearHead": "linear_head",
    UP + "model.postprocessors.heads.ToPatchesLinearHead": "to_patches_head",
    UP + "model.preprocessors.linear.LinearLayer": "linear",
    UP + "model.preprocessors.token_dropout.MaskedNestedDropout": "nested_dropout",
    UP + "model.preprocessors.nullcond.LearnedNullCond": "learned_null",
    UP + "model.preprocessors.nullcond.ZeroNullCond": "zero_null",
    UP + "model.preprocessors.time_embedding.TimestepEmbedder": "time_embedder",
    UP + "regularizers.quantize_fsq.FSQ": "fsq",
    UP + "flow_matching.noise_modules.MinRFNoiseModule": "noise_module",
    UP + "flow_matching.pipelines.MinRFPipeline": "pipeline",
}

# The module graph our model implements, in upstream's order: module key -> allowed roles.
ENCODER_MODULES = {
    "enc_channels_to_last": {"per_sample_op"},
    "enc_patch_emb": {"patch_embedder"},
    "enc_posemb_module": {"posemb"},
    "enc_register_module": {"registers"},
    "enc_seq_packer": {"packer"},
    "enc_transformer": {"transformer"},
    "enc_unpacker": {"unpacker"},
    "enc_to_latents": {"linear_head"},
}
DECODER_MODULES = {
    "dec_from_latents": {"linear"},
    "dec_registers_posemb_module": {"posemb"},
    "dec_nested_dropout": {"nested_dropout"},
    "dec_latent_dropout": {"learned_null", "zero_null"},
    "dec_noise_channels_to_last": {"per_sample_op"},
    "dec_noise_patch_emb": {"patch_embedder"},
    "dec_patches_posemb_module": {"posemb"},
    "dec_seq_packer": {"packer"},
    "dec_time_embedder": {"time_embedder"},
    "dec_transformer": {"transformer"},
    "dec_unpacker": {"unpacker"},
    "dec_to_patches": {"to_patches_head"},
    "dec_channels_to_first": {"per_sample_op"},
}

# Upstream state_dict prefix -> ours. Complete: every upstream tensor matches exactly one rule.
UPSTREAM_TO_ZOO = [
    ("vae.vae.", "vae."),
    ("encoder.module_dict.enc_patch_emb.patch_proj.", "encoder.patch_proj."),
    ("encoder.module_dict.enc_posemb_module.posembs", "encoder.patch_posemb"),
    ("encoder.module_dict.enc_register_module.registers", "encoder.registers"),
    ("encoder.module_dict.enc_transformer.blocks.", "encoder.transformer.blocks."),
    ("encoder.module_dict.enc_to_latents.proj.", "encoder.to_latents."),
    ("decoder.module_dict.dec_from_latents.proj.", "decoder.from_latents."),
    ("decoder.module_dict.dec_registers_posemb_module.posembs", "decoder.register_posemb"),
    ("decoder.module_dict.dec_nested_dropout.dropout_mask_token", "decoder.mask_token"),
    ("decoder.module_dict.dec_latent_dropout.nullcond", "decoder.null_cond"),
    ("decoder.module_dict.dec_noise_patch_emb.patch_proj.", "decoder.patch_proj."),
    ("decoder.module_dict.dec_patches_posemb_module.posembs", "decoder.patch_posemb"),
    ("decoder.module_dict.dec_time_embedder.mlp.", "decoder.time_embedder.mlp."),
    ("decoder.module_dict.dec_transformer.blocks.", "decoder.transformer.blocks."),
    ("decoder.module_dict.dec_to_patches.proj.", "decoder.to_patches."),
]
TOP_LEVEL_KEYS = ("vae", "encoder", "decoder", "regularizer", "flow_matching_noise_module", "pipeline")


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"upstream FlexTok config, {where}: {problem}")


def check_targets(node: Any, where: str = "config") -> None:
    """Raise unless every ``_target_`` anywhere in ``node`` is in ALLOWED_TARGETS."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and target not in ALLOWED_TARGETS:
            raise _fail(where, f"_target_ {target!r} is not an allowed FlexTok class (refusing to build it)")
        for key, value in node.items():
            check_targets(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")


def _role(node: Any, where: str) -> str:
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise _fail(where, "expected a dict with a _target_")
    return ALLOWED_TARGETS[node["_target_"]]


def _expect(node: Mapping, key: str, allowed: tuple, where: str, default: Any = None) -> Any:
    value = node.get(key, default)
    if value not in allowed:
        raise _fail(f"{where}.{key}", f"{value!r} is not supported (this reimplementation handles {list(allowed)})")
    return value


def _modules(node: Any, expected: dict[str, set[str]], where: str) -> dict[str, Mapping]:
    if _role(node, where) != "sequence":
        raise _fail(where, "expected a SequentialModuleDictWrapper")
    modules = node.get("module_dict")
    if not isinstance(modules, Mapping):
        raise _fail(where, "has no module_dict")
    if list(modules) != list(expected):
        raise _fail(where, f"module keys {list(modules)} differ from the known graph {list(expected)}")
    for key, roles in expected.items():
        if _role(modules[key], f"{where}.{key}") not in roles:
            raise _fail(f"{where}.{key}", f"{modules[key]['_target_']} where {sorted(roles)} was expected")
    return modules


def _check_transformer(node: Mapping, where: str, adaln: bool) -> None:
    for key, ok in (("qkv_bias", (False,)), ("proj_bias", (False,)), ("mlp_bias", (False,))):
        _expect(node, key, ok, where, default=False)
    _expect(node, "gated_mlp", (True,), where)
    _expect(node, "qk_norm", (True,), where)
    _expect(node, "use_act_checkpoint", (False, None), where)
    if not adaln and "adaLN_expansion" in node:
        raise _fail(where, "adaLN in the encoder is not supported")


def parse_upstream_config(
    config: Mapping[str, Any], vae_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> FlexTokConfig:
    """The nested upstream ``_target_`` dict (+ VAE weight shapes) -> FlexTokConfig, validated.

    ``vae_shapes`` maps upstream VAE keys (``vae.vae.*``) to shapes; the VAE widths and depth come
    from them because upstream keeps them outside the config. Without it the SDXL-VAE defaults apply.
    """
    check_targets(config)
    missing = [k for k in ("vae", "encoder", "decoder", "regularizer") if k not in config]
    if missing:
        raise _fail("top level", f"missing {missing}")
    vae = config["vae"]
    if _role(vae, "vae") != "vae":
        raise _fail("vae", "expected StableDiffusionVAE")
    if vae.get("hf_hub_path"):
        raise _fail("vae.hf_hub_path", "a VAE fetched from another repo at build time is not supported")
    if vae.get("scaling_factor") is None:
        raise _fail("vae.scaling_factor", "must be given (the zoo never guesses it)")
    enc = _modules(config["encoder"], ENCODER_MODULES, "encoder")
    dec = _modules(config["decoder"], DECODER_MODULES, "decoder")
    fsq = config["regularizer"]
    if _role(fsq, "regularizer") != "fsq":
        raise _fail("regularizer", "expected FSQ")

    patch = enc["enc_patch_emb"]
    for name, node in (("encoder.enc_patch_emb", patch), ("decoder.dec_noise_patch_emb", dec["dec_noise_patch_emb"])):
        _expect(node, "flatten_patches", (False,), name, default=False)
    if list(dec["dec_noise_patch_emb"]["patch_sizes"]) != list(patch["patch_sizes"]):
        raise _fail("decoder.dec_noise_patch_emb.patch_sizes", "differs from the encoder's")
    for name in ("enc_posemb_module",):
        _expect(enc[name], "posemb_type", ("sincos",), f"encoder.{name}")
        _expect(enc[name], "posemb_scaling", ("absolute",), f"encoder.{name}", default="absolute")
    _expect(dec["dec_patches_posemb_module"], "posemb_type", ("sincos",), "decoder.dec_patches_posemb_module")
    register_pos = dec["dec_registers_posemb_module"]
    _expect(register_pos, "posemb_type", ("learnable_sum",), "decoder.dec_registers_posemb_module")
    if list(dec["dec_patches_posemb_module"]["max_sizes"]) != list(enc["enc_posemb_module"]["max_sizes"]):
        raise _fail("decoder.dec_patches_posemb_module.max_sizes", "differs from the encoder's")
    _expect(enc["enc_register_module"], "ordering_mode", ("nested",), "encoder.enc_register_module")
    _expect(enc["enc_seq_packer"], "mask_mode", ("causal_last",), "encoder.enc_seq_packer")
    _expect(dec["dec_seq_packer"], "mask_mode", ("full",), "decoder.dec_seq_packer")
    _expect(dec["dec_seq_packer"], "per_subseq_embs", (True,), "decoder.dec_seq_packer")
    _expect(enc["enc_to_latents"], "use_mup_readout", (False,), "encoder.enc_to_latents", default=False)
    _expect(dec["dec_to_patches"], "use_mup_readout", (False,), "decoder.dec_to_patches", default=False)
    for side, modules, key in (("enc", enc, "enc_channels_to_last"), ("dec", dec, "dec_noise_channels_to_last")):
        op = modules[key].get("per_sample_op", {})
        if _role(op, f"{side}.{key}.per_sample_op") != "channels_first_to_last":
            raise _fail(f"{key}.per_sample_op", "expected channels_first_to_last")
    if _role(dec["dec_channels_to_first"].get("per_sample_op", {}), "dec_channels_to_first") != (
        "channels_last_to_first"
    ):
        raise _fail("dec_channels_to_first.per_sample_op", "expected channels_last_to_first")
    et, dt = enc["enc_transformer"], dec["dec_transformer"]
    _check_transformer(et, "encoder.enc_transformer", adaln=False)
    _check_transformer(dt, "decoder.dec_transformer", adaln=True)
    if float(et.get("mlp_ratio", 4.0)) != float(dt.get("mlp_ratio", 4.0)):
        raise _fail("decoder.dec_transformer.mlp_ratio", "differs from the encoder's")
    time = dec["dec_time_embedder"]
    levels = tuple(int(v) for v in fsq["levels"])
    if int(enc["enc_to_latents"]["dim_out"]) != len(levels) or int(dec["dec_from_latents"]["dim_in"]) != len(levels):
        raise _fail("enc_to_latents.dim_out / dec_from_latents.dim_in", f"must equal len(levels) = {len(levels)}")
    latent_channels = int(vae["latent_channels"])
    for name, node in (("enc_patch_emb", patch), ("dec_noise_patch_emb", dec["dec_noise_patch_emb"])):
        if int(node["channels_in"]) != latent_channels:
            raise _fail(f"{name}.channels_in", f"{node['channels_in']} != vae.latent_channels {latent_channels}")

    fields: dict[str, Any] = dict(
        latent_channels=latent_channels,
        vae_scaling_factor=float(vae["scaling_factor"]),
        vae_sample_posterior=bool(vae.get("sample_posterior", True)),
        patch_size=tuple(int(v) for v in patch["patch_sizes"]),
        posemb_grid=tuple(int(v) for v in enc["enc_posemb_module"]["max_sizes"]),
        encoder_dim=int(et["dim"]),
        encoder_depth=int(et["depth"]),
        encoder_head_dim=int(et.get("head_dim", 64)),
        decoder_dim=int(dt["dim"]),
        decoder_depth=int(dt["depth"]),
        decoder_head_dim=int(dt.get("head_dim", 64)),
        mlp_ratio=float(et.get("mlp_ratio", 4.0)),
        num_registers=int(enc["enc_register_module"]["n_max"]),
        fsq_levels=levels,
        null_condition="learned" if _role(dec["dec_latent_dropout"], "") == "learned_null" else "zero",
        adaln_groups=int(dt.get("adaLN_expansion", 1)),
        time_frequency_dim=int(time.get("frequency_embedding_size", 256)),
        time_max_period=float(time.get("max_period", 256)),
        max_timestep=float(time.get("max_timestep", 1.0)),
    )
    if vae_shapes:
        fields.update(vae_structure_from_shapes(vae_shapes))
    return FlexTokConfig(**fields)


def vae_structure_from_shapes(shapes: Mapping[str, tuple[int, ...]], prefix: str = "vae.vae.") -> dict[str, Any]:
    """AutoencoderKL widths, depth and group count from its weight shapes."""
    widths: dict[int, int] = {}
    resnets: dict[int, set[int]] = {}
    pattern = re.compile(re.escape(prefix) + r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.conv1\.weight")
    for key, shape in shapes.items():
        m = pattern.fullmatch(key)
        if m:
            level, j = int(m.group(1)), int(m.group(2))
            resnets.setdefault(level, set()).add(j)
            if j == 0:
                widths[level] = int(shape[0])
    if not widths:
        raise ConfigError("cannot read the VAE structure: no encoder.down_blocks.*.resnets.0.conv1.weight found")
    block_out = tuple(widths[i] for i in range(len(widths)))
    return dict(vae_block_out_channels=block_out, vae_layers_per_block=len(resnets[0]))


def map_upstream_key(key: str) -> str:
    for old, new in UPSTREAM_TO_ZOO:
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old) :]
    raise CheckpointMismatchError("flextok", "model.safetensors", unexpected=[key])


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream FlexTok state_dict -> ours (a pure rename; nothing is dropped)."""
    return {map_upstream_key(k): v for k, v in state.items()}


# ---- upstream files -----------------------------------------------------------------------------
def read_upstream_metadata(path: Path) -> dict[str, Any]:
    """The config stored in an upstream safetensors ``__metadata__`` (``str(dict)`` per key), parsed
    with ``ast.literal_eval`` (literals only, never code)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    config: dict[str, Any] = {}
    for key, text in meta.items():
        if key == "format":
            continue
        try:
            config[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            config[key] = text  # plain strings (such as the top-level _target_) are stored as is
    return config


def upstream_config_from_folder(folder: Path) -> dict[str, Any]:
    """config.json of an upstream Hub repo (``{"config": {...}}`` or the dict itself), else the metadata."""
    config_path = folder / "config.json"
    if config_path.is_file():
        data = json.loads(config_path.read_text())
        if isinstance(data.get("config"), Mapping):
            data = data["config"]
        if any(k in data for k in TOP_LEVEL_KEYS):
            return data
    return read_upstream_metadata(folder / "model.safetensors")


def is_upstream_folder(folder: Path) -> bool:
    config_path = Path(folder) / "config.json"
    try:
        data = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    if "arch" in data:
        return False
    data = data.get("config", data) if isinstance(data, Mapping) else {}
    return isinstance(data, Mapping) and "encoder" in data and "decoder" in data


def load_upstream(
    weights: Path, config: Mapping[str, Any] | None = None, source: str | None = None, revision: str | None = None
) -> FlexTok:
    """Build our model from an upstream safetensors file (config from ``config`` or its metadata)."""
    from safetensors import safe_open

    from zoo.hub import load_state_dict_strict, read_safetensors

    weights = Path(weights)
    if not weights.is_file():
        raise ModelFileNotFoundError(source or str(weights.parent), weights.name, revision)
    if config is None:
        config = read_upstream_metadata(weights)
    with safe_open(str(weights), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("vae.vae.")}
    model = FlexTok(parse_upstream_config(config, shapes))
    state = convert_state_dict(read_safetensors(weights, source))
    load_state_dict_strict(model, state, weights.name, source)
    return model.eval()


def load_upstream_folder(folder: Path, source: str | None = None, revision: str | None = None) -> FlexTok:
    folder = Path(folder)
    return load_upstream(folder / "model.safetensors", upstream_config_from_folder(folder), source, revision)


def convert_checkpoint(arch: str, src: Path, out: Path, **options: Any) -> Path:
    """Upstream folder (config.json + model.safetensors) or bare safetensors file -> zoo model folder.

    Options: ``name`` (card title), ``hub_repo``/``revision`` (recorded in the card).
    """
    from zoo.cards import make_card

    if arch != "flextok":
        raise ConfigError(f"vision.flextok.convert handles arch 'flextok', not {arch!r}")
    src = Path(src)
    model = load_upstream_folder(src) if src.is_dir() else load_upstream(src)
    name = options.get("name", src.stem if src.is_file() else src.name)
    card = make_card(
        name=name,
        arch="flextok",
        modality="image",
        license="apple-amlr",
        summary=f"FlexTok converted from an upstream checkpoint. {LICENSE_NOTE}",
        upstream_repo="apple/ml-flextok",
        hub_repo=options.get("hub_repo"),
        revision=options.get("revision"),
        weights=f"converted by vision/flextok/convert.py from {src.name}",
    )
    model.save_pretrained(out, card=card)
    return Path(out)
