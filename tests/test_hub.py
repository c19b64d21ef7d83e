"""Saving, strict loading, Hub download, offline fallback and upload of pretrained QGAC models.

Hub behaviour is tested against :class:`hub_server.LocalHub`, a real HTTP server on
127.0.0.1 that ``huggingface_hub`` talks to through ``HF_ENDPOINT`` (its constants,
which the library reads at import, are patched per test).
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import tempfile
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from hub_server import LocalHub
from qgac_transforms import configs, hub, publish
from qgac_transforms.configs import DEFAULT_MODEL, PublishedWeights, load_model
from qgac_transforms.hub import (
    CONFIG_NAME,
    FOLDER_FILES,
    PUBLISHED_FILES,
    TRAINING_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    InvalidWeightsError,
    WeightsNotFoundError,
    save_model,
)
from qgac_transforms.model import QGAC

ROOT = Path(__file__).resolve().parents[1]
#: Small enough that building, saving and hashing take milliseconds.
MINI = dict(block_width=8, features=4, per_frequency=1, manifold_width=4, fusion_width=1, color_width=4)
CARD = {
    "model_name": "qgac-mini",
    "repo_id": "tests/qgac-mini",
    "configuration": "mini",
    "training_data": "synthetic test images (CC0)",
    "datasets": ["tests/synthetic"],
    "steps": {"y": 10, "color": 5},
    "wall_clock_seconds": 4000.0,
    "evaluation_protocol": "Pillow libjpeg 4:2:0; PSNR on RGB; SSIM Gaussian 11x11.",
    "evaluation": [
        {"dataset": "synthetic", "quality": 10, "jpeg_psnr": 25.0, "corrected_psnr": 26.5, "jpeg_ssim": 0.7,
         "images": 3},
        {"dataset": "synthetic", "quality": 50, "jpeg_psnr": 31.25, "corrected_psnr": 32.0, "jpeg_ssim": 0.9,
         "images": 3},
    ],
}


#: The default model's Hub repo, and the commit a published release would pin.
DEFAULT_REPO = configs.MODELS[DEFAULT_MODEL][1].repo_id
PINNED = "0" * 40
PACKAGED = hub.embedded_folder(DEFAULT_MODEL)


@pytest.fixture
def published(monkeypatch):
    """The default model as it will be once uploaded: pinned to a Hub commit, the packaged copy beside."""
    monkeypatch.setitem(configs.MODELS, DEFAULT_MODEL,
                        (configs.MODELS[DEFAULT_MODEL][0],
                         PublishedWeights(DEFAULT_REPO, revision=PINNED, embedded=DEFAULT_MODEL)))


def mini_model(seed: int = 0, **overrides) -> QGAC:
    torch.manual_seed(seed)
    mean = torch.randn(3, 64).tolist()
    std = (torch.rand(3, 64) + 0.5).tolist()
    return QGAC(**{**MINI, "coefficient_mean": mean, "coefficient_std": std, **overrides})


def assert_same_weights(a: QGAC, b: QGAC) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


def saved(tmp_path: Path, model: QGAC | None = None, name: str = "qgac-mini", **card) -> Path:
    return save_model(model or mini_model(), tmp_path / name, card={**CARD, **card})


def rewrite(folder: Path, *, state: dict | None = None, config: dict | None = None) -> None:
    """Replace the weights and/or config keys, keeping the recorded hash consistent."""
    if state is not None:
        save_file(state, str(folder / WEIGHTS_NAME))
    values = json.loads((folder / CONFIG_NAME).read_text())
    values.update(config or {})
    values["weights_sha256"] = hub.sha256_file(folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(values))


@pytest.fixture(autouse=True)
def fresh_process_cache():
    hub.clear_cache()
    yield
    hub.clear_cache()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache, also the default one, so no test reads the user's cache."""
    path = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(path))
    return path


@pytest.fixture
def local_hub(monkeypatch, cache_dir):
    """A running :class:`LocalHub`, with ``huggingface_hub`` pointed at it and online."""
    with LocalHub() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def downloads(server: LocalHub) -> int:
    """File contents sent: GETs of resolve URLs and of the CDN."""
    return server.count("GET", "/resolve/") + server.count("GET", "/cdn/")


# --------------------------------------------------------------------- saving and local folders
def test_save_and_load_folder_round_trip(tmp_path):
    model = mini_model()
    folder = saved(tmp_path, model)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLDER_FILES)
    loaded = load_model(folder)
    assert not loaded.training
    assert loaded.config == model.config
    assert_same_weights(loaded, model)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == hub.FORMAT_VERSION
    assert config["qgac_transforms_version"] == hub.__version__
    assert config["weights_sha256"] == hub.sha256_file(folder / WEIGHTS_NAME)


def test_chroma_upsampling_is_saved_and_folders_from_before_it_load_as_nearest(tmp_path):
    fancy = saved(tmp_path, mini_model(chroma_upsampling="fancy"), name="fancy")
    assert load_model(fancy).chroma_upsampling == "fancy"
    older = saved(tmp_path, mini_model(), name="older")
    values = json.loads((older / CONFIG_NAME).read_text())
    del values["chroma_upsampling"]  # config.json as written before the option existed
    (older / CONFIG_NAME).write_text(json.dumps(values))
    assert load_model(older).chroma_upsampling == "nearest"


def test_loaded_model_computes_the_same_correction(tmp_path):
    model = mini_model().eval()
    loaded = load_model(saved(tmp_path, model))
    assert all(p.requires_grad for p in loaded.parameters())
    torch.manual_seed(1)
    y, chroma, tables = torch.randn(1, 1, 16, 16) * 50, torch.randn(1, 2, 8, 8) * 20, torch.rand(1, 3, 8, 8) * 40 + 1
    with torch.no_grad():
        assert torch.equal(loaded(y, tables, chroma), model(y, tables, chroma))


def test_save_pretrained_and_from_pretrained_round_trip(tmp_path):
    model = mini_model(color=False)
    model.save_pretrained(tmp_path / "m")
    loaded = QGAC.from_pretrained(tmp_path / "m")
    assert loaded.color_network is None
    assert_same_weights(loaded, model)


def test_a_failed_save_leaves_the_earlier_one_loadable(tmp_path, monkeypatch):
    """The mixin deletes config.json before our hook writes: a failure left weights without a config."""
    earlier = mini_model(color=False)
    earlier.save_pretrained(tmp_path / "m")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "save_safetensors", disk_full)
    with pytest.raises(OSError, match="No space left"):
        mini_model(color=False, seed=1).save_pretrained(tmp_path / "m")
    assert_same_weights(QGAC.from_pretrained(tmp_path / "m"), earlier)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"color": 0}, "color must be true or false, got 0"), ({"block_width": "16"}, "block_width must be an integer"),
    ({"features": 16.0}, "features must be an integer, got 16.0"), ({"block_body": None}, "block_body must be a string"),
])
def test_the_constructor_refuses_what_loading_would(arguments, message):
    """QGAC(color=0) built and saved, and its folder then failed to load."""
    with pytest.raises(TypeError, match=message):
        QGAC(**arguments)


def test_numpy_integers_are_saved_as_integers(tmp_path):
    model = QGAC(block_width=np.int64(16), features=np.int32(8), per_frequency=2, manifold_width=8, fusion_width=2,
                 color_width=8, block_depth=np.int64(1))
    model.save_pretrained(tmp_path / "m")  # json.dumps refused numpy integers, after the weights were written
    assert QGAC.from_pretrained(tmp_path / "m").config == model.config and type(model.config["block_depth"]) is int


def test_from_pretrained_raises_the_typed_errors_of_load_model(tmp_path, cache_dir, offline):
    """The mixin's own from_pretrained parsed config.json first: JSONDecodeError, AttributeError."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for text, message in (("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object")):
        (bad / CONFIG_NAME).write_text(text)
        for loader in (QGAC.from_pretrained, load_model):
            with pytest.raises(InvalidWeightsError, match=message):
                loader(bad)
    with pytest.raises(WeightsNotFoundError, match="'tests/elsewhere'.*offline mode on"):
        QGAC.from_pretrained("tests/elsewhere", cache_dir=cache_dir)


def test_a_half_precision_folder_loads_the_exact_statistics_and_saves_again(tmp_path):
    """A float16 folder holds the statistics rounded; the loaded model keeps the config's exact
    values, so what it saves loads back (the default model, saved by a user, did not)."""
    model = mini_model()
    half = load_model(saved(tmp_path, model.half(), name="half"))
    exact = mini_model()
    for name, buffer in exact.named_buffers():
        assert torch.equal(half.get_buffer(name), buffer), name
    half.save_pretrained(tmp_path / "again")
    assert_same_weights(load_model(tmp_path / "again"), half)


def test_shared_model_follows_a_folders_contents_and_its_absolute_path(tmp_path, monkeypatch):
    """The inference cache names a folder by where it is and what it holds: a folder saved
    again, or the same relative path from another directory, gives the model now there."""
    first, second = mini_model(seed=1), mini_model(seed=2)
    first.save_pretrained(tmp_path / "w")
    assert_same_weights(configs.shared_model(tmp_path / "w"), first)
    second.save_pretrained(tmp_path / "w")
    assert_same_weights(configs.shared_model(tmp_path / "w"), second)
    # the folder saved again replaced its entry: the cache does not grow with every save
    assert sum(key[0] == str((tmp_path / "w").resolve()) for key in configs._SHARED) == 1
    for name, model in (("a", first), ("b", second)):
        model.save_pretrained(tmp_path / name / "w")
    monkeypatch.chdir(tmp_path / "a")
    assert_same_weights(configs.shared_model("w"), first)
    monkeypatch.chdir(tmp_path / "b")
    assert_same_weights(configs.shared_model("w"), second)
    assert configs.shared_model("w") is configs.shared_model(tmp_path / "b" / "w")


def test_model_card_metadata_and_results(tmp_path):
    folder = saved(tmp_path)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "qgac-transforms"
    assert card.data.license == "mit"
    assert card.data.pipeline_tag == "image-to-image"
    assert {"jpeg", "qgac", "pytorch_model_hub_mixin"} <= set(card.data.tags)
    assert card.data.datasets == ["tests/synthetic"]
    assert card.data.metrics == ["psnr", "ssim"]
    assert "| Dataset | Quality | JPEG PSNR | Corrected PSNR | JPEG SSIM | images |" in card.text
    assert "| synthetic | 10 | 25.00 | 26.50 | 0.7000 | 3 |" in card.text
    assert 'create_model("tests/qgac-mini", pretrained=True)' in card.text
    assert "| y | 10 |" in card.text and "1 h 07 min" in card.text
    assert CARD["evaluation_protocol"] in card.text
    # save_model always rewrites the card; a second export replaces the first one's results.
    save_model(mini_model(), folder, card={"model_name": "again"})
    again = ModelCard.load(folder / "README.md").text
    assert "No evaluation results yet" in again and 'create_model("qgac-transforms/again", pretrained=True)' in again
    # A registered model's card loads it by its name, which also finds the packaged copy offline.
    save_model(mini_model(), folder, card={"model_name": "qgac-fast", "load_name": "qgac-fast"})
    assert 'create_model("qgac-fast", pretrained=True)' in ModelCard.load(folder / "README.md").text


def test_card_rejects_unknown_fields_and_results_without_protocol(tmp_path):
    with pytest.raises(ValueError, match="unknown model card fields"):
        save_model(mini_model(), tmp_path / "a", card={"model_name": "x", "wall_clock": 3})
    with pytest.raises(ValueError, match="evaluation_protocol"):
        save_model(mini_model(), tmp_path / "b", card={"model_name": "x", "evaluation": CARD["evaluation"]})


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))],
)
def test_device_argument_places_the_model(tmp_path, device):
    model = mini_model().eval()
    loaded = load_model(saved(tmp_path, model), device=torch.device(device))
    assert all(t.device.type == device for t in [*loaded.parameters(), *loaded.buffers()])
    y, tables = torch.randn(1, 1, 16, 16) * 50, torch.rand(1, 1, 8, 8) * 40 + 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(y.to(device), tables.to(device)).cpu(), model(y, tables))


def test_each_call_returns_an_independent_model(tmp_path):
    folder = saved(tmp_path)
    first, second = load_model(folder), load_model(folder)
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    assert not torch.equal(next(first.parameters()), next(second.parameters()))


# --------------------------------------------------------------------- strict loading
def test_missing_key_is_an_error(tmp_path):
    folder = saved(tmp_path)
    state = load_file(folder / WEIGHTS_NAME)
    dropped = sorted(state)[0]
    del state[dropped]
    rewrite(folder, state=state)
    with pytest.raises(InvalidWeightsError, match=f"missing keys {dropped}") as error:
        load_model(folder)
    assert error.value.source == str(folder / WEIGHTS_NAME)


def test_unexpected_key_is_an_error(tmp_path):
    folder = saved(tmp_path)
    rewrite(folder, state={**load_file(folder / WEIGHTS_NAME), "extra.weight": torch.zeros(2)})
    with pytest.raises(InvalidWeightsError, match="unexpected keys extra.weight"):
        load_model(folder)


def test_wrong_shape_is_an_error(tmp_path):
    folder = saved(tmp_path)
    rewrite(folder, config={"block_width": 12})
    with pytest.raises(InvalidWeightsError, match="wrong shapes: .* is \\(8, .* in the file, \\(12, "):
        load_model(folder)


def test_statistics_that_differ_from_the_config_are_an_error(tmp_path):
    folder = saved(tmp_path)
    state = load_file(folder / WEIGHTS_NAME)
    state["coefficient_std"] = state["coefficient_std"] * 2
    rewrite(folder, state=state)
    with pytest.raises(InvalidWeightsError, match="coefficient_std differs from config.json"):
        load_model(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 3}, "format_version 3 .* reads format_version 1 and 2 only \\(upgrade qgac-transforms\\)"),
        ({"format_version": 2}, "weights_sha256 must map each weight shard to its SHA-256"),
        ({"format_version": "1"}, "format_version '1'"),
        ({"format_version": True}, "format_version True"),
        ({"new_argument": 3}, "unknown configuration keys \\['new_argument'\\]"),
        ({"block_width": -1}, "cannot build QGAC"),
        ({"features": "sixteen"}, 'features must be an integer, got "sixteen"'),
        ({"block_width": 16.0}, "block_width must be an integer, got 16.0"),
        ({"features": True}, "features must be an integer, got true"),
        ({"color": 1}, "color must be true or false, got 1"),
        ({"block_body": 3}, "block_body must be a string, got 3"),
    ],
)
def test_incompatible_config_is_an_error(tmp_path, change, message):
    folder = saved(tmp_path)
    rewrite(folder, config=change)
    with pytest.raises(InvalidWeightsError, match=message):
        load_model(folder)


@pytest.mark.parametrize("key", ["format_version", "weights_sha256"])
def test_config_without_format_metadata_is_an_error(tmp_path, key):
    folder = saved(tmp_path)
    values = json.loads((folder / CONFIG_NAME).read_text())
    del values[key]
    (folder / CONFIG_NAME).write_text(json.dumps(values))
    with pytest.raises(InvalidWeightsError, match=key):
        load_model(folder)


def test_missing_or_unreadable_files_are_errors(tmp_path):
    folder = saved(tmp_path)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(InvalidWeightsError, match="not valid JSON"):
        load_model(folder)
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(InvalidWeightsError, match="config.json: missing"):
        load_model(folder)


def test_truncated_weights_are_detected(tmp_path):
    folder = saved(tmp_path)
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidWeightsError, match="truncated, corrupted or was modified"):
        load_model(folder)
    # Even with a matching hash (a config rewritten by hand), safetensors refuses the file.
    rewrite(folder)
    with pytest.raises(InvalidWeightsError, match="not a readable safetensors file"):
        load_model(folder)


@settings(deadline=None, max_examples=10)
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_changed_byte_is_detected(position, flip):
    with tempfile.TemporaryDirectory() as directory:
        folder = save_model(mini_model(), Path(directory) / "m")
        data = bytearray((folder / WEIGHTS_NAME).read_bytes())
        data[int(position * len(data))] ^= flip
        (folder / WEIGHTS_NAME).write_bytes(bytes(data))
        with pytest.raises(InvalidWeightsError, match="SHA-256"):
            load_model(folder)


@settings(deadline=None, max_examples=5)
@given(
    widths=st.tuples(st.integers(2, 8), st.integers(1, 4), st.integers(1, 2), st.integers(1, 4), st.integers(1, 2)),
    color=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_round_trip_property(widths, color, seed):
    block, features, per_frequency, manifold, fusion = widths
    model = mini_model(
        seed, block_width=block, features=features, per_frequency=per_frequency, manifold_width=manifold,
        fusion_width=fusion, color=color,
    )
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        loaded = load_model(directory)
    assert loaded.config == model.config
    assert_same_weights(loaded, model)


# --------------------------------------------------------------------- sharded folders
#: MINI's weights are 0.6 MiB: shards of 0.1 MiB make a folder of several.
SHARD_MB = 0.1


def sharded(tmp_path: Path, model: QGAC | None = None, name: str = "qgac-sharded") -> Path:
    return save_model(model or mini_model(), tmp_path / name, card=CARD, max_shard_mb=SHARD_MB)


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))


@settings(deadline=None, max_examples=8)
@given(max_shard_mb=st.floats(0.005, 1.0), seed=st.integers(0, 100))
def test_sharded_round_trip_property(max_shard_mb, seed):
    """Any shard size: the folder loads to the same weights; each shard holds at most the limit
    (or one tensor larger than it); the config lists every shard with its digest, and weights
    that fit in one shard stay one plain model.safetensors."""
    model = mini_model(seed)
    with tempfile.TemporaryDirectory() as directory:
        folder = save_model(model, Path(directory) / "m", card=CARD, max_shard_mb=max_shard_mb)
        config = json.loads((folder / CONFIG_NAME).read_text())
        names = shard_names(folder)
        limit = max_shard_mb * 2**20
        if not names:
            assert config["format_version"] == 1 and (folder / WEIGHTS_NAME).is_file()
            assert (folder / WEIGHTS_NAME).stat().st_size <= limit + 64 * 1024  # plus the header
        else:
            assert config["format_version"] == 2 and not (folder / WEIGHTS_NAME).exists()
            assert config["weights_sha256"] == {name: hub.sha256_file(folder / name) for name in names}
            index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text())
            assert sorted(set(index["weight_map"].values())) == names
            assert index["weight_map"].keys() == model.state_dict().keys()
            for name in names:
                tensors = load_file(folder / name)
                stored = sum(t.numel() * t.element_size() for t in tensors.values())
                assert stored <= limit or len(tensors) == 1, name
        loaded = load_model(folder)
    assert loaded.config == model.config
    assert_same_weights(loaded, model)


def test_saving_again_in_another_layout_leaves_no_stale_weights(tmp_path):
    first, second = mini_model(1), mini_model(2)
    folder = sharded(tmp_path, first)
    assert len(shard_names(folder)) > 1
    save_model(second, folder, card=CARD)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLDER_FILES)
    assert_same_weights(load_model(folder), second)
    sharded(tmp_path, first)
    assert not (folder / WEIGHTS_NAME).exists()
    assert_same_weights(load_model(folder), first)
    assert "with their index `model.safetensors.index.json`" in (folder / "README.md").read_text()


def test_a_damaged_or_missing_shard_is_named(tmp_path):
    folder = sharded(tmp_path)
    last = folder / shard_names(folder)[-1]
    data = bytearray(last.read_bytes())
    data[-3] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(InvalidWeightsError, match=f"{last.name}: SHA-256 .* differs"):
        load_model(folder)
    last.unlink()
    with pytest.raises(InvalidWeightsError, match=f"{last.name}: missing"):
        load_model(folder)


@pytest.mark.parametrize("change", ["outside", "incomplete", "not a digest", "repeated keys", "index"])
def test_a_config_that_names_shards_wrongly_is_refused(tmp_path, change):
    """Shard names come from config.json: only the complete set of Hugging Face's names is
    accepted, so a config cannot make the loader read (or download) any other file."""
    folder = sharded(tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    digests = config["weights_sha256"]
    first, *rest = sorted(digests)
    if change == "outside":
        digests["../model-00001-of-00001.safetensors"] = digests.pop(first)
        message = "weights_sha256 names"
    elif change == "incomplete":
        del digests[rest[-1]]
        message = "weights_sha256 names"
    elif change == "not a digest":
        digests[first] = "0" * 63
        message = "must map each weight shard"
    elif change == "repeated keys":  # the second shard holds the first one's tensors too
        second = folder / rest[0]
        save_file({**load_file(folder / first), **load_file(second)}, str(second))
        digests[rest[0]] = hub.sha256_file(second)
        message = "holds keys already in another shard"
    else:  # the index, which other tools read instead of the config, names another shard
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text())
        key = next(iter(index["weight_map"]))
        index["weight_map"][key] = rest[-1] if index["weight_map"][key] != rest[-1] else first
        (folder / WEIGHTS_INDEX_NAME).write_text(json.dumps(index))
        message = f"{WEIGHTS_INDEX_NAME}: does not match the shards named in config.json: {key}"
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(InvalidWeightsError, match=message):
        load_model(folder)


def test_a_sharded_model_downloads_from_the_hub_and_then_loads_offline(tmp_path, local_hub, cache_dir,
                                                                      monkeypatch):
    model = mini_model(8)
    folder = sharded(tmp_path, model)
    commit = local_hub.publish_folder("tests/qgac-sharded", folder)
    assert_same_weights(load_model("tests/qgac-sharded", cache_dir=cache_dir), model)
    assert downloads(local_hub) == 2 + len(shard_names(folder))  # the config, each shard and the index, once
    # every file after the config is asked for at the config's commit, not at the branch
    resolved = [r.path for r in local_hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert all(f"/resolve/{commit}/" in path for path in resolved if not path.endswith(CONFIG_NAME))
    hub.clear_cache()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub._cached("tests/qgac-sharded", "main", cache_dir)
    assert_same_weights(load_model("tests/qgac-sharded", cache_dir=cache_dir), model)
    snapshot = cache_dir / "models--tests--qgac-sharded" / "snapshots" / commit
    (snapshot / shard_names(folder)[-1]).unlink()
    assert not hub._cached("tests/qgac-sharded", "main", cache_dir)
    hub.clear_cache()
    with pytest.raises(WeightsNotFoundError, match=f"{shard_names(folder)[-1]} is not cached, though config.json is"):
        load_model("tests/qgac-sharded", cache_dir=cache_dir)  # offline: the missing shard is named


@pytest.mark.parametrize(("change", "message"), [
    ({"weights_sha256": "0" * 64}, "config.json: weights_sha256 must map each weight shard"),
    ({"format_version": 3}, "config.json: format_version 3 .* \\(upgrade qgac-transforms\\)"),
])
def test_a_hub_config_that_names_no_valid_weights_is_reported_as_such(tmp_path, local_hub, cache_dir, change,
                                                                      message):
    """The config is read before any weights are fetched: what is wrong with it is the error
    (not a missing file), and nothing else is downloaded."""
    folder = sharded(tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, **change}))
    local_hub.publish_folder("tests/qgac-broken", folder)
    with pytest.raises(InvalidWeightsError, match=message):
        load_model("tests/qgac-broken", cache_dir=cache_dir)
    assert downloads(local_hub) == 1


def test_upload_and_embed_take_every_shard_and_the_index(tmp_path, local_hub, cache_dir, monkeypatch):
    model = mini_model(9)
    folder = sharded(tmp_path, model)
    (folder / "notes.txt").write_text("not part of the model")
    files = [CONFIG_NAME, *shard_names(folder), WEIGHTS_INDEX_NAME, "README.md"]
    assert sorted(hub.published_files(folder)) == sorted(files)
    # over an earlier release with one weight file and a lineage: those go in the same commit
    (tmp_path / "earlier").mkdir()
    earlier = saved(tmp_path / "earlier")
    (earlier / TRAINING_NAME).write_text("[]\n")
    assert publish.main(["upload", str(earlier), "tests/uploaded-shards"]) == 0
    assert sorted(local_hub.files("tests/uploaded-shards")) == sorted(PUBLISHED_FILES)
    assert publish.main(["upload", str(folder), "tests/uploaded-shards"]) == 0
    assert sorted(local_hub.files("tests/uploaded-shards")) == sorted(files)
    assert_same_weights(load_model("tests/uploaded-shards", cache_dir=cache_dir), model)
    monkeypatch.setattr(hub, "EMBEDDED_ROOT", tmp_path / "weights")
    single = publish.embed(saved(tmp_path, name="qgac-sharded-was-single"), "qgac-sharded")
    assert (single / WEIGHTS_NAME).is_file()
    (single / "kept").mkdir()  # only weights and lineage are replaced: nothing else is touched
    target = publish.embed(folder)
    assert sorted(p.name for p in target.iterdir()) == sorted([*files, "kept"])  # the single file is gone
    assert_same_weights(load_model(target), model)


@pytest.mark.parametrize("name", ["..", ".", "a/..", "-x", "weights/"])
def test_embed_refuses_a_name_that_is_not_a_folder_name(tmp_path, monkeypatch, name):
    monkeypatch.setattr(hub, "EMBEDDED_ROOT", tmp_path / "weights")
    with pytest.raises(ValueError, match="a model's name is letters, digits"):
        publish.embed(saved(tmp_path), name)
    assert not (tmp_path / "weights").exists()


# --------------------------------------------------------------------- the Hub
def test_first_download_then_cache_hit(tmp_path, local_hub, cache_dir):
    model = mini_model()
    local_hub.publish_folder("tests/qgac-mini", saved(tmp_path, model))
    assert_same_weights(load_model("tests/qgac-mini", cache_dir=cache_dir), model)
    assert downloads(local_hub) == 2  # config.json and model.safetensors, once each
    assert (cache_dir / "models--tests--qgac-mini" / "refs" / "main").is_file()
    requests = len(local_hub.requests)
    load_model("tests/qgac-mini", cache_dir=cache_dir)
    assert len(local_hub.requests) == requests  # resolved once per process
    hub.clear_cache()
    assert_same_weights(load_model("tests/qgac-mini", cache_dir=cache_dir), model)
    assert downloads(local_hub) == 2  # a branch is re-checked with HEAD requests, nothing re-downloaded


def test_revision_pins_the_weights(tmp_path, local_hub, cache_dir):
    old, new = mini_model(1), mini_model(2)
    first = local_hub.publish_folder("tests/qgac-mini", saved(tmp_path, old, name="old"))
    local_hub.publish_folder("tests/qgac-mini", saved(tmp_path, new, name="new"))
    assert_same_weights(load_model("tests/qgac-mini", cache_dir=cache_dir), new)
    assert_same_weights(load_model("tests/qgac-mini", revision=first, cache_dir=cache_dir), old)
    hub.clear_cache()
    requests = len(local_hub.requests)
    assert_same_weights(load_model("tests/qgac-mini", revision=first, cache_dir=cache_dir), old)
    assert len(local_hub.requests) == requests  # a cached commit needs no request at all


def test_unpublished_default_is_the_packaged_copy_without_a_request(local_hub, cache_dir, caplog):
    """Until the first upload the default has no revision: nothing asks the Hub, nothing warns."""
    with caplog.at_level(logging.INFO, logger=hub.log.name):
        assert_same_weights(load_model(), QGAC.from_pretrained(PACKAGED))
    assert len(local_hub.requests) == 0 and not caplog.text
    with pytest.raises(WeightsNotFoundError, match="RepositoryNotFoundError"):
        load_model(DEFAULT_REPO, cache_dir=cache_dir)  # a named Hub repo goes to the Hub


def test_default_model_is_pinned_to_its_revision(tmp_path, local_hub, cache_dir, published):
    pinned, later = mini_model(3), mini_model(4)
    local_hub.publish_folder(DEFAULT_REPO, saved(tmp_path, pinned, name="pinned"), commit=PINNED)
    local_hub.publish_folder(DEFAULT_REPO, saved(tmp_path, later, name="later"))
    assert_same_weights(load_model(), pinned)
    assert_same_weights(load_model(DEFAULT_MODEL, revision="main"), later)
    assert_same_weights(load_model(DEFAULT_REPO), later)
    assert local_hub.count("HEAD", f"/resolve/{PINNED}/") >= 1


def test_offline_with_warm_cache(tmp_path, local_hub, cache_dir, monkeypatch):
    model = mini_model()
    local_hub.publish_folder("tests/qgac-mini", saved(tmp_path, model))
    load_model("tests/qgac-mini", cache_dir=cache_dir)
    hub.clear_cache()
    requests = len(local_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_weights(load_model("tests/qgac-mini", cache_dir=cache_dir), model)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert_same_weights(load_model("tests/qgac-mini", cache_dir=cache_dir, local_files_only=True), model)
    assert len(local_hub.requests) == requests


def test_offline_cold_cache_uses_the_embedded_default(local_hub, cache_dir, offline, published):
    model = load_model()
    assert_same_weights(model, QGAC.from_pretrained(PACKAGED))
    assert len(local_hub.requests) == 0


def test_names_near_a_registered_model_are_told_its_name(local_hub, cache_dir, offline):
    """A typo or a configuration's name got only the Hub's error."""
    for name, hint in (("qgac-fats", "did you mean 'qgac-fast'?"), ("QGAC-Fast", "did you mean 'qgac-fast'?"),
                       ("fast", "'fast' is a configuration, which build_model('fast') builds untrained; its trained "
                                "weights are 'qgac-fast'")):
        with pytest.raises(WeightsNotFoundError) as error:
            load_model(name, cache_dir=cache_dir)
        assert str(error.value).endswith(hint)
    with pytest.raises(WeightsNotFoundError) as error:
        load_model("tests/elsewhere", cache_dir=cache_dir)
    assert "did you mean" not in str(error.value)


def test_offline_cold_cache_other_names_say_what_was_tried(local_hub, cache_dir, offline):
    with pytest.raises(WeightsNotFoundError) as error:
        load_model("tests/elsewhere", revision="v1", cache_dir=cache_dir)
    message = str(error.value)
    for part in ("'tests/elsewhere'", "'v1'", local_hub.url, str(cache_dir), "offline mode on", "LocalEntryNotFoundError"):
        assert part in message
    # The default at another revision is not the embedded copy either.
    with pytest.raises(WeightsNotFoundError, match="could not be reached"):
        load_model(DEFAULT_MODEL, revision="main")


def test_local_files_only_cold_cache_uses_the_embedded_default(local_hub, cache_dir, published):
    assert_same_weights(load_model(local_files_only=True), QGAC.from_pretrained(PACKAGED))
    assert len(local_hub.requests) == 0


@pytest.fixture
def unreachable_hub(monkeypatch) -> None:
    """``huggingface_hub`` online and pointed at an address where nothing listens."""
    with LocalHub() as server:
        closed = server.url  # nothing listens here once the server is closed
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_unreachable_hub_falls_back_at_once(cache_dir, unreachable_hub, published):
    assert_same_weights(load_model(), QGAC.from_pretrained(PACKAGED))


def test_without_an_answer_a_name_that_is_no_folder_fails_at_once_naming_folders_like_it(
        tmp_path, cache_dir, unreachable_hub, monkeypatch):
    """A mistyped path waited for huggingface_hub's retries (about 20 s) before its error."""
    saved(tmp_path / "models", name="qgac-small")
    monkeypatch.chdir(tmp_path)

    def retrying_download(*args, **kwargs):
        raise AssertionError("the retrying download was started")

    monkeypatch.setattr(hub, "hf_hub_download", retrying_download)
    with pytest.raises(WeightsNotFoundError, match="did not answer") as error:
        load_model("models/qgac-smal", cache_dir=cache_dir)  # could be a repo id
    assert "(folders beside it: models/qgac-small)" in str(error.value)
    with pytest.raises(WeightsNotFoundError, match="nor a Hub repo id") as error:
        load_model(str(tmp_path / "models" / "qgac-smal"), cache_dir=cache_dir)
    assert f"(folders beside it: {tmp_path / 'models' / 'qgac-small'})" in str(error.value)
    with pytest.raises(WeightsNotFoundError, match="did not answer") as error:
        load_model("tests/nothing-like-it", cache_dir=cache_dir)
    assert "folders beside it" not in str(error.value)


@pytest.mark.parametrize(("status", "problem"), [(404, None), (401, None), (429, "the Hub answered 429"),
                                               (503, "the Hub answered 503")])
def test_the_probe_counts_a_refusal_as_an_answer_and_a_server_error_or_rate_limit_as_none(
        monkeypatch, status, problem):
    """A 4xx says what the download would hear at once; a 5xx or a 429 would start its retries."""
    def answer(*args, **kwargs):
        raise HfHubHTTPError(f"status {status}", response=SimpleNamespace(status_code=status, headers={}, request=None))

    monkeypatch.setattr(hub, "get_hf_file_metadata", answer)
    assert hub._hub_problem("tests/any", "main", None) == problem


def test_repo_that_does_not_exist(local_hub, cache_dir):
    with pytest.raises(WeightsNotFoundError, match="RepositoryNotFoundError") as error:
        load_model("tests/no-such-repo", cache_dir=cache_dir)
    assert "tests/no-such-repo" in str(error.value) and local_hub.url in str(error.value)


def test_revision_that_does_not_exist(tmp_path, local_hub, cache_dir):
    local_hub.publish_folder("tests/qgac-mini", saved(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="RevisionNotFoundError"):
        load_model("tests/qgac-mini", revision="v9", cache_dir=cache_dir)


def test_missing_default_repo_falls_back_with_a_warning(local_hub, cache_dir, caplog, published):
    """Removed or refused: the packaged copy of the pinned default serves, said loudly."""
    with caplog.at_level(logging.WARNING, logger=hub.log.name):
        model = load_model()
    assert_same_weights(model, QGAC.from_pretrained(PACKAGED))
    assert "RepositoryNotFoundError" in caplog.text and "packaged copy" in caplog.text
    with pytest.raises(WeightsNotFoundError, match="RepositoryNotFoundError"):
        load_model(DEFAULT_MODEL, revision="main", cache_dir=cache_dir)  # another revision: no fallback


def test_invalid_name_is_an_error(cache_dir, local_hub):
    with pytest.raises(WeightsNotFoundError, match="not a folder, nor a Hub repo id: HFValidationError"):
        load_model("no/such/folder/anywhere")
    assert len(local_hub.requests) == 0


def test_pickle_weights_are_never_downloaded(tmp_path, local_hub, cache_dir):
    folder = saved(tmp_path)
    files = {CONFIG_NAME: (folder / CONFIG_NAME).read_bytes(), "pytorch_model.bin": b"\x80\x04pickle"}
    local_hub.publish("tests/pickled", files)
    with pytest.raises(WeightsNotFoundError, match="EntryNotFoundError"):
        load_model("tests/pickled", cache_dir=cache_dir)
    assert local_hub.count(contains="pytorch_model.bin") == 0


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_damaged_weights_served_by_the_hub_are_detected(tmp_path, local_hub, cache_dir, damage):
    folder = saved(tmp_path)
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 100]
    else:
        data[-5] ^= 0x40
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    local_hub.publish_folder("tests/damaged", folder)
    with pytest.raises(InvalidWeightsError, match="differs from .* recorded in config.json"):
        load_model("tests/damaged", cache_dir=cache_dir)


# --------------------------------------------------------------------- publishing
def test_push_to_hub_then_load(local_hub, cache_dir):
    model = mini_model(5)
    model.push_to_hub("tests/pushed", token="hf_test", model_card_kwargs={"card": CARD})
    assert sorted(local_hub.files("tests/pushed")) == sorted(FOLDER_FILES)
    commits = [r for r in local_hub.requests if r.method == "POST" and "/commit/" in r.path]
    assert commits and commits[-1].headers["authorization"] == "Bearer hf_test"
    assert_same_weights(load_model("tests/pushed", cache_dir=cache_dir), model)
    assert b"library_name: qgac-transforms" in local_hub.files("tests/pushed")["README.md"]


def test_upload_command_publishes_a_saved_folder(tmp_path, local_hub, cache_dir, capsys):
    model = mini_model(6)
    folder = saved(tmp_path, model)
    (folder / "notes.txt").write_text("not part of the model")
    (folder / TRAINING_NAME).write_text("[]\n")
    assert publish.main(["upload", str(folder), "tests/uploaded"]) == 0
    assert "at commit" in capsys.readouterr().out
    assert sorted(local_hub.files("tests/uploaded")) == sorted(PUBLISHED_FILES)
    assert_same_weights(load_model("tests/uploaded", cache_dir=cache_dir), model)


def test_upload_refuses_a_folder_that_does_not_load(tmp_path, local_hub, capsys):
    folder = saved(tmp_path)
    (folder / WEIGHTS_NAME).write_bytes(b"broken")
    assert publish.main(["upload", str(folder), "tests/uploaded"]) == 1
    assert "SHA-256" in capsys.readouterr().err
    assert "tests/uploaded" not in local_hub.repos


def test_embed_copies_a_folder_into_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "EMBEDDED_ROOT", tmp_path / "weights")
    folder = saved(tmp_path)
    (folder / TRAINING_NAME).write_text("[]\n")
    target = publish.embed(folder)
    assert target == tmp_path / "weights" / "qgac-mini"
    for name in PUBLISHED_FILES:
        assert (target / name).read_bytes() == (folder / name).read_bytes()
    (folder / TRAINING_NAME).unlink()
    publish.embed(folder)
    assert not (target / TRAINING_NAME).exists()  # no stale lineage from the earlier model


# --------------------------------------------------------------------- the shipped default
def test_embedded_models_are_their_published_folders_held_once():
    """An embedded model is published from the package: hub/ holds no second copy of it."""
    embedded = sorted(folder.name for folder in hub.EMBEDDED_ROOT.iterdir() if folder.is_dir())
    assert DEFAULT_MODEL in embedded
    assert not [name for name in embedded if (ROOT / "hub" / name).exists()]
    for name in embedded:
        folder = hub.embedded_folder(name)
        assert set(hub.published_files(folder)) == {p.name for p in folder.iterdir()}, name
    model = QGAC.from_pretrained(PACKAGED)
    assert model.config["color"] and not model.training


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shipped_default_corrects_a_photo_like_image(make_image, make_jpeg, seed):
    """The real weights, not just their format: at quality 10 the default gains PSNR on a
    generated photo-like image (measured +1.2 to +1.5 dB; random weights lose several dB)."""
    from qgac_transforms.correction import correct
    from qgac_transforms.jpeg_io import read_coefficients
    from qgac_transforms.metrics import psnr

    image = make_image(seed, 96, 128, smooth=True)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    coefficients = read_coefficients(make_jpeg(image, quality=10))
    jpeg = torch.from_numpy(np.array(Image.open(io.BytesIO(make_jpeg(image, quality=10))))).permute(2, 0, 1).float()
    corrected = correct(QGAC.from_pretrained(PACKAGED), coefficients)
    assert float(psnr(corrected, original) - psnr(jpeg, original)) > 0.8


def test_wheel_package_data_covers_the_embedded_files():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["qgac_transforms"]
    package = ROOT / "qgac_transforms"
    for path in PACKAGED.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative



def smooth_with_edges(height: int, width: int) -> Image.Image:
    """Gradients (smooth sky, shading) under hard-edged shapes (a bar, a disc): the two things
    JPEG at low quality damages most visibly, ringing at edges and blocks on gradients."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([40 + 150 * x / width, 60 + 120 * y / height, 200 - 100 * (x + y) / (width + height)], -1)
    image[height // 4 : height // 2, width // 8 : width // 2] = (230, 40, 40)
    image[(y - 0.65 * height) ** 2 + (x - 0.7 * width) ** 2 < (0.2 * height) ** 2] = (20, 30, 120)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def test_shipped_default_raises_psnr_on_smooth_areas_and_edges(make_jpeg):
    """``create_model``'s default weights, through ``functional.correct``, at quality 10:
    measured +0.96 dB (random ``small`` weights: +0.14 dB)."""
    from qgac_transforms import functional as F
    from qgac_transforms.metrics import psnr

    image = smooth_with_edges(96, 128)
    data = make_jpeg(image, quality=10)
    corrected = F.correct(data, configs.create_model(pretrained=True))
    original, jpeg, ours = (torch.from_numpy(np.array(i)).permute(2, 0, 1).float()
                            for i in (image, Image.open(io.BytesIO(data)), corrected))
    assert float(psnr(ours, original) - psnr(jpeg, original)) > 0.5
