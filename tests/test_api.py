"""The zoo contract: Tokens, ZooModel files and configs, the registry, and one test over every bundled model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import zoo
from tests.fakes import TinyConfig, TinyModel, seeded
from zoo.api import MODALITIES, Tokens, ZooModel, config_from_dict
from zoo.cards import REQUIRED_FIELDS, card_problems, make_card
from zoo.errors import (
    ConfigError,
    CorruptFileError,
    InputError,
    InputFileError,
    ModelFileNotFoundError,
    NotSupportedError,
    UnknownModelError,
)
from zoo.registry import ARCHITECTURES, _card_folders, card_data, get_arch, parse_source, register_arch

ROOT = Path(__file__).resolve().parent.parent
IDS = torch.zeros(2, 3, dtype=torch.int64)


def tokens(batch=3, n=5, dim=None, meta=None) -> Tokens:
    ids = torch.arange(batch * n, dtype=torch.int64).reshape(batch, n)
    mask = torch.arange(n)[None, :] < torch.arange(1, batch + 1)[:, None].clamp(max=n)  # lengths 1, 2, 3...
    embeddings = None if dim is None else torch.randn(batch, n, dim)
    return Tokens(ids=ids, embeddings=embeddings, mask=mask, meta=dict(meta or {}))


# ---- Tokens: validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "both are None"),
        ({"ids": torch.zeros(4, dtype=torch.int64)}, r"Tokens.ids must be \(B, N\)"),
        ({"ids": torch.zeros(2, 3, dtype=torch.int32)}, "must be int64"),
        ({"embeddings": torch.zeros(2, 3)}, r"must be \(B, N, D\)"),
        ({"embeddings": torch.zeros(2, 3, 4, dtype=torch.int64)}, "must be floating point"),
        ({"ids": IDS, "embeddings": torch.zeros(2, 4, 8)}, "disagree on"),
        ({"ids": IDS, "mask": torch.ones(2, 3, dtype=torch.int64)}, "mask must be bool"),
        ({"ids": IDS, "mask": torch.ones(2, 4, dtype=torch.bool)}, "mask must be bool"),
        ({"ids": IDS, "meta": {"size": torch.zeros(3, 2)}}, "leading batch dimension"),
        ({"ids": IDS, "meta": {"rate": torch.tensor(16000)}}, "leading batch dimension"),
    ],
    ids=[
        "nothing",
        "ids-1d",
        "ids-int32",
        "emb-2d",
        "emb-int",
        "ids-emb-shape",
        "mask-dtype",
        "mask-shape",
        "meta-batch",
        "meta-scalar",
    ],
)
def test_tokens_refuse_malformed_fields_with_a_message_naming_them(kwargs, message):
    with pytest.raises(InputError, match=message):
        Tokens(**kwargs)


def test_tokens_default_mask_is_all_true():
    t = Tokens(ids=torch.zeros(2, 3, dtype=torch.int64))
    assert t.mask.dtype == torch.bool and t.mask.all() and t.lengths.tolist() == [3, 3]


def test_lengths_count_the_valid_positions_of_each_sample():
    assert tokens(batch=3, n=5).lengths.tolist() == [1, 2, 3]


# ---- Tokens: moving and slicing -----------------------------------------------------------------
def test_to_changes_the_dtype_of_embeddings_only():
    t = tokens(dim=4, meta={"scale": torch.ones(3, dtype=torch.float32), "rate": 16000}).to(dtype=torch.float64)
    assert t.embeddings.dtype == torch.float64
    assert t.ids.dtype == torch.int64 and t.mask.dtype == torch.bool
    assert t.meta["scale"].dtype == torch.float32 and t.meta["rate"] == 16000


def test_to_moves_every_tensor_including_meta():
    t = tokens(dim=4, meta={"scale": torch.ones(3)}).to("meta")
    assert {x.device.type for x in (t.ids, t.embeddings, t.mask, t.meta["scale"])} == {"meta"}


def test_an_int_index_keeps_the_batch_dimension_and_slices_per_sample_meta():
    t = tokens(meta={"size": torch.tensor([[1, 1], [2, 2], [3, 3]]), "rate": 16000})
    one = t[1]
    assert one.ids.shape == (1, 5) and one.lengths.tolist() == [2]
    assert one.meta["size"].tolist() == [[2, 2]] and one.meta["rate"] == 16000
    assert t[-1].lengths.tolist() == [3]


def test_a_slice_selects_samples():
    t = tokens()[1:]
    assert t.batch_size == 2 and t.lengths.tolist() == [2, 3]


def test_an_out_of_range_index_raises_index_error():
    with pytest.raises(IndexError, match="out of range"):
        tokens()[3]


def test_truncate_keeps_the_first_n_positions():
    t = tokens(dim=2).truncate(2)
    assert t.ids.shape == (3, 2) and t.embeddings.shape == (3, 2, 2) and t.lengths.tolist() == [1, 2, 2]


@pytest.mark.parametrize("n", [0, 6])
def test_truncate_outside_1_to_n_is_an_input_error(n):
    with pytest.raises(InputError, match="choose 1..5"):
        tokens().truncate(n)


def test_cat_joins_batches_and_their_per_sample_meta():
    a = tokens(batch=2, meta={"size": torch.zeros(2, 2), "rate": 16000})
    b = tokens(batch=3, meta={"size": torch.ones(3, 2), "rate": 16000})
    joined = Tokens.cat([a, b])
    assert joined.batch_size == 5 and joined.meta["size"].shape == (5, 2) and joined.meta["rate"] == 16000
    assert torch.equal(joined.ids[2:], b.ids)


def test_cat_of_different_lengths_is_an_input_error():
    with pytest.raises(InputError, match="N=4 positions"):
        Tokens.cat([tokens(n=5), tokens(n=4)])


def test_cat_of_different_batch_wide_meta_is_an_input_error():
    with pytest.raises(InputError, match="'rate'"):
        Tokens.cat([tokens(meta={"rate": 16000}), tokens(meta={"rate": 24000})])


def test_cat_of_nothing_is_an_input_error():
    with pytest.raises(InputError, match="at least one"):
        Tokens.cat([])


# ---- Tokens: files ------------------------------------------------------------------------------
def test_save_then_load_round_trips_ids_embeddings_mask_and_meta(tmp_path):
    t = tokens(dim=4, meta={"size": torch.tensor([[1, 2], [3, 4], [5, 6]]), "rate": 16000, "model": "x"})
    back = Tokens.load(t.save(tmp_path / "t.safetensors"))
    assert torch.equal(back.ids, t.ids) and torch.equal(back.embeddings, t.embeddings)
    assert torch.equal(back.mask, t.mask)
    assert torch.equal(back.meta["size"], t.meta["size"])
    assert back.meta["rate"] == 16000 and back.meta["model"] == "x"


def test_save_refuses_meta_that_json_cannot_hold(tmp_path):
    with pytest.raises(InputError, match="JSON"):
        tokens(meta={"bad": object()}).save(tmp_path / "t.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tokens().save(tmp_path / "t.safetensors")
    before = path.read_bytes()

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        tokens(batch=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]


def test_loading_random_bytes_as_tokens_is_a_corrupt_file_error(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(CorruptFileError, match="t.safetensors"):
        Tokens.load(path)


def test_loading_a_truncated_tokens_file_is_a_corrupt_file_error(tmp_path):
    path = tokens().save(tmp_path / "t.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CorruptFileError):
        Tokens.load(path)


def test_loading_a_safetensors_file_that_is_not_tokens_is_a_corrupt_file_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CorruptFileError, match="not a tokenzoo tokens file"):
        Tokens.load(path)


def test_loading_a_missing_tokens_file_names_it(tmp_path):
    with pytest.raises(InputFileError, match="nope.safetensors not found"):
        Tokens.load(tmp_path / "nope.safetensors")


# ---- ZooModel -----------------------------------------------------------------------------------
def test_device_and_dtype_follow_the_parameters():
    model = seeded(0)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.to(torch.float64).dtype == torch.float64


def test_a_constructor_builds_on_the_given_device_in_the_given_dtype():
    model = TinyModel(TinyConfig(), device="meta", dtype=torch.float64)
    assert {p.device.type for p in model.parameters()} == {"meta"} and model.dtype == torch.float64


def test_empty_builds_parameters_on_the_meta_device_without_initialising_them(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: calls.append(t.device.type) or t)
    model = TinyModel.empty(TinyConfig())
    assert {p.device.type for p in model.parameters()} == {"meta"} and set(calls) <= {"meta"}


def test_a_folder_load_assigns_the_checkpoint_tensors_onto_a_meta_build(tmp_path, tiny_arch, monkeypatch):
    folder = seeded(2).save_pretrained(tmp_path / "m")
    built = []
    monkeypatch.setattr(
        TinyModel, "empty", classmethod(lambda cls, config: built.append(config) or cls(config, device="meta"))
    )
    loaded = zoo.load(folder)
    assert built == [TinyConfig()] and {p.device.type for p in loaded.parameters()} == {"cpu"}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in seeded(2).state_dict().items())


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu", 0)])
def test_a_load_onto_any_spelling_of_the_cpu_device_works(tmp_path, tiny_arch, device):
    folder = seeded(3).save_pretrained(tmp_path / "m")
    assert zoo.load(folder, device=device).device.type == "cpu"


def test_weights_stored_in_half_precision_load_in_the_dtype_the_model_declares(tmp_path, tiny_arch):
    folder = seeded(3).to(torch.float16).save_pretrained(tmp_path / "m")
    assert zoo.load(folder).dtype == torch.float32
    assert zoo.load(folder, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_encode_runs_without_autograd_but_its_tokens_can_enter_autograd_afterwards():
    model = seeded(0)
    tokens = model.encode(torch.tensor([[1, 2, 3]]))
    assert not tokens.embeddings.requires_grad and not torch.is_inference(tokens.embeddings)
    weight = torch.ones(tokens.embeddings.shape[-1], requires_grad=True)
    (tokens.embeddings @ weight).sum().backward()
    assert weight.grad is not None


def test_a_task_verb_a_model_does_not_declare_says_so():
    with pytest.raises(NotSupportedError, match="test-tiny .* does not support lift"):
        seeded(0).lift(torch.zeros(1, 4, 17, 2))


def test_a_model_without_parameters_reports_cpu_float32():
    model = zoo.load("byte-utf8")
    assert model.device == torch.device("cpu") and model.dtype == torch.float32


def test_save_pretrained_then_load_round_trips_config_and_weights(tmp_path, tiny_arch):
    model = seeded(1, TinyConfig(vocab_size=8, dim=3))
    folder = model.save_pretrained(tmp_path / "m")
    loaded = zoo.load(folder)
    assert isinstance(loaded, TinyModel) and loaded.config == model.config and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_save_pretrained_writes_card_config_and_weights_with_sorted_config_keys(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config == {"arch": tiny_arch, "dim": 4, "vocab_size": 16} and list(config) == sorted(config)
    assert card_problems(card_data_of(folder)) == []


def card_data_of(folder: Path) -> dict:
    from zoo.cards import read_card_data

    return read_card_data(folder / "README.md")


def test_zoo_load_of_a_folder_applies_dtype(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    assert zoo.load(folder, dtype=torch.float64).dtype == torch.float64


def test_a_config_json_with_an_unknown_key_is_a_config_error_naming_it(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 7}))
    with pytest.raises(ConfigError, match="unknown keys for TinyConfig: hidden_size"):
        zoo.load(folder)


def test_a_config_json_for_another_arch_is_a_config_error(tiny_arch):
    with pytest.raises(ConfigError, match="is for arch 'byte-tokenizer'"):
        TinyModel.from_config_dict({"arch": "byte-tokenizer", "vocab_size": 4, "dim": 2})


def test_an_out_of_range_config_value_is_a_config_error_naming_the_field(tiny_arch):
    with pytest.raises(ConfigError, match="TinyConfig.dim"):
        config_from_dict(TinyConfig, {"dim": 0})


def test_a_config_of_the_wrong_class_is_refused():
    with pytest.raises(ConfigError, match="needs a TinyConfig"):
        TinyModel({"vocab_size": 4})


def test_a_model_without_a_decoder_says_so():
    class EncoderOnly(ZooModel):
        arch, modality = "encoder-only", "image"

    with pytest.raises(NotSupportedError, match="encoder-only has no decoder"):
        EncoderOnly(None).decode(tokens())


def test_a_missing_config_json_in_a_folder_names_it(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFileNotFoundError, match="config.json"):
        zoo.load(folder, arch=tiny_arch)


def test_a_config_json_that_is_not_json_is_a_corrupt_file_error(tmp_path, tiny_arch):
    folder = seeded(0).save_pretrained(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="config.json"):
        zoo.load(folder)


# ---- registry -----------------------------------------------------------------------------------
@pytest.fixture
def cards(tmp_path, monkeypatch) -> Path:
    """A hub_cards/ of three card-only models, used instead of the bundled one."""
    for name, modality in (("alpha-tiny", "image"), ("alpha-base", "audio"), ("beta-tiny", "image")):
        folder = tmp_path / "cards" / name
        folder.mkdir(parents=True)
        card = make_card(
            name=name,
            arch="flextok",
            modality=modality,
            license="apache-2.0",
            summary="a test card",
            weights_hint="convert the upstream checkpoint",
        )
        (folder / "README.md").write_text(str(card))
    monkeypatch.setenv("TOKENZOO_CARDS_DIR", str(tmp_path / "cards"))
    return tmp_path / "cards"


def test_list_models_filters_with_fnmatch_patterns(cards):
    assert zoo.list_models("alpha-*") == ["alpha-base", "alpha-tiny"]
    assert zoo.list_models("*-tiny") == ["alpha-tiny", "beta-tiny"]
    assert zoo.list_models() == ["alpha-base", "alpha-tiny", "beta-tiny"]


def test_list_models_filters_by_modality(cards):
    assert zoo.list_models(modality="image") == ["alpha-tiny", "beta-tiny"]
    assert zoo.list_models("alpha*", modality="audio") == ["alpha-base"]


def test_list_models_refuses_an_unknown_modality():
    with pytest.raises(ConfigError, match="modality 'video'"):
        zoo.list_models(modality="video")


def test_an_unknown_model_name_suggests_close_names(cards):
    with pytest.raises(UnknownModelError) as info:
        zoo.load("alpha-tiyn")
    assert "Did you mean: alpha-tiny" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_a_bare_org_repo_name_suggests_the_hf_hub_prefix():
    with pytest.raises(UnknownModelError, match=r"'hf-hub:some-org/some-model'"):
        zoo.load("some-org/some-model")


def test_a_card_only_model_without_weights_says_how_to_get_them(cards):
    with pytest.raises(ModelFileNotFoundError, match="convert the upstream checkpoint"):
        zoo.load("alpha-tiny")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf-hub:org/repo", ("hub", "org/repo", None)),
        ("hf-hub:org/repo@v1.0", ("hub", "org/repo", "v1.0")),
        ("local-dir:some/folder", ("folder", "some/folder", None)),
        (Path("some/folder"), ("folder", "some/folder", None)),
    ],
)
def test_parse_source_reads_hub_and_folder_prefixes(source, expected):
    assert parse_source(source) == expected


@pytest.mark.parametrize(
    ("source", "revision", "message"),
    [
        ("hf-hub:org/repo@", None, "nothing after '@'"),
        ("hf-hub:org/repo@v1", "v2", "pins revision 'v1' but revision='v2'"),
        ("hf-hub:not a repo", None, "looks like 'org/name'"),
    ],
)
def test_malformed_hub_sources_are_config_errors(source, revision, message):
    with pytest.raises(ConfigError, match=message):
        parse_source(source, revision)


def test_an_unknown_arch_is_an_unknown_model_error_listing_archs():
    with pytest.raises(UnknownModelError, match="unknown architecture 'flextk'. Did you mean: flextok"):
        get_arch("flextk")


def test_a_class_whose_arch_differs_from_its_registry_key_is_refused(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "not-tiny", "tests.fakes:TinyModel")
    with pytest.raises(ConfigError, match="declares arch 'test-tiny', registered as 'not-tiny'"):
        get_arch("not-tiny")


def test_register_arch_refuses_to_silently_replace_an_arch(monkeypatch):
    monkeypatch.setattr("zoo.registry.ARCHITECTURES", dict(ARCHITECTURES))
    with pytest.raises(ConfigError, match="already registered"):
        register_arch("flextok", "somewhere.else:FlexTok")


def test_importing_zoo_imports_no_family_and_no_heavy_dependency():
    script = textwrap.dedent(
        """
        import json, sys
        import zoo
        zoo.list_models()
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    families = {"vision", "video_pose", "audio", "em_volume", "demos", "bench"}
    heavy = {"diffusers", "gradio", "monai", "timm", "transformers", "torchvision", "torchaudio", "accelerate"}
    assert loaded & (families | heavy) == set()


# ---- the contract, for every bundled model ------------------------------------------------------
@pytest.mark.parametrize("name", zoo.list_models())
def test_every_bundled_model_keeps_the_contract(name):
    data = card_data(name)
    assert card_problems(data) == [], f"hub_cards/{name}/README.md: {card_problems(data)}"
    assert all(data.get(field) for field in REQUIRED_FIELDS)
    assert data["library_name"] == "tokenzoo" and data["modality"] in MODALITIES
    assert data["arch"] in ARCHITECTURES
    cls = get_arch(data["arch"])
    assert cls.arch == data["arch"] and cls.modality == data["modality"]
    folder = _card_folders()[name]
    if not (folder / "model.safetensors").is_file():  # an official checkpoint: the card says where it lives
        from zoo.recipes import recipe_of

        assert data.get("hub_repo") or recipe_of(name, data), f"{name}: no weights, no hub_repo, no upstream_files"
        return
    model = zoo.load(name)
    assert isinstance(model, ZooModel) and type(model) is cls and not model.training
    assert json.loads((folder / "config.json").read_text())["arch"] == data["arch"]


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.ones(2, 3, dtype=torch.int64), "must be floating point, got torch.int64"),
        (torch.ones(3), "must have 2 or 3 dimensions, got shape (3,)"),
        (torch.tensor([[1.0, float("nan")]]), "NaN or infinite"),
        (torch.ones(0, 3), "is empty"),
        ([[1.0, 2.0]], "must be a torch.Tensor, got list"),
    ],
)
def test_check_float_tensor_names_the_problem(x, message):
    from zoo.api import check_float_tensor

    with pytest.raises(InputError, match=re.escape(message)):
        check_float_tensor(x, "images", dims=(2, 3))
