"""One behaviour test over every bundled model, as timm's tests/test_models.py is over ``list_models()``.

For each model whose files ship in hub_cards/ (``zoo.registry.bundled_models``), on its own sample
inputs: encode shapes and masks, no NaN in tokens or decoded tensors, the same tokens on every call
and for an item alone as in a batch, equal outputs after save_pretrained -> load, a meta-device load
equal to a normal build, bfloat16 runs, and the declared capabilities (``supports_decode``,
``supports_training``, ``tasks``) tell the truth. A new family is covered the moment its tiny model is bundled.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import pytest
import torch

import zoo
from zoo.api import TASKS, Tokens
from zoo.errors import NotSupportedError
from zoo.registry import bundled_models

MODELS = bundled_models()
# Batching changes the order of float reductions in the encoders; ids must match exactly, and
# embeddings to float32 noise at the size of the tiny models' activations.
ATOL = RTOL = 1e-4


@functools.cache
def loaded(name: str):
    """One loaded copy per model for the read-only tests (tests that change a model load their own)."""
    return zoo.load(name)


def samples(model, count: int = 1) -> list:
    items = model.sample_inputs()[:count]
    assert items, f"{model.arch} offers no sample inputs; a bundled model must"
    return items


def valid(tokens: Tokens, row: int) -> dict[str, torch.Tensor]:
    """Sample ``row``'s valid positions, and its per-sample meta tensors."""
    n = int(tokens.lengths[row])
    out = {k: v[row] for k, v in tokens.meta.items() if isinstance(v, torch.Tensor)}
    if tokens.ids is not None:
        out["ids"] = tokens.ids[row][tokens.mask[row]]
    if tokens.embeddings is not None:
        out["embeddings"] = tokens.embeddings[row][tokens.mask[row]]
    out["length"] = torch.tensor(n)
    return out


def assert_same_tokens(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = False):
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point() and not exact:
            torch.testing.assert_close(a[key], b[key], atol=ATOL, rtol=RTOL, msg=lambda m, key=key: f"{key}: {m}")
        else:
            assert torch.equal(a[key], b[key]), key


def files_of(items: list) -> list:
    return [os.fspath(p) for p in items if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]


@pytest.mark.parametrize("name", MODELS)
def test_encode_gives_valid_tokens_with_masks_and_no_nan(name):
    model = loaded(name)
    items = samples(model, 2)
    tokens = model.encode(model.collate(items))
    assert isinstance(tokens, Tokens) and tokens.batch_size == len(items)
    assert tokens.mask.dtype == torch.bool and tokens.mask.shape == (len(items), tokens.num_positions)
    assert bool((tokens.lengths >= 1).all())
    if tokens.ids is not None:
        assert tokens.ids.dtype == torch.int64
        k = model.codebook_size
        assert k is not None and 0 <= int(tokens.ids[tokens.mask].min()) and int(tokens.ids[tokens.mask].max()) < k
    if tokens.embeddings is not None:
        assert tokens.embeddings.is_floating_point() and bool(torch.isfinite(tokens.embeddings).all())
        assert model.codebook_size is None or tokens.ids is not None


@pytest.mark.parametrize("name", MODELS)
def test_the_same_items_give_the_same_tokens_on_every_call_and_alone_as_in_a_batch(name):
    model = loaded(name)
    items = samples(model, 2)
    batch = model.encode(model.collate(items))
    again = model.encode(model.collate(items))
    for row in range(len(items)):
        assert_same_tokens(valid(batch, row), valid(again, row), exact=True)
        alone = model.encode(model.collate([items[row]]))
        assert_same_tokens(valid(alone, 0), valid(batch, row))


@pytest.mark.parametrize("name", MODELS)
def test_save_pretrained_then_load_gives_the_same_tokens(name, tmp_path):
    model = loaded(name)
    items = samples(model)
    reloaded = zoo.load(model.save_pretrained(tmp_path / name))
    assert type(reloaded) is type(model) and reloaded.config == model.config
    before, after = model.encode(model.collate(items)), reloaded.encode(reloaded.collate(items))
    for row in range(len(items)):
        assert_same_tokens(valid(before, row), valid(after, row), exact=True)


@pytest.mark.parametrize("name", MODELS)
def test_a_meta_device_load_equals_a_normal_build_with_the_same_state(name):
    model = loaded(name)
    assert all(t.device.type != "meta" for t in [*model.parameters(), *model.buffers()])
    if not list(model.parameters()):  # the text tokenizers: their state is a tokenizer file
        assert model.state_dict() == {}
        return
    torch.manual_seed(0)
    built = type(model)(model.config)
    built.load_state_dict(model.state_dict())
    built.eval()
    buffers = dict(model.named_buffers())  # non-persistent ones too: they were computed, not loaded
    assert buffers.keys() == dict(built.named_buffers()).keys()
    assert all(torch.equal(buffers[k], b) for k, b in built.named_buffers())
    items = samples(model)
    ours, theirs = model.encode(model.collate(items)), built.encode(built.collate(items))
    for row in range(len(items)):
        assert_same_tokens(valid(ours, row), valid(theirs, row), exact=True)


@pytest.mark.parametrize("name", MODELS)
def test_a_bfloat16_model_encodes(name):
    model = zoo.load(name).to(dtype=torch.bfloat16)
    tokens = model.encode(model.collate(samples(model)))
    assert int(tokens.lengths[0]) >= 1
    if tokens.embeddings is not None:
        assert bool(torch.isfinite(tokens.embeddings.float()).all())
    if any(True for _ in model.parameters()):
        assert zoo.load(name, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("name", MODELS)
def test_decode_works_exactly_when_the_model_declares_it(name):
    model = loaded(name)
    items = samples(model)
    batch = model.collate(items)
    tokens = model.encode(batch)
    if model.supports_decode:
        decoded = model.decode(tokens)
        if isinstance(decoded, torch.Tensor) and decoded.is_floating_point():  # images, poses, waveforms
            assert decoded.shape[0] == len(items) and bool(torch.isfinite(decoded).all())
        assert len(model.reconstruct(batch, tokens)) == len(items)
    else:
        with pytest.raises(NotSupportedError):
            model.decode(tokens)


@pytest.mark.parametrize("name", MODELS)
def test_training_works_exactly_when_the_model_declares_it(name):
    model = zoo.load(name)
    files = files_of(samples(model))
    if not model.supports_training:
        with pytest.raises(NotSupportedError):
            model.training_loss(model.training_batch(files or samples(model)))
        return
    assert files, f"{name} supports training, so its sample inputs must be files that hold training targets"
    model.train()
    loss = model.training_loss(model.training_batch([model.load_item(p) for p in files]))
    assert loss.dim() == 0 and math.isfinite(float(loss.detach())) and loss.requires_grad
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("verb", TASKS)
def test_a_task_verb_works_exactly_when_the_model_declares_it(name, verb):
    model = loaded(name)
    batch = model.collate(samples(model))
    if verb not in model.tasks:
        with pytest.raises(NotSupportedError, match=verb):
            getattr(model, verb)(batch)
        return
    out = getattr(model, verb)(batch)
    assert isinstance(out, torch.Tensor) and out.numel() > 0
    if out.is_floating_point():
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", MODELS)
def test_continuous_tokens_can_be_used_in_autograd_after_encode(name):
    model = loaded(name)
    tokens = model.encode(model.collate(samples(model)))
    if tokens.embeddings is None:  # discrete ids only: nothing to differentiate
        assert tokens.ids is not None
        return
    weight = torch.ones(tokens.embeddings.shape[-1], requires_grad=True)
    (tokens.embeddings @ weight).sum().backward()  # inference-mode tensors would refuse this
    assert weight.grad is not None
