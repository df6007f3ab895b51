"""Upstream TouchTTS (wenet-e2e/west) configs and state dicts -> ours.

Parameter names are upstream's (``llm.*`` for the LM; ``llm.model.*``, ``token_encoder.*``,
``time_encoder.*``, ``spk_encoder.*``, ``input_projector.*``, ``mel_projector.*`` for the flow),
so weights load without renaming. What needs translating is configuration: upstream keeps the
transformer shape in a Qwen ``config.json``, the sampling in ``generation_config.json`` and the
flow's options in ``TouchFlowConfig``; ours are dataclasses. The tied ``llm.lm_head.weight`` is
never stored (it is the embedding).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audio.touchtts.flow import FlowConfig, InterpolateRegulator, TouchFlow
from audio.touchtts.lm import LMConfig, SpeechLM
from audio.touchtts.trunk import QwenShape
from zoo.errors import ConfigError

QWEN_SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
)


def qwen_shape_from_upstream(llm_config: Mapping[str, Any], attention: str = "sdpa") -> QwenShape:
    """A Qwen ``config.json`` (as a dict) -> our QwenShape; a Qwen config with sliding windows is refused."""
    if llm_config.get("use_sliding_window"):
        raise ConfigError("Qwen configs with use_sliding_window=true are not supported (TouchTTS uses full attention)")
    if not llm_config.get("tie_word_embeddings", True):
        raise ConfigError("the TouchTTS LM ties its output projection to the embedding (tie_word_embeddings=true)")
    return QwenShape(**{key: llm_config[key] for key in QWEN_SHAPE_KEYS}, attention=attention)


def lm_config_from_upstream(
    llm_config: Mapping[str, Any],
    text_tokens: Sequence[str],
    num_speech_tokens: int,
    generation_config: Mapping[str, Any],
    bos_token: str = "<|im_start|>",
    attention: str = "sdpa",
) -> LMConfig:
    """Qwen config + text vocabulary + generation_config.json -> LMConfig (stop and pad tokens by their ids)."""
    stop_ids = generation_config["eos_token_id"]
    stop_ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
    text_tokens = tuple(text_tokens)
    text_rows = llm_config["vocab_size"] - num_speech_tokens
    if text_rows < len(text_tokens):
        raise ConfigError(
            f"vocab_size {llm_config['vocab_size']} - {num_speech_tokens} speech tokens leaves {text_rows} text rows "
            f"for {len(text_tokens)} text tokens"
        )
    return LMConfig(
        trunk=qwen_shape_from_upstream(llm_config, attention),
        text_tokens=text_tokens,
        text_vocab_size=text_rows,
        num_speech_tokens=num_speech_tokens,
        bos_token=bos_token,
        eos_token=text_tokens[stop_ids[0]],
        pad_token=text_tokens[generation_config["pad_token_id"]],
        stop_tokens=tuple(text_tokens[i] for i in stop_ids),
        temperature=generation_config.get("temperature", 1.0),
        top_k=generation_config.get("top_k", 0),
        top_p=generation_config.get("top_p", 1.0),
        repetition_penalty=generation_config.get("repetition_penalty", 1.0),
    )


# Upstream TouchFlowConfig fields that carry over unchanged.
FLOW_OPTION_KEYS = (
    "num_speech_tokens",
    "sigma_min",
    "training_cfg_rate",
    "inference_cfg_rate",
    "n_timesteps",
    "use_dynamic_chunk",
    "use_dynamic_left_chunk",
    "decoding_chunk_size",
    "static_chunk_size",
    "num_decoding_left_chunks",
    "enable_full_context",
    "max_chunk_size",
)


def flow_config_from_upstream(
    touch_flow_config: Mapping[str, Any], llm_config: Mapping[str, Any], attention: str = "sdpa", **overrides
) -> FlowConfig:
    """Upstream TouchFlowConfig + the Qwen config its trunk is built from -> FlowConfig.

    Upstream's option values are kept, its defaults included (``num_decoding_left_chunks=0``: a
    static chunk without left context); our per-item token interpolation and bias-form mask stay on
    unless ``overrides`` ask for upstream's batched forms.
    """
    scheduler = touch_flow_config.get("t_scheduler", "cosine")
    if scheduler != "cosine":
        raise ConfigError(f"TouchFlowConfig.t_scheduler={scheduler!r}: only the cosine scheduler is implemented")
    options = {key: touch_flow_config[key] for key in FLOW_OPTION_KEYS if key in touch_flow_config}
    return FlowConfig(
        trunk=qwen_shape_from_upstream(llm_config, attention),
        embed_rows=llm_config["vocab_size"],
        **{**options, **overrides},
    )


# ---- parity fixtures (../shared/parity/touchtts) -------------------------------------------------
def _fixture(folder: Path) -> tuple[dict, dict]:
    from zoo.hub import read_safetensors

    folder = Path(folder)
    return json.loads((folder / "config.json").read_text()), read_safetensors(folder / "weights.safetensors")


def upstream_fixture_lm(folder: Path) -> SpeechLM:
    """The ``lm/`` fixture's upstream TouchTTS (config.json + weights.safetensors) as our SpeechLM."""
    from zoo.hub import load_state_dict_strict

    info, state = _fixture(folder)
    constructor = info["constructor"]
    config = lm_config_from_upstream(
        constructor["llm_config"],
        info["tokenizer"]["vocab"],
        info["hyperparameters"]["num_speech_tokens"],
        info["inputs"]["generation_config"],
        bos_token=info["tokenizer"]["bos_token"],
    )
    model = SpeechLM(config)
    load_state_dict_strict(model, state, "weights.safetensors", str(folder))
    return model.eval()


def upstream_fixture_flow(folder: Path, **overrides) -> TouchFlow:
    """The ``flow/`` fixture's upstream TouchFlow as our TouchFlow (``overrides`` replace FlowConfig fields)."""
    from zoo.hub import load_state_dict_strict

    info, state = _fixture(folder)
    constructor = info["constructor"]
    config = flow_config_from_upstream(
        constructor["touch_flow_config"], constructor["llm_config"], constructor.get("attn_implementation", "sdpa"),
        mel_dim=constructor.get("mel_dim", 80), spk_dim=constructor.get("spk_dim", 192), **overrides,
    )  # fmt: skip
    model = TouchFlow(config)
    load_state_dict_strict(model, state, "weights.safetensors", str(folder))
    return model.eval()


def upstream_fixture_regulator(folder: Path, only_interpolate: bool = False) -> InterpolateRegulator:
    """The ``lr/`` fixture's legacy InterpolateRegulator (weights under ``length_regulator.``)."""
    from zoo.hub import load_state_dict_strict

    info, state = _fixture(folder)
    kwargs = info["constructor"]["kwargs"]
    if kwargs.get("out_channels") not in (None, kwargs["channels"]):
        raise ConfigError("InterpolateRegulator with out_channels != channels is not supported")
    regulator = InterpolateRegulator(
        kwargs["channels"], len(kwargs["sampling_ratios"]), kwargs["groups"], only_interpolate=only_interpolate
    )
    if not only_interpolate:
        prefix = "length_regulator."
        load_state_dict_strict(regulator, {k[len(prefix) :]: v for k, v in state.items()}, "weights.safetensors")
    return regulator.eval()
