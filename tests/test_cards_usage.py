"""Every card's "Use" snippet runs as written for its family, on the bundled tiny model of the same arch.

The snippet is taken from the card's README.md; only the model it loads changes: the card's own name becomes
a bundled tiny model of the same architecture (or, for an arch with none bundled, a small random model saved
to a folder), since official weights cannot be fetched here. It runs in an empty working directory.
"""

from __future__ import annotations

import re

import pytest

import zoo
from zoo.registry import _card_folders, card_data


def _small_random(arch: str):
    """A small model of an arch that has no bundled tiny one."""
    if arch == "flextok-vae":
        from vision.flextok.vae import FlexTokVAE, FlexTokVAEConfig

        return FlexTokVAE(
            FlexTokVAEConfig(block_out_channels=(32, 32), norm_num_groups=8, latent_channels=4, image_size=32)
        )
    if arch == "tpc-mixste":
        from video_pose.hot import TPCMixSTE, TPCMixSTEConfig

        config = dict(num_frames=12, dim=16, mlp_hidden_dim=32, depth=3, num_heads=2, kept_frames=5)
        return TPCMixSTE(TPCMixSTEConfig(**config, prune_before_block=2))
    if arch == "motionbert":
        from video_pose.motionbert import MotionBERT, MotionBERTConfig

        config = dict(num_frames=12, dim=16, mlp_hidden_dim=32, depth=2, num_heads=2, dim_rep=24)
        return MotionBERT(MotionBERTConfig(**config))
    raise AssertionError(f"no small stand-in for arch {arch!r}: bundle a tiny model or add one here")


def stand_in(arch: str, tmp_path) -> str:
    folders = _card_folders()
    bundled = [
        n for n in zoo.list_models() if card_data(n)["arch"] == arch and (folders[n] / "model.safetensors").is_file()
    ]
    if bundled:
        return bundled[0]
    folder = tmp_path / f"small-{arch}"
    _small_random(arch).eval().save_pretrained(folder)
    return str(folder)


def usage_snippet(name: str) -> str:
    text = (_card_folders()[name] / "README.md").read_text()
    match = re.search(r"## Use\n\n```python\n(.*?)```", text, re.S)
    assert match, f"hub_cards/{name}/README.md has no python block under '## Use'"
    return match.group(1)


def snippet_groups() -> dict[tuple[str, str], list[str]]:
    """Cards grouped by (arch, snippet with the model's name taken out): one run checks a whole group."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in zoo.list_models():
        generic = usage_snippet(name).replace(f"zoo.load({name!r})", "zoo.load(NAME)")
        groups.setdefault((card_data(name)["arch"], generic), []).append(name)
    return groups


GROUPS = snippet_groups()


@pytest.mark.parametrize("key", list(GROUPS), ids=[", ".join(names) for names in GROUPS.values()])
def test_the_cards_use_snippet_runs_for_its_family(key, tmp_path, monkeypatch):
    (arch, generic), names = key, GROUPS[key]
    for name in names:
        assert usage_snippet(name).count(f"zoo.load({name!r})") == 1, f"{name}: the snippet should load {name} once"
    assert generic.count("zoo.load(NAME)") == 1
    runnable = generic.replace("zoo.load(NAME)", f"zoo.load({stand_in(arch, tmp_path)!r})")
    monkeypatch.chdir(tmp_path)
    exec(compile(runnable, f"hub_cards/{names[0]}/README.md:Use", "exec"), {})


def test_each_family_has_its_own_verb_in_the_snippet():
    """S3Tokenizer has no pixel-style decode; pose models lift; fine-tuned TokenUnify segments."""
    assert "decode" not in usage_snippet("s3tokenizer-v2").replace("no decode", "")
    assert "model.lift(" in usage_snippet("hot-mixste-h36m-243")
    assert "model.segment(" in usage_snippet("tokenunify-1b")
    assert "model.encode(" in usage_snippet("tokenunify-pretrained-1b")
