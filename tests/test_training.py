"""The training package: data stream, losses, stages, checkpoints, signals, DDP, export.

Everything runs on the ``tiny`` configuration with 32-pixel patches in batches of 2,
on small generated photos; the subprocess tests (signals, 2-process gloo DDP) start
their own Python interpreters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.nn import functional as F

from qgac_transforms import hub
from qgac_transforms.codec import coefficients_to_pixels
from qgac_transforms.configs import build_model, load_model
from qgac_transforms.correction import correct
from qgac_transforms.evaluation import evaluate_dataset
from qgac_transforms.jpeg_io import PILLOW_SUBSAMPLING, read_coefficients
from qgac_transforms.quantization import quality_to_table
from training.__main__ import build_parser, main
from qgac_transforms.codec import SUBSAMPLINGS
from qgac_transforms.evaluation import compress as pillow_compress
from training.checkpoints import read_checkpoint
from training.data import DatasetError, PatchStream, PhotoBank, read_rgb, split_images, training_images
from training.export import export_run, interpolate, read_evaluations, training_notes
from training.lineage import INIT_LINEAGE_KEY, StageRecord, as_raw, read_lineage, run_stages, stage_checkpoint
from training.losses import (
    DCGANDiscriminator,
    TextureLoss,
    load_texture_network,
    regression_loss,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
    vgg16_conv5_3,
)
from training.prepare import downscale_folder
from training.stats import statistics_overrides
from training.trainer import (
    PAPER_SCHEDULES,
    TrainConfig,
    Trainer,
    cosine_rate,
    init_digest,
    load_qgac,
    predict_pixels,
)

REPO = Path(__file__).resolve().parents[1]
PATCH = 32


def tiny_features() -> nn.Module:
    """A two-layer feature network for the texture loss (importable as ``test_training:tiny_features``)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, make_image) -> Path:
    """Five small photo-like PNGs (72 x 88), one of which is held out for validation."""
    folder = tmp_path_factory.mktemp("photos")
    for index in range(5):
        make_image(index, 72, 88, smooth=True).save(folder / f"photo{index}.png")
    return folder


def tiny_config(run: Path, data: Path, **overrides) -> TrainConfig:
    options = dict(data=str(data), run=str(run), model="tiny", steps=6, batch_size=2, patch_size=PATCH, workers=0,
                   validation_images=1, validate_every=3, threads=1, schedule="cosine", lr=1e-3,
                   texture_network="torch.nn:Identity")
    return TrainConfig(**{**options, **overrides})


def save_init(model: nn.Module, path: Path) -> Path:
    """A minimal checkpoint usable as ``init`` (the keys every checkpoint has for the model)."""
    torch.save({"model": model.state_dict(), "model_config": model.config}, path)
    return path


def train(config: TrainConfig) -> Trainer:
    trainer = Trainer(config)
    trainer.train()
    return trainer


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- data




@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 10_000), step=st.integers(0, 1000), weights=st.sampled_from(sorted(PILLOW_SUBSAMPLING)))
def test_batches_are_what_pillow_writes_for_their_crops(photos, seed, step, weights):
    """The reference: each patch of a batch, saved by Pillow at its quality and read back,
    gives the batch's coefficients and tables bit for bit."""
    stream = PatchStream(training_images(photos), 16, 4, seed=seed, subsampling_weights={weights: 1.0})
    plan, batch = stream.plan(step), stream.batch(step)
    patches = stream.bank.crops(plan, 16)
    assert torch.equal(batch.pixels, patches.float())
    for index, quality in enumerate(plan.qualities):
        image = Image.fromarray(patches[index].permute(1, 2, 0).numpy())
        planes, tables = read_coefficients(pillow_compress(image, quality, PILLOW_SUBSAMPLING[weights])).to_tensors()
        assert torch.equal(batch.tables[index], tables)
        assert torch.equal(batch.y[index], planes[0])
        assert torch.equal(batch.chroma[index], torch.cat(planes[1:]))


@settings(deadline=None, max_examples=20)
@given(top=st.integers(0, 40), left=st.integers(0, 56), orientation=st.integers(0, 7))
def test_crops_are_the_photo_region_in_its_orientation(photos, top, left, orientation):
    from training.data import BatchPlan

    paths = training_images(photos)
    bank = PhotoBank(paths, 32)
    plan = BatchPlan("4:2:0", (50,), (2,), (top,), (left,), (orientation,))
    crop = torch.from_numpy(np.array(Image.open(paths[2]).convert("RGB"))).permute(2, 0, 1)[:, top:top + 32, left:left + 32]
    expected = crop.flip(1) if orientation & 2 else crop
    expected = expected.flip(2) if orientation & 1 else expected
    expected = expected.transpose(1, 2) if orientation & 4 else expected
    assert torch.equal(bank.crops(plan, 32)[0], expected)


@pytest.mark.parametrize("continuous", [False, True])
def test_drawn_qualities_respect_the_list_or_range(photos, continuous):
    qualities = [23, 57] if continuous else [10, 30, 90]
    stream = PatchStream(training_images(photos), 16, 8, qualities, continuous)
    drawn = torch.cat([stream.batch(step).quality for step in range(6)]).tolist()
    if continuous:
        assert all(23 <= q <= 57 for q in drawn) and len(set(drawn)) > 5
    else:
        assert set(drawn) <= set(qualities) and len(set(drawn)) > 1
    batch = stream.batch(0)
    for quality, table in zip(batch.quality.tolist(), batch.tables):
        assert torch.equal(table[0], quality_to_table(quality).float())


@pytest.mark.parametrize("name", sorted(PILLOW_SUBSAMPLING))
def test_subsampling_weights_pick_the_factor(photos, name):
    stream = PatchStream(training_images(photos), 16, 1, subsampling_weights={name: 1.0})
    v, h = SUBSAMPLINGS[name]
    for step in range(3):
        batch = stream.batch(step)
        assert batch.factor == (v, h)
        assert batch.chroma.shape == (1, 2, 16 // v, 16 // h)


def test_subsampling_weights_set_the_shares(photos):
    stream = PatchStream(training_images(photos), 16, 1, qualities=[50],
                         subsampling_weights={"4:2:0": 0.75, "4:4:4": 0.25})
    factors = [stream.batch(step).factor for step in range(80)]
    share = factors.count((2, 2)) / len(factors)
    assert set(factors) == {(2, 2), (1, 1)} and 0.55 < share < 0.92


def test_stream_depends_only_on_seed_rank_and_step(photos):
    paths = training_images(photos)
    whole = PatchStream(paths, 16, 2, seed=3)
    resumed = PatchStream(paths, 16, 2, seed=3, start_step=4)
    expected = [whole.batch(step) for step in range(4, 8)]
    for got, want in zip(iter(resumed), expected):
        assert torch.equal(got.pixels, want.pixels) and torch.equal(got.y, want.y) and got.factor == want.factor
    other_rank = PatchStream(paths, 16, 2, seed=3, rank=1).batch(4)
    assert not torch.equal(other_rank.pixels, expected[0].pixels)


def test_loader_with_two_workers_yields_the_same_stream(photos):
    stream = PatchStream(training_images(photos), 16, 2, seed=1, start_step=2)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 4:
            break
    for step, batch in enumerate(batches, start=2):
        assert torch.equal(batch.y, stream.batch(step).y)


def test_bad_data_folders_are_named(tmp_path, capsys):
    with pytest.raises(DatasetError, match="not a folder"):
        training_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images found") as error:
        training_images(tmp_path)
    assert error.value.path == str(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")
    with pytest.raises(DatasetError, match="held out for validation"):
        split_images(training_images(tmp_path), 1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    stream = PatchStream(training_images(tmp_path), 16, 8)
    with pytest.raises(DatasetError, match="broken.png: cannot read image"):
        [stream.batch(step) for step in range(4)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--run", str(tmp_path / "run")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # neither an empty train.log nor its folder
    (tmp_path / "blocked" / "train.log").mkdir(parents=True)  # the log cannot be written
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            photos / f"p{seed}.png")
    init = save_init(build_model("tiny"), tmp_path / "init.pt")  # no warning at build (statistics are its)
    assert main(["train", "--data", str(photos), "--run", str(tmp_path / "blocked"), "--model", "tiny",
                 "--init", str(init), "--steps", "1", "--batch-size", "1", "--patch-size", "16", "--workers", "0",
                 "--validation-images", "1"]) == 2  # a traceback at the first record before
    assert "train.log" in capsys.readouterr().err


# --------------------------------------------------------------------------- losses


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 1000), weight=st.sampled_from([0.0, 0.05, 0.5]))
def test_regression_loss_of_identical_images_is_minus_lambda(seed, weight):
    image = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(seed)) * 255
    assert regression_loss(image, image, weight).item() == pytest.approx(-weight, abs=1e-5)
    assert regression_loss(image, (image + 20).clamp(0, 255), weight) > regression_loss(image, image, weight)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 1000), shift=st.floats(0.1, 3.0))
def test_relativistic_losses(seed, shift):
    generator = torch.Generator().manual_seed(seed)
    real, fake = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
    # the discriminator's loss is the generator's with the roles of real and fake swapped
    assert torch.equal(relativistic_discriminator_loss(real, fake), relativistic_generator_loss(fake, real))
    # indistinguishable logits: both players at log 2
    same = torch.full((6,), 0.3)
    assert relativistic_generator_loss(same, same).item() == pytest.approx(math.log(2))
    assert relativistic_discriminator_loss(same, same).item() == pytest.approx(math.log(2))
    # only differences count: a common offset changes nothing
    assert torch.allclose(relativistic_generator_loss(real + shift, fake + shift), relativistic_generator_loss(real, fake))
    # fakes that look more real help the generator and hurt the discriminator
    assert relativistic_generator_loss(real, fake + shift) < relativistic_generator_loss(real, fake)
    assert relativistic_discriminator_loss(real, fake + shift) > relativistic_discriminator_loss(real, fake)


def test_texture_loss_with_a_tiny_network():
    texture = TextureLoss(tiny_features())
    target = torch.rand(2, 3, 16, 16) * 255
    output = (target + torch.randn_like(target) * 10).requires_grad_(True)
    assert texture(target, target).item() == 0.0
    loss = texture(output, target)
    loss.backward()
    assert loss.item() > 0 and output.grad is not None and output.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in texture.features.parameters())


def test_texture_layer_compares_that_layers_output():
    network = tiny_features()
    target = torch.rand(2, 3, 16, 16) * 255
    output = target + torch.randn_like(target) * 20
    texture = TextureLoss(network, layer="1")
    prepare = lambda x: (x / 255.0 - texture.mean) / texture.std  # noqa: E731
    expected = F.l1_loss(network[:2](prepare(output)), network[:2](prepare(target)))
    assert torch.allclose(texture(output, target), expected)
    assert not torch.allclose(TextureLoss(network)(output, target), expected)
    assert tensors_equal(texture.features.state_dict(), {f"extractor.{k}": v for k, v in network.state_dict().items()
                                                         if not k.startswith("2.")})
    with pytest.raises(ValueError, match="'conv9' is not a node.*0, 1, 2"):
        TextureLoss(network, layer="conv9")


def test_texture_network_option(tmp_path):
    assert isinstance(load_texture_network("torch.nn:Identity"), nn.Identity)
    source = tiny_features()
    from safetensors.torch import save_file

    save_file(source.state_dict(), tmp_path / "features.safetensors")
    loaded = load_texture_network("test_training:tiny_features", tmp_path / "features.safetensors")
    assert tensors_equal(loaded.state_dict(), source.state_dict())
    save_file({"other": torch.zeros(1)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="wrong.safetensors"):
        load_texture_network("test_training:tiny_features", tmp_path / "wrong.safetensors")
    for spec in ("no_colon", "no.such.module:thing", "torch.nn:NoSuchLayer", "torch.nn:Linear", "math:pi"):
        with pytest.raises(ValueError, match="texture network"):
            load_texture_network(spec)


def test_default_texture_network_is_vgg16_up_to_conv5_3():
    features = vgg16_conv5_3()
    assert isinstance(features[-1], nn.Conv2d) and features[-1].out_channels == 512
    assert sum(isinstance(layer, nn.Conv2d) for layer in features) == 13
    assert features(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 2, 2)


@pytest.mark.parametrize("size", [32, 48])
def test_discriminator_takes_any_patch_size(size):
    assert DCGANDiscriminator()(torch.rand(3, 3, size, size) * 255).shape == (3,)


# --------------------------------------------------------------------------- configuration


def test_paper_schedules_are_the_defaults():
    for stage, schedule in PAPER_SCHEDULES.items():
        config = TrainConfig(data="photos", stage=stage, init=None if stage == "y" else "x.pt")
        assert (config.steps, config.lr, config.schedule) == (schedule["steps"], schedule["lr"], schedule["schedule"])
    assert TrainConfig(data="photos", stage="gan", init="x.pt", lr=3e-4).lr == 3e-4
    with pytest.raises(ValueError, match="--init"):
        TrainConfig(data="photos", stage="color")
    with pytest.raises(ValueError, match="give --data"):
        TrainConfig()
    for weights in ([1.0], [0.0, 0.0, 0.0], [1.0, -0.5, 0.5]):
        with pytest.raises(ValueError, match="subsampling_weights"):
            TrainConfig(data="photos", subsampling_weights=weights)


@pytest.mark.parametrize("options, message", [
    ({"steps": "ten"}, "option steps: expected int or null, got 'ten'"),
    ({"compile": 1}, "option compile: expected bool"),
    ({"qualities": 10}, "option qualities: expected a list"),
    ({"model_options": [1]}, "option model_options: expected a JSON object"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"validate_every": 0}, "validate_every must be at least 1"),
    ({"patch_size": 0}, "patch_size must be a positive multiple of 16"),
    ({"patch_size": 40}, "patch_size must be a positive multiple of 16"),
    ({"model": "nosuch"}, "unknown model configuration 'nosuch'; choose one of"),
    ({"device": "foo"}, "device 'foo'"),
    ({"checkpoint_part_mb": 0}, "checkpoint_part_mb must be positive"),
])
def test_bad_option_values_are_value_errors_naming_the_option(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(data="photos", **options)


def test_bad_model_options_and_part_sizes_are_refused_before_training(tmp_path, photos):
    for options, message in (({"nosuch": 3}, "unexpected keyword"), ({"block_width": -3}, "block_width")):
        with pytest.raises(ValueError, match=f"model 'tiny' with model_options .*{message}"):
            Trainer(tiny_config(tmp_path / "run", photos, model_options=options)).build()
    with pytest.raises(ValueError, match=r"alone takes .* MiB, more than a part of 0.001 MiB"):
        Trainer(tiny_config(tmp_path / "parts", photos, checkpoint_part_mb=0.001)).build()
    assert not (tmp_path / "parts").exists()  # no config-y.json either: a refused run leaves nothing


def test_config_and_statistics_files_that_are_not_what_they_should_be_are_named(tmp_path, capsys):
    files = {"invalid.json": "{\n", "list.json": "[1, 2]", "unknown.json": json.dumps({"stepz": 5})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        assert main(["train", "--config-file", str(tmp_path / name)]) == 2
        assert f"--config-file {tmp_path / name}: " in capsys.readouterr().err
    for name, text in {"invalid.json": "{", "nomean.json": json.dumps({"std": [1]})}.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"--stats {re.escape(str(tmp_path / name))}: not the JSON of"):
            statistics_overrides(tmp_path / name)


def test_files_that_are_no_checkpoints_are_named(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    torch.save({"model_config": {}}, tmp_path / "noweights.pt")
    for name, message in (("text.pt", "not a readable checkpoint"), ("list.pt", "holds a list"),
                          ("dict.pt", "no model_config, weights"), ("noweights.pt", "no weights")):
        with pytest.raises(ValueError, match=f"{name}: .*{message}"):
            load_qgac(tmp_path / name)


def test_an_init_of_another_configuration_is_refused(tmp_path, photos):
    init = str(save_init(build_model("tiny", block_width=24), tmp_path / "y.pt"))
    with pytest.raises(ValueError, match=r"is not configuration 'tiny' with model_options \{\} \(block_width=24\)"):
        Trainer(tiny_config(tmp_path / "run", photos, init=init)).build()
    Trainer(tiny_config(tmp_path / "run", photos, init=init, model_options={"block_width": 24})).build()


def test_sixteen_bit_training_photos_are_read_as_eight_bit(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = read_rgb(tmp_path / "deep.png")
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    assert abs(float(pixels.mean()) - 127.5) < 1 and pixels.flags.writeable


def test_shard_refuses_a_folder_that_is_not_empty_and_export_a_name_that_is_a_path(tmp_path, photos):
    from training.shard import shard_folder

    out = tmp_path / "shards"
    shard_folder(photos, out, 1.0, 1)
    with pytest.raises(ValueError, match="is not empty"):
        shard_folder(photos, out, 2.0, 1)
    for name in ("../evil", "", ".."):
        with pytest.raises(ValueError, match="a model's name is letters"):
            export_run(tmp_path / "run", "y", name, tmp_path / "hub")
    assert not (tmp_path / "evil").exists()


def test_a_data_error_in_a_loader_worker_ends_the_run_with_one_line(tmp_path, photos):
    """Workers ignore SIGTERM, so an error's traceback that kept them alive to the
    interpreter's exit made it wait for them forever; the message was the worker's traceback."""
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "photo1.png").write_bytes(b"not a png")
    command = [sys.executable, "-m", "training", "train", "--data", str(data), "--run", str(tmp_path / "run"),
               "--model", "tiny", "--steps", "4", "--batch-size", "2", "--patch-size", "32", "--threads", "1",
               "--workers", "1", "--validation-images", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (f"python -m training train: error: {data / 'photo1.png'}: "
                                                   "cannot read image (cannot identify image file "
                                                   f"'{data / 'photo1.png'}')")
    assert "Traceback" not in done.stderr


def test_config_file_then_flags(tmp_path):
    from training.__main__ import build_config

    (tmp_path / "c.json").write_text(json.dumps({"data": "photos", "stage": "color", "init": "a.pt", "steps": 50,
                                                 "lr": 2e-3}))
    args = build_parser().parse_args(["train", "--config-file", str(tmp_path / "c.json"), "--steps", "70",
                                      "--run-dir", "somewhere", "--subsampling-weights", "1", "0", "0"])
    config = build_config(args)
    assert (config.stage, config.steps, config.lr, config.run) == ("color", 70, 2e-3, "somewhere")
    assert config.subsampling_shares == {"4:2:0": 1.0}
    (tmp_path / "bad.json").write_text(json.dumps({"stepz": 5}))
    assert main(["train", "--config-file", str(tmp_path / "bad.json")]) == 2


# --------------------------------------------------------------------------- stages and checkpoints


def test_optimizer_steps_lower_the_loss(tmp_path, photos):
    trainer = Trainer(tiny_config(tmp_path / "run", photos, lr=3e-3))
    trainer.build()
    batch = next(iter(trainer.loader))
    losses = [trainer.regression_step(batch)["loss"] for _ in range(12)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("part_mb", [None, 1.5])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, photos, part_mb):
    """Also from a checkpoint split into parts (files of at most ``part_mb`` MiB) that
    crossed machines: the sliced run resumes from copies of its files in a new folder."""
    straight = train(tiny_config(tmp_path / "straight", photos))
    first = train(tiny_config(tmp_path / "sliced", photos, stop_at=3, checkpoint_part_mb=part_mb))
    assert read_checkpoint(first.checkpoint_path)["step"] == 3
    if part_mb is not None:
        files = sorted((tmp_path / "sliced").glob("checkpoint-y*"))
        assert len(files) > 2 and all(f.stat().st_size <= part_mb * 2**20 for f in files)
        moved = tmp_path / "moved"
        moved.mkdir()
        for file in files:
            (moved / file.name).write_bytes(file.read_bytes())
        shutil.rmtree(tmp_path / "sliced")
        moved.rename(tmp_path / "sliced")
    resumed = train(tiny_config(tmp_path / "sliced", photos, checkpoint_part_mb=part_mb))
    assert tensors_equal(resumed.ema.module.state_dict(), straight.ema.module.state_dict())
    assert resumed.step == straight.step == 6
    assert tensors_equal(resumed.model.state_dict(), straight.model.state_dict())
    a, b = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert [r["step"] for r in resumed.history] == [0, 3, 6]  # the starting weights' record, then every 3
    # the next step's loss is the same too
    batch = straight.loader.dataset.batch(6)
    assert resumed.regression_step(batch) == straight.regression_step(batch)


def test_split_checkpoint_leaves_out_the_optimizer_state_before_failing(tmp_path):
    from training.checkpoints import write_checkpoint

    weights = {"a": torch.arange(300_000, dtype=torch.float32), "b": torch.ones(300_000)}  # 1.1 MiB each
    state = {"step": 7, "model": weights, "optimizer": {"state": {0: {"m": torch.ones(600_000)}}}, "note": "x"}
    files = write_checkpoint(state, tmp_path / "c.pt", part_mb=4.0, max_parts=2)
    assert len(files) == 3 and read_checkpoint(tmp_path / "c.pt", required=())["optimizer"] is not None
    write_checkpoint(state, tmp_path / "c.pt", part_mb=1.5, max_parts=2)  # the moments (2.3 MiB) fit no part
    loaded = read_checkpoint(tmp_path / "c.pt", required=())
    assert loaded["optimizer"] is None and torch.equal(loaded["model"]["a"], weights["a"]) and loaded["note"] == "x"
    assert len(list(tmp_path.glob("c.*.safetensors"))) == 2  # the parts of the earlier checkpoint are gone
    with pytest.raises(ValueError, match="raise checkpoint_part_mb"):
        write_checkpoint(state, tmp_path / "c.pt", part_mb=1.5, max_parts=1)
    next(tmp_path.glob("c.*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        read_checkpoint(tmp_path / "c.pt", required=())


@settings(deadline=None, max_examples=20)
@given(values=st.lists(st.floats(-10, 10), min_size=1, max_size=30), decay=st.sampled_from([0.5, 0.9, 0.999]))
def test_moving_average_follows_its_recursion(values, decay):
    from training.trainer import moving_average

    model = nn.Linear(1, 1, bias=False)
    average = moving_average(model, decay)
    expected = model.weight.item()  # the first update copies
    for n, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        weight = 1.0 - min(decay, (1 + n) / (10 + n))  # update n + 1 follows n earlier ones
        expected = value if n == 0 else expected + weight * (value - expected)
        assert average.module.weight.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_bf16_autocast_step_on_the_cpu(tmp_path, photos):
    """Mixed precision runs the network in bf16 and keeps the DCTs, decoding and loss in float32."""
    trainer = Trainer(tiny_config(tmp_path / "run", photos, precision="bf16"))
    trainer.build()
    batch = trainer.stream.batch(0)
    output, _ = predict_pixels(trainer.model, batch, "y", bf16=True)
    reference, _ = predict_pixels(trainer.model, batch, "y")
    assert output.dtype == torch.float32 and (output - reference).abs().mean() < 2.0
    assert math.isfinite(trainer.regression_step(batch)["loss"])


@pytest.mark.slow
def test_compiled_steps_train_like_eager_ones(tmp_path, photos):
    """``compile`` changes how the steps run, not what they compute; checkpoints keep the model's own keys."""
    # torch.compile and torch.export keep what they learnt of the model code in earlier tests
    # (shapes seen, dimensions made dynamic): compile from nothing
    torch.compiler.reset()
    eager, compiled = (Trainer(tiny_config(tmp_path / name, photos, compile=name == "compiled"))
                       for name in ("eager", "compiled"))
    for trainer in (eager, compiled):
        trainer.build()
    for step in range(2):
        batch = eager.stream.batch(step)
        assert compiled.regression_step(batch)["loss"] == pytest.approx(eager.regression_step(batch)["loss"], abs=1e-4)
    for (key, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), key
    compiled.save_checkpoint()
    assert read_checkpoint(compiled.checkpoint_path)["model"].keys() == eager.model.state_dict().keys()


def test_session_minutes_end_an_invocation_with_a_checkpoint(tmp_path, photos):
    first = train(tiny_config(tmp_path, photos, steps=50, session_minutes=1e-6))
    assert first.step == 1 and read_checkpoint(first.checkpoint_path)["step"] == 1
    second = train(tiny_config(tmp_path, photos, steps=50, session_minutes=1e-6))
    assert second.step == 2


def test_training_bench_reports_patches_per_second(tmp_path, photos):
    report_path = tmp_path / "bench.json"
    argv = ["bench", "--data", str(photos), "--model", "tiny", "--batch-size", "2", "--patch-size", "32",
            "--workers", "0", "--threads", "1", "--batches", "2", "--warmup", "1", "--repeats", "2",
            "--json", str(report_path)]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["command"] == "python -m training " + " ".join(argv)
    assert report["data_patches_per_s"] > 0 and report["step_patches_per_s"] > 0
    assert (report["batch_size"], report["patch_size"], report["device_type"]) == (2, 32, "cpu")
    assert main(argv[:-2] + ["--batches", "0"]) == 2


def test_training_needs_no_jpeglib():
    """A GPU machine gets the training code without jpeglib's 23 MB wheel: nothing on the
    training path imports it (it reads JPEG files, which training never does)."""
    code = ("import sys, training.trainer, training.bench, training.export; "
            "assert 'jpeglib' not in sys.modules, 'jpeglib was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_resume_needs_no_init_and_can_go_without_adam_moments(tmp_path, photos, caplog):
    """What a GPU machine gets back: a checkpoint without Adam's moments, resumed where the
    init it started from is no longer there."""
    train(tiny_config(tmp_path / "y", photos, steps=2))
    init = tmp_path / "init.pt"
    shutil.copy(tmp_path / "y" / "checkpoint-y.pt", init)
    options = dict(stage="color", steps=4, init=str(init), checkpoint_optimizer=False)
    first = train(tiny_config(tmp_path / "color", photos, stop_at=2, **options))
    assert read_checkpoint(first.checkpoint_path)["optimizer"] is None
    init.unlink()
    resumed = train(tiny_config(tmp_path / "color", photos, **options))
    assert resumed.step == 4 and "Adam's moments start afresh" in caplog.text


def test_resuming_refuses_another_model_and_warns_of_other_starting_weights(tmp_path, photos, caplog):
    """A checkpoint only resumes the training it started: not under another model name; and
    it says so when its init now holds other weights (a best-y.pt that stage y improved since)."""
    train(tiny_config(tmp_path / "run", photos, steps=4, stop_at=2))
    with pytest.raises(ValueError, match="trains model 'tiny'"):
        Trainer(tiny_config(tmp_path / "run", photos, steps=4, model="fast")).build()
    with pytest.raises(ValueError, match="trains model 'tiny'"):
        Trainer(tiny_config(tmp_path / "run", photos, steps=4, model_options={"block_width": 16})).build()
    y = train(tiny_config(tmp_path / "run", photos, steps=4))
    colour = dict(stage="color", steps=4, init=str(y.best_path))
    train(tiny_config(tmp_path / "run", photos, stop_at=2, **colour))
    train(tiny_config(tmp_path / "run", photos, steps=8, lr=1e-2, validate_every=1))  # a new best-y.pt
    resumed = Trainer(tiny_config(tmp_path / "run", photos, **colour))
    resumed.build()
    assert resumed.step == 2 and "started from other weights than" in caplog.text
    assert "other data options" not in caplog.text
    Trainer(tiny_config(tmp_path / "run", photos, batch_size=3, seed=5, **colour)).build()
    assert "other data options than it was trained with so far (batch_size 2 -> 3, seed 0 -> 5)" in caplog.text


def test_a_tensor_larger_than_a_checkpoint_part_is_refused(tmp_path):
    from training.checkpoints import write_checkpoint

    state = {"step": 1, "model": {"big": torch.zeros(2**18), "small": torch.zeros(2**10)}}
    with pytest.raises(ValueError, match="model/big alone takes 1 MiB, more than a part of 0.5 MiB"):
        write_checkpoint(state, tmp_path / "c.pt", part_mb=0.5)
    files = write_checkpoint(state, tmp_path / "c.pt", part_mb=1.5)
    assert all(f.stat().st_size <= 1.5 * 2**20 for f in files)
    again = write_checkpoint(state, tmp_path / "c.pt", part_mb=1.5)  # the same step: parts under new names
    assert not set(files[1:]) & set(again[1:]) and not any(f.exists() for f in files[1:])
    assert tensors_equal(read_checkpoint(tmp_path / "c.pt", required=())["model"], state["model"])


def test_best_weights_follow_checkpoint_half(tmp_path, photos):
    train(tiny_config(tmp_path, photos, steps=2, validate_every=1, checkpoint_half=True))
    best = read_checkpoint(tmp_path / "best-y.pt")
    assert {t.dtype for t in best["ema"].values() if t.is_floating_point()} == {torch.float16}


def test_stage_gan_keeps_no_best_by_psnr_unless_asked(tmp_path):
    assert tiny_config(tmp_path, tmp_path, stage="gan", init="x.pt").keep_best is False
    assert tiny_config(tmp_path, tmp_path, stage="color", init="x.pt").keep_best is True
    assert tiny_config(tmp_path, tmp_path, stage="gan", init="x.pt", keep_best=True).keep_best is True
    args = build_parser().parse_args(["train", "--data", "d", "--stage", "gan", "--init", "x.pt", "--no-keep-best"])
    assert args.keep_best is False


def test_a_resumed_run_knows_a_best_validation_newer_than_its_checkpoint(tmp_path, photos):
    """Killed after best-y.pt was written but before the checkpoint: a later, worse
    validation must not replace the better best-y.pt."""
    trainer = train(tiny_config(tmp_path, photos, steps=6, stop_at=4, validate_every=2))
    state = read_checkpoint(trainer.checkpoint_path)
    best = read_checkpoint(trainer.best_path)
    torch.save({**state, "history": state["history"][:1]}, trainer.checkpoint_path)  # as if saved at step 0
    resumed = Trainer(tiny_config(tmp_path, photos, steps=6, validate_every=2))
    resumed.build()
    assert resumed.best_score == max((r["q10"] + r["q50"]) / 2 for r in [*state["history"][:1], best["history"][-1]])


def test_held_out_photos_are_never_trained_on(tmp_path, photos):
    """Not by a run that validates on photos its data also holds, not by a run started from
    weights validated on them, and a resumed run holds out the same photos as before."""
    with pytest.raises(DatasetError, match="held-out photos are also training photos"):
        Trainer(tiny_config(tmp_path / "a", photos, validation_data=str(photos))).build()
    first = train(tiny_config(tmp_path / "y", photos, steps=2))
    assert read_checkpoint(first.best_path)["held_out"] == first.held_out == ["photo0.png"]
    grown = tmp_path / "grown"
    shutil.copytree(photos, grown)
    Image.open(photos / "photo1.png").save(grown / "aaa.png")  # the split now holds out aaa.png
    with pytest.raises(DatasetError, match="1 photos that .* was validated on .photo0.png"):
        Trainer(tiny_config(tmp_path / "next", grown, steps=2, init=str(first.best_path))).build()
    train(tiny_config(tmp_path / "resumed", photos, steps=4, stop_at=2))
    with pytest.raises(DatasetError, match="validated on other photos"):
        Trainer(tiny_config(tmp_path / "resumed", grown, steps=4)).build()


def test_the_lineage_of_a_checkpoint_init_is_copied_when_the_run_starts(tmp_path, photos):
    """Stage y trained on after stage color started from its best-y.pt: the colour stage's
    export names the stage y it really started from."""
    y = train(tiny_config(tmp_path, photos, steps=4, stop_at=2, validate_every=1))
    colour = train(tiny_config(tmp_path, photos, steps=2, stage="color", init=str(y.best_path)))
    before = [(r.stage, r.step) for r in run_stages(tmp_path, "color")]
    train(tiny_config(tmp_path, photos, steps=4, validate_every=1, lr=1e-2))  # stage y goes on
    assert [(r.stage, r.step) for r in run_stages(tmp_path, "color")] == before == [
        ("y", read_checkpoint(colour.checkpoint_path)[INIT_LINEAGE_KEY][-1]["step"]), ("color", 2)]

def test_shards_keep_the_validation_photos_apart(tmp_path):
    from training.shard import shard_folder

    source = tmp_path / "photos"
    source.mkdir()
    rng = np.random.default_rng(0)
    for index in range(9):
        Image.fromarray(rng.integers(0, 256, (16, 16 + 8 * index, 3), np.uint8)).save(source / f"p{index}.png")
    folders = shard_folder(source, tmp_path / "out", shard_mb=6000 / 2**20, validation_images=3)
    _, held_out = split_images(training_images(source), 3)
    assert sorted(p.name for p in training_images(tmp_path / "out" / "validation")) == sorted(p.name for p in held_out)
    sharded = [p.name for folder in folders for p in training_images(folder)]
    assert sorted(sharded) == sorted(p.name for p in training_images(source) if p not in held_out)
    assert all(sum(p.stat().st_size for p in training_images(f)) <= 6000 for f in folders) and len(folders) > 1
    with pytest.raises(ValueError, match="larger than a shard"):
        shard_folder(source, tmp_path / "small", shard_mb=1000 / 2**20)


def test_a_finished_trainer_is_freed_at_once(tmp_path, photos):
    """No reference cycle keeps a trainer (its model, data and loader workers) alive until
    the garbage collector runs: at interpreter exit that wait hung on the workers."""
    import gc
    import weakref

    trainer = train(tiny_config(tmp_path, photos, steps=2, workers=1))
    gc.disable()
    try:
        alive = weakref.ref(trainer)
        del trainer
        assert alive() is None
    finally:
        gc.enable()


def test_best_validated_weights_and_the_effective_config_are_kept(tmp_path, photos):
    trainer = train(tiny_config(tmp_path, photos, steps=6, validate_every=2))
    scores = {r["step"]: (r["q10"] + r["q50"]) / 2 for r in trainer.history}
    best = read_checkpoint(tmp_path / "best-y.pt")
    assert best["step"] == max(scores, key=scores.__getitem__) and "optimizer" not in best
    assert load_qgac(tmp_path / "best-y.pt").config == trainer.model.config
    assert json.loads((tmp_path / "config-y.json").read_text()) == dataclasses.asdict(trainer.config)
    quiet = train(tiny_config(tmp_path / "quiet", photos, steps=2, keep_best=False))
    assert not quiet.best_path.exists()


def test_a_stage_that_only_worsens_keeps_its_starting_weights_as_best(tmp_path, photos):
    """The first validation is of the starting weights (step 0); with a rate that wrecks the
    network every later record is worse, so best-y.pt holds the starting weights."""
    start = build_model("tiny")
    init = save_init(start, tmp_path / "init.pt")
    trainer = train(tiny_config(tmp_path / "run", photos, init=str(init), lr=0.1, ema_decay=0.0, validate_every=2))
    assert [r["step"] for r in trainer.history] == [0, 2, 4, 6]
    assert all(not r["q10"] >= trainer.history[0]["q10"] for r in trainer.history[1:])  # worse, or NaN
    best = read_checkpoint(tmp_path / "run" / "best-y.pt")
    assert best["step"] == 0 and tensors_equal(best["ema"], start.state_dict())


def test_half_precision_checkpoints_resume_from_the_rounded_weights(tmp_path, photos):
    first = train(tiny_config(tmp_path, photos, steps=4, stop_at=2, checkpoint_half=True, checkpoint_optimizer=False))
    state = read_checkpoint(first.checkpoint_path)
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float16}
    assert {t.dtype for t in state["ema"].values() if t.is_floating_point()} == {torch.float16}
    resumed = Trainer(tiny_config(tmp_path, photos, steps=4, checkpoint_half=True, checkpoint_optimizer=False))
    resumed.build()
    assert next(resumed.model.parameters()).dtype == torch.float32
    assert tensors_equal(resumed.model.state_dict(), {k: v.float() if v.is_floating_point() else v
                                                      for k, v in state["model"].items()})
    resumed.train()
    assert resumed.step == 4


def test_resumed_schedule_follows_the_new_step_count(tmp_path, photos):
    train(tiny_config(tmp_path, photos, steps=4, stop_at=2, validation_images=0))
    resumed = train(tiny_config(tmp_path, photos, steps=8, validation_images=0))
    assert resumed.step == 8 and resumed.scheduler.get_last_lr()[0] == pytest.approx(1e-6)
    # the schedule is a function of the step: half way through 8 steps, half way down the cosine
    half = Trainer(tiny_config(tmp_path / "other", photos, steps=8, validation_images=0))
    half.build()
    half.step = 4
    assert half.learning_rate() == pytest.approx(cosine_rate(1e-3, 1e-6, 0.5))
    with pytest.raises(ValueError, match="'cosine' schedule"):
        Trainer(tiny_config(tmp_path, photos, steps=10, schedule="step", validation_images=0)).build()


@settings(deadline=None, max_examples=30)
@given(st.floats(1e-6, 1e-2), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
@example(end=0.009230143252562717, scale=0.84375, a=0.0, b=0.0)  # rounded one ulp above start once
def test_cosine_rate_falls_from_start_to_end(end, scale, a, b):
    start = end * (1 + 100 * scale)
    assert cosine_rate(start, end, 0) == pytest.approx(start) and cosine_rate(start, end, 1) == pytest.approx(end)
    low, high = sorted((a, b))
    assert end <= cosine_rate(start, end, high) <= cosine_rate(start, end, low) <= start


def test_time_budget_ends_the_stage_at_the_final_rate(tmp_path, photos):
    budget_s = 0.5
    trainer = train(tiny_config(tmp_path, photos, steps=100_000, max_minutes=budget_s / 60, validation_images=0,
                                min_lr=1e-5))
    assert 0 < trainer.step < 100_000 and trainer.elapsed >= budget_s
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert torch.load(trainer.checkpoint_path, weights_only=True)["step"] == trainer.step
    with pytest.raises(ValueError, match="max_minutes"):
        tiny_config(tmp_path, photos, max_minutes=1, schedule="step")


def test_prepare_downscales_losslessly_and_keeps_the_manifest(tmp_path, photos):
    (photos / "MANIFEST.tsv").write_text("file\tpackage\tlicense\n")
    try:
        written = downscale_folder(photos, tmp_path / "half", factor=2)
    finally:
        (photos / "MANIFEST.tsv").unlink()
    assert [p.stem for p in written] == [p.stem for p in training_images(photos)]
    assert (tmp_path / "half" / "MANIFEST.tsv").is_file()
    with Image.open(written[0]) as small, Image.open(training_images(photos)[0]) as large:
        expected = large.convert("RGB").resize((large.width // 2, large.height // 2), Image.Resampling.LANCZOS)
        assert small.format == "WEBP" and np.array_equal(np.asarray(small.convert("RGB")), np.asarray(expected))
    twins = tmp_path / "twins"
    twins.mkdir()
    for suffix in (".png", ".bmp"):
        Image.new("RGB", (16, 16)).save(twins / f"a{suffix}")
    with pytest.raises(DatasetError, match="same name"):
        downscale_folder(twins, tmp_path / "twins-half")
    with pytest.raises(ValueError, match="is inside --data"):
        downscale_folder(twins, twins / "half")
    assert not (twins / "half").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, photos) -> Path:
    """A run folder with stage y and stage color checkpoints (3 steps each)."""
    run = tmp_path_factory.mktemp("run")
    train(tiny_config(run, photos, steps=3))
    train(tiny_config(run, photos, steps=3, stage="color", init=str(run / "checkpoint-y.pt")))
    return run


def test_color_stage_keeps_the_y_network_bit_identical(trained_run):
    # stage color starts from stage y's moving average of the weights, its product
    y_state = torch.load(trained_run / "checkpoint-y.pt", weights_only=True)["ema"]
    color_state = torch.load(trained_run / "checkpoint-color.pt", weights_only=True)["model"]
    assert tensors_equal(load_qgac(trained_run / "checkpoint-y.pt").state_dict(), y_state)
    y_keys = [k for k in y_state if not k.startswith("color_network.")]
    assert all(torch.equal(y_state[k], color_state[k]) for k in y_keys)
    assert any(not torch.equal(y_state[k], color_state[k]) for k in y_state if k.startswith("color_network."))


def test_gan_stage_trains_both_networks_and_resumes(tmp_path, photos):
    init = save_init(build_model("tiny"), tmp_path / "init.pt")
    options = dict(stage="gan", init=str(init), texture_network="test_training:tiny_features", texture_layer="1")
    trainer = train(tiny_config(tmp_path / "run", photos, stop_at=2, **options))
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    assert {"model", "model_config", "optimizer", "step", "elapsed", "history", "torch_rng",
            "python_rng", "config", "discriminator", "discriminator_optimizer"} <= set(state)
    start = torch.load(init, weights_only=True)["model"]
    for part in ("y_network.", "color_network."):
        assert any(not torch.equal(start[k], state["model"][k]) for k in start if k.startswith(part))
    resumed = train(tiny_config(tmp_path / "run", photos, stop_at=3, **options))
    assert resumed.step == 3
    assert resumed.discriminator_optimizer.param_groups[0]["lr"] == resumed.learning_rate()
    assert not tensors_equal(resumed.discriminator.state_dict(), state["discriminator"])


# --------------------------------------------------------------------------- interpolation and export


def test_card_lists_the_stages_of_the_run_started_from(tmp_path, trained_run, photos):
    """A run that starts from another run's checkpoint lists that run's stages first."""
    tuned = tmp_path / "tuned"
    train(tiny_config(tuned, photos, steps=2, init=str(trained_run / "checkpoint-color.pt")))
    records = run_stages(tuned, "y")
    assert [(r.run, r.stage, r.step) for r in records] == [
        (trained_run.name, "y", 3), (trained_run.name, "color", 3), ("tuned", "y", 2)]
    notes = training_notes(records)
    assert f"| {trained_run.name} | color | 3 |" in notes and "| tuned | y | 2 |" in notes


def test_card_states_how_qualities_were_drawn():
    config = dict(batch_size=16, patch_size=128, schedule="cosine", lr=1e-4, min_lr=1e-6, lr_step=1,
                  qualities=[10, 10, 10, 20, 30, 30], continuous_quality=False)
    weighted = StageRecord("y", 5, 60.0, config, None, "run")
    ranged = StageRecord("color", 5, 60.0, {**config, "qualities": [5, 95], "continuous_quality": True}, None, "run")
    notes = training_notes([weighted, ranged])
    assert "| 10 x3 20 30 x2 |" in notes and "| 5..95, any integer |" in notes


def test_card_lists_the_stages_of_the_exported_folder_started_from(tmp_path, trained_run, photos):
    """An export records its stages in training.json; a run started from that folder lists them first."""
    exported = export_run(trained_run, "color", "first", hub_dir=tmp_path / "hub")
    assert [(r.stage, r.step) for r in read_lineage(exported)] == [("y", 3), ("color", 3)]
    tuned = tmp_path / "tuned"
    train(tiny_config(tuned, photos, steps=2, init=str(exported)))
    assert [(r.run, r.stage, r.step) for r in run_stages(tuned, "y")] == [
        (trained_run.name, "y", 3), (trained_run.name, "color", 3), ("tuned", "y", 2)]
    again = export_run(tuned, "y", "second", hub_dir=tmp_path / "hub")
    assert len(read_lineage(again)) == 3 and f"| {trained_run.name} | color | 3 |" in (again / "README.md").read_text()
    # the folder replaced by the newer weights (as `publish embed` does), then the run resumed: the
    # run still names the history it started from, copied into its checkpoints at its start
    shutil.rmtree(exported)
    shutil.copytree(again, exported)
    train(tiny_config(tuned, photos, steps=3, init=str(exported)))
    started = [(trained_run.name, "y", 3), (trained_run.name, "color", 3)]
    assert [(r.run, r.stage, r.step) for r in run_stages(tuned, "y")][:-1] == started
    # resumed again without --init, its checkpoint split into parts: still the same history
    train(tiny_config(tuned, photos, steps=4, checkpoint_part_mb=2))
    assert list(tuned.glob("checkpoint-y.*.part*.safetensors"))
    assert read_checkpoint(tuned / "checkpoint-y.pt")[INIT_LINEAGE_KEY] == as_raw(read_lineage(exported)[:2])
    assert [(r.run, r.stage) for r in run_stages(tuned, "y")] == [(run, stage) for run, stage, _ in started] + [
        ("tuned", "y")]
    for broken in ('[{"stage": "y"}]', "{}"):
        (exported / "training.json").write_text(broken)
        with pytest.raises(ValueError, match="training.json: not a list of training stage records"):
            read_lineage(exported)
        with pytest.raises(ValueError, match="--init .*training records cannot be read"):
            Trainer(tiny_config(tmp_path / "third", photos, steps=1, init=str(exported))).build()


def test_a_weights_only_checkpoint_is_refused_for_resuming_by_name(tmp_path, photos):
    run = tmp_path / "run"
    run.mkdir()
    save_init(build_model("tiny"), run / "checkpoint-y.pt")
    with pytest.raises(ValueError, match=r"checkpoint-y.pt cannot be resumed: it has no .*optimizer"):
        Trainer(tiny_config(run, photos, steps=2)).build()
    assert main(_train_flags(run, photos, 2)) == 2


def test_stage_y_without_statistics_warns(tmp_path, photos, caplog):
    with caplog.at_level("WARNING", logger="training"):
        Trainer(tiny_config(tmp_path / "run", photos, steps=1)).build()
    assert "no --stats" in caplog.text


def test_interpolation_of_an_exported_folder_keeps_its_lineage(tmp_path, trained_run):
    exported = export_run(trained_run, "color", "regression", tmp_path / "hub")
    folder = interpolate(exported, exported, 0.5, tmp_path / "blend")
    assert read_lineage(folder) == read_lineage(exported) != []


def test_interpolation_blends_the_weights(tmp_path):
    torch.manual_seed(1)
    regression, gan = build_model("tiny"), build_model("tiny")
    sources = save_init(regression, tmp_path / "r.pt"), save_init(gan, tmp_path / "g.pt")
    for alpha in (0.0, 0.7, 1.0):
        folder = interpolate(*sources, alpha, tmp_path / f"blend-{alpha}")
        blended = load_model(folder).state_dict()
        for key, value in regression.state_dict().items():
            expected = (1 - alpha) * value + alpha * gan.state_dict()[key]
            assert torch.allclose(blended[key], expected, atol=1e-6), key
        assert f"alpha = {alpha:g}" in (folder / "README.md").read_text()
    save_init(build_model("tiny", color=False), tmp_path / "gray.pt")
    with pytest.raises(ValueError, match="different configurations"):
        interpolate(sources[0], tmp_path / "gray.pt", 0.5, tmp_path / "bad")
    assert main(["interpolate", "--regression", str(sources[0]), "--gan", str(sources[1]), "--alpha", "2",
                 "--out", str(tmp_path / "x")]) == 2


def test_export_loads_back_with_identical_outputs(tmp_path, trained_run, make_image, make_jpeg, monkeypatch):
    benchmark = tmp_path / "bench"
    benchmark.mkdir()
    make_image(7, 40, 56, smooth=True).save(benchmark / "a.png")
    checkpoint = torch.load(trained_run / "checkpoint-color.pt", weights_only=True)
    trained = load_qgac(trained_run / "checkpoint-color.pt").eval()
    report = evaluate_dataset(trained, benchmark, (10, 50), progress=False)
    command = f"qgac eval --dataset {benchmark} --quality 10 50"
    (tmp_path / "eval.json").write_text(json.dumps({**report, "command": command}))
    monkeypatch.setattr(hub, "EMBEDDED_ROOT", tmp_path / "embedded")
    folder = export_run(trained_run, "color", "qgac-test", tmp_path / "hub", [tmp_path / "eval.json"], embed=True)
    assert stage_checkpoint(trained_run, "color") == trained_run / "best-color.pt"  # the best validated weights
    assert folder == tmp_path / "embedded" / "qgac-test" and not (tmp_path / "hub").exists()  # held once
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md", "training.json"}
    card = (folder / "README.md").read_text()
    assert "| y | 3 |" in card and "| color | 3 |" in card and "Wall-clock time" in card
    assert "`" + Path(checkpoint["config"]["data"]).name + "`" in card
    rows, _, commands = read_evaluations([tmp_path / "eval.json"])
    assert f"{rows[0]['corrected_psnr']:.2f}" in card and "PSNR gain (dB)" in card
    assert commands == [command] and f"```sh\n{command}\n```" in card
    report["results"][0]["corrected"]["psnr"] = None  # what --json writes for an infinite mean
    (tmp_path / "infinite.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"infinite.json: quality 10 has a metric that is no finite number"):
        read_evaluations([tmp_path / "infinite.json"])
    # the same weights, bit for bit, and so the same corrections (up to the float
    # rounding of CPU kernels, which need not be bitwise reproducible)
    jpeg = read_coefficients(make_jpeg(make_image(3, 40, 48, smooth=True), quality=20))
    loaded = load_model(folder)
    assert tensors_equal(loaded.state_dict(), trained.state_dict())
    assert torch.allclose(correct(loaded, jpeg), correct(trained, jpeg), atol=1e-3)
    gray_folder = export_run(trained_run, "y", "qgac-gray", tmp_path / "hub")
    gray = load_model(gray_folder)
    assert gray.color_network is None
    assert gray.state_dict().keys() < trained.state_dict().keys()
    assert all(torch.equal(value, trained.state_dict()[key]) for key, value in gray.state_dict().items())
    gray_jpeg = read_coefficients(make_jpeg(make_image(4, 40, 48, mode="L"), quality=30))
    assert torch.allclose(correct(gray, gray_jpeg), correct(trained, gray_jpeg), atol=1e-3)
    # --half: float16 on disk, half the bytes, float32 again once loaded, the weights rounded once
    half_folder = export_run(trained_run, "color", "qgac-half", tmp_path / "hub", half=True)
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(half_folder / "model.safetensors").values()} == {torch.float16}
    size = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half_folder) < 0.55 * size(folder)
    half = load_model(half_folder)
    assert all(torch.equal(value, trained.state_dict()[key].half().float()) for key, value in half.state_dict().items())
    assert next(half.parameters()).dtype == torch.float32


def test_card_gives_a_returned_folder_the_card_export_would_have_written(tmp_path, trained_run, make_image):
    """A folder that came back without its run (a GPU session's) gets its evaluation into its
    card from its training.json: the card export writes, weights and config untouched."""
    benchmark = tmp_path / "bench"
    benchmark.mkdir()
    make_image(8, 40, 56, smooth=True).save(benchmark / "a.png")
    report = evaluate_dataset(load_qgac(trained_run / "checkpoint-color.pt").eval(), benchmark, (10,), progress=False)
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({**report, "command": f"qgac eval --dataset {benchmark} --quality 10"}))
    returned = export_run(trained_run, "color", "qgac-test", tmp_path / "returned")
    exported = export_run(trained_run, "color", "qgac-test", tmp_path / "exported", [evaluation])
    kept = {name: (returned / name).read_bytes() for name in ("config.json", "model.safetensors", "training.json")}
    assert (returned / "README.md").read_text() != (exported / "README.md").read_text()
    assert main(["card", str(returned), "--eval-json", str(evaluation)]) == 0
    assert (returned / "README.md").read_text() == (exported / "README.md").read_text()
    assert kept == {name: (returned / name).read_bytes() for name in kept}


def test_card_refuses_a_folder_it_cannot_write_a_true_card_for(tmp_path, trained_run):
    """No training.json, an incomplete one, training data that is not here, no folder at all:
    exit 2 with the reason, and the card as it was."""
    folder = export_run(trained_run, "color", "qgac-test", tmp_path / "hub")
    card = (folder / "README.md").read_text()
    evaluation = tmp_path / "eval.json"
    evaluation.write_text("{}")
    records = json.loads((folder / "training.json").read_text())
    broken = [json.dumps([{**records[0], "config": {}}]), json.dumps([{**records[0],
              "config": {**records[0]["config"], "data": str(tmp_path / "gone")}}])]
    for lineage in broken:
        (folder / "training.json").write_text(lineage)
        assert main(["card", str(folder), "--eval-json", str(evaluation)]) == 2
    (folder / "training.json").unlink()
    assert main(["card", str(folder), "--eval-json", str(evaluation)]) == 2
    assert main(["card", str(tmp_path / "missing"), "--eval-json", str(evaluation)]) == 2
    assert (folder / "README.md").read_text() == card


def test_export_refuses_a_run_whose_starting_weights_are_gone(tmp_path, trained_run):
    """A run started from a folder or checkpoint that is no longer there cannot list the stages
    before it: exporting it is refused, not done with half its history."""
    run = tmp_path / "run"
    run.mkdir()
    state = torch.load(trained_run / "checkpoint-y.pt", weights_only=True)
    del state[INIT_LINEAGE_KEY]  # a checkpoint from before runs copied their starting folder's records
    state["config"]["init"] = str(tmp_path / "gone")
    torch.save(state, run / "checkpoint-y.pt")
    with pytest.raises(ValueError, match="not here"):
        export_run(run, "y", "qgac-test", tmp_path / "hub")
    # the starting folder replaced by this run's own export: its stages would be listed twice
    state["config"]["init"] = str(tmp_path / "hub" / "qgac-test")
    torch.save(state, run / "checkpoint-y.pt")
    shutil.copytree(export_run(trained_run, "y", "qgac-test", tmp_path / "start"), tmp_path / "hub" / "qgac-test")
    assert len(run_stages(run, "y")) == 2  # its stage y after the one it started from
    shutil.copy(export_run(run, "y", "qgac-test", tmp_path / "later") / "training.json",
                tmp_path / "hub" / "qgac-test" / "training.json")
    with pytest.raises(ValueError, match="itself"):
        export_run(run, "y", "qgac-test", tmp_path / "again")
    with pytest.raises(SystemExit, match="2"):  # --embed writes into the package, so --hub-dir is refused
        main(["export", "--run", str(run), "--stage", "y", "--name", "x", "--embed", "--hub-dir", "h"])


# --------------------------------------------------------------------------- processes


def _command(*args: str) -> list[str]:
    return [sys.executable, *args]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _train_flags(run: Path, data: Path, steps: int, workers: int = 0) -> list[str]:
    return ["train", "--data", str(data), "--run-dir", str(run), "--model", "tiny", "--steps", str(steps),
            "--batch-size", "2", "--patch-size", str(PATCH), "--workers", str(workers), "--validation-images", "0",
            "--threads", "1"]


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["step"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and /proc")
@pytest.mark.parametrize("how", ["SIGTERM to the process", "SIGINT to the process group"])
def test_signal_stops_gracefully_and_the_run_resumes(tmp_path, photos, how):
    run = tmp_path / "run"
    workers = 1 if "group" in how else 0
    flags = _train_flags(run, photos, 100_000, workers) + ["--checkpoint-minutes", "0"]
    checkpoint, output = run / "checkpoint-y.pt", tmp_path / "stderr.txt"
    with output.open("w") as stderr:
        process = subprocess.Popen(_command("-m", "training", *flags), cwd=REPO, env=_environment(),
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), output.read_text()[-3000:]
        if "group" in how:
            # Ctrl-C reaches the loader worker too: it must keep serving the main process
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            assert children, "no loader worker process"
            for child in children:
                os.kill(int(child), signal.SIGINT)
            target = _step(checkpoint) + 3
            while process.poll() is None and _step(checkpoint) < target and time.monotonic() < deadline:
                time.sleep(0.2)
            assert process.poll() is None and _step(checkpoint) >= target, output.read_text()[-3000:]
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, output.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    step = _step(checkpoint)
    assert 1 <= step < 100_000
    assert (run / "train.log").read_text().count("stopping after this step") == 1  # the main process only
    assert not list(run.glob("*.tmp"))
    resumed = Trainer(tiny_config(run, photos, steps=100_000, stop_at=step + 2, validation_images=0, schedule="step"))
    resumed.build()
    assert resumed.step == step
    resumed.train()
    assert _step(checkpoint) == step + 2



def _gpu_session(photos: Path, out: Path, run: Path, y_minutes: str, color_minutes: str,
                 **environment: str) -> subprocess.CompletedProcess:
    """training/gpu-session.sh on the CPU, shrunk to seconds."""
    environment = {**_environment(), "OUT": str(out), "BENCH_BATCHES": "1", **environment,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    held_out = out.parent / "held-out"  # photos apart from the shard, as `training shard` writes them
    if not held_out.exists():
        held_out.mkdir(parents=True)
        shutil.copy(photos / "photo0.png", held_out / "held-out0.png")
    flags = ["--validation-data", str(held_out), "--batch-size", "2", "--patch-size", str(PATCH), "--workers", "0",
             "--threads", "1", "--validate-every", "2", "--max-minutes", "0.05"]
    out.mkdir(exist_ok=True)
    result = subprocess.run(["bash", str(REPO / "training" / "gpu-session.sh"), str(photos), y_minutes, color_minutes,
                             str(run), *flags], cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_gpu_session_script_brings_back_the_best_weights_in_eight_files(tmp_path, photos):
    """training/gpu-session.sh on the CPU, shrunk: bench, both stages (each validated first,
    at step 0), then the export of the colour stage's best weights; what lands in $OUT
    fits the device tool's eight files and loads as a model."""
    out, run = tmp_path / "out", tmp_path / "run"
    _gpu_session(photos, out, run, "0.01", "0.01", NAME="qgac-test")
    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert returned == ["bench.json", "hub/qgac-test/README.md", "hub/qgac-test/config.json",
                        "hub/qgac-test/model.safetensors", "hub/qgac-test/training.json", "train.log"]
    records = [json.loads(line.split("validation ", 1)[1]) for line in (out / "train.log").read_text().splitlines()
               if "validation {" in line]
    assert [r["step"] for r in records][:1] == [0] and sum(r["step"] == 0 for r in records) == 2  # both stages
    assert json.loads((run / "config-y.json").read_text())["init"] == "qgac_transforms/weights/qgac-small"  # no qgac-test
    best_color = read_checkpoint(run / "best-color.pt")
    exported = load_qgac(out / "hub" / "qgac-test")
    weights = dict(exported.named_parameters())  # stored in float16; the statistics come from the config
    assert weights and all(torch.equal(best_color["ema"][key].half().float(), value) for key, value in weights.items())
    # a second call on the warm machine that trains stage y on: stage color starts afresh from its new best
    shutil.rmtree(out / "hub")
    _gpu_session(photos, out, run, "0.01", "0.01", NAME="qgac-test")
    assert len(list(run.glob("superseded-*/checkpoint-color.pt"))) == 1 and (out / "hub" / "qgac-test").is_dir()
    assert read_checkpoint(run / "checkpoint-color.pt")["init_digest"] == init_digest(run / "best-y.pt")
    # a later call that skips stage y still starts stage color from the best-y.pt it finds
    later = tmp_path / "later"
    later.mkdir()
    for file in run.glob("best-y*"):
        shutil.copy(file, later / file.name)
    shutil.rmtree(out / "hub")
    _gpu_session(photos, out, later, "0", "0.01", NAME="qgac-test")
    assert json.loads((later / "config-color.json").read_text())["init"] == str(later / "best-y.pt")


def test_gpu_session_script_starts_a_new_model_and_continues_it_from_the_hub_folder(tmp_path, photos):
    """CONFIG=fast: the first session trains a new network from random weights (with
    qgac-small's statistics), the next starts from the folder the first brought back."""
    hub_dir = tmp_path / "hub"
    out = tmp_path / "out"
    _gpu_session(photos, out, tmp_path / "first", "0.01", "0.01", CONFIG="fast", HUB=str(hub_dir))
    first = json.loads((tmp_path / "first" / "config-y.json").read_text())
    assert first["model"] == "fast" and first["init"] is None and first["stats"] == "qgac_transforms/weights/qgac-small"
    shutil.copytree(out / "hub", hub_dir)  # committed after the session
    exported = load_qgac(hub_dir / "qgac-fast")
    small = load_qgac(hub.embedded_folder("qgac-small"))
    assert exported.config["block_body"] == "residual" and not exported.config["frequency_net"]
    assert exported.config["coefficient_mean"] == small.config["coefficient_mean"]
    # HUB is searched in order, names with spaces kept whole: hub_dir's comes before the packaged one
    searched = f"{tmp_path / 'no models here'}:{hub_dir}:qgac_transforms/weights"
    _gpu_session(photos, tmp_path / "out2", tmp_path / "second", "0.01", "0", CONFIG="fast", HUB=searched)
    assert json.loads((tmp_path / "second" / "config-y.json").read_text())["init"] == str(hub_dir / "qgac-fast")
    # by default the packaged model is the one continued (bench only: both stages 0 minutes)
    _gpu_session(photos, tmp_path / "out3", tmp_path / "third", "0", "0", CONFIG="fast")
    assert "--init qgac_transforms/weights/qgac-fast" in json.loads((tmp_path / "out3" / "bench.json").read_text())["command"]


def test_gpu_session_script_brings_back_a_model_too_large_for_one_file_in_shards(tmp_path, photos):
    """CONFIG=base (23 MiB in float16, over the 16 MiB a returned file may hold): the export
    comes back in two shards, still within eight files; a new model's colour network starts
    from COLOR_FROM; the next session starts from the sharded folder."""
    hub_dir, out = tmp_path / "hub", tmp_path / "out"
    _gpu_session(photos, out, tmp_path / "first", "0.01", "0.01", CONFIG="base", HUB=str(hub_dir),
                 COLOR_FROM="qgac_transforms/weights/qgac-fast")
    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert returned == ["bench.json", "hub/qgac-base/README.md", "hub/qgac-base/config.json",
                        "hub/qgac-base/model-00001-of-00002.safetensors",
                        "hub/qgac-base/model-00002-of-00002.safetensors",
                        "hub/qgac-base/model.safetensors.index.json", "hub/qgac-base/training.json", "train.log"]
    assert all((out / name).stat().st_size <= 15 * 2**20 for name in returned)
    first = json.loads((tmp_path / "first" / "config-y.json").read_text())
    assert first["init"] is None and first["init_color"] == "qgac_transforms/weights/qgac-fast"
    started = load_qgac(tmp_path / "first" / "best-y.pt")
    assert started.chroma_upsampling == "fancy"  # the base that qgac-fast's colour network was trained on
    colour = started.color_network.state_dict()  # stage y keeps it as it came
    fast = load_qgac(hub.embedded_folder("qgac-fast")).color_network.state_dict()
    assert all(torch.equal(colour[key], fast[key]) for key in fast)
    shutil.copytree(out / "hub", hub_dir)  # committed after the session
    assert load_qgac(hub_dir / "qgac-base").config["block_width"] == 128
    _gpu_session(photos, tmp_path / "out2", tmp_path / "second", "0.01", "0", CONFIG="base", HUB=str(hub_dir),
                 COLOR_FROM="qgac_transforms/weights/qgac-fast")
    second = json.loads((tmp_path / "second" / "config-y.json").read_text())
    assert second["init"] == str(hub_dir / "qgac-base") and second["init_color"] is None


@pytest.mark.slow
@pytest.mark.parametrize("budget", [False, True], ids=["steps", "time budget"])
def test_two_process_gloo_ddp_run_finishes(tmp_path, photos, budget):
    run = tmp_path / "run"
    flags = _train_flags(run, photos, 3) + ["--validation-images", "1", "--validate-every", "3"]
    if budget:  # both processes follow one clock and stop after the same step
        flags += ["--steps", "100000", "--max-minutes", "0.02", "--schedule", "cosine", "--validate-every", "100000"]
    result = subprocess.run(
        _command("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training", *flags),
        cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # one process writes: the checkpoint, the best weights, the effective config and the log
    assert sorted(p.name for p in run.iterdir()) == ["best-y.pt", "checkpoint-y.pt", "config-y.json", "train.log"]
    state = torch.load(run / "checkpoint-y.pt", weights_only=True)
    step = state["step"]
    assert (0 < step < 100_000 and state["elapsed"] >= 1.2) if budget else step == 3
    log = (run / "train.log").read_text()
    # the starting weights' validation and the finished stage's, by one process
    assert log.count(f"checkpoint step {step}") == 1 and log.count("validation {") == 2


@pytest.mark.slow
def test_two_process_gloo_ddp_gan_stage(tmp_path, photos):
    """Stage gan under DDP: both networks and the discriminator; the default VGG cut at its second layer."""
    init = save_init(build_model("tiny"), tmp_path / "init.pt")
    run = tmp_path / "run"
    flags = _train_flags(run, photos, 2) + ["--stage", "gan", "--init", str(init), "--texture-layer", "3"]
    result = subprocess.run(
        _command("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training", *flags),
        cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run / "checkpoint-gan.pt", weights_only=True)
    assert state["step"] == 2 and state["config"]["texture_layer"] == "3"
    start = torch.load(init, weights_only=True)["model"]
    for part in ("y_network.", "color_network."):
        assert any(not torch.equal(start[k], state["model"][k]) for k in start if k.startswith(part))


def test_study_runs_trainings_side_by_side_and_records_each_ones_usage(tmp_path):
    """training/study/run.py --parallel: every command runs at once; each run folder gets its
    own wall time and CPU seconds; a failed command is an error after all have ended."""
    from training.study.run import run_training

    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    runs = {tmp_path / name: [sys.executable, "-c", burn] for name in ("a", "b")}
    run_training(runs)
    for run in runs:
        usage = json.loads((run / "usage.json").read_text())
        assert usage["cpu_s"] >= 0.3 and usage["wall_s"] >= usage["cpu_s"] * 0.5 and len(usage["loadavg"]) == 1
    with pytest.raises(subprocess.CalledProcessError):
        run_training({tmp_path / "c": [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "d": [sys.executable, "-c", "pass"]})
    assert (tmp_path / "d" / "usage.json").exists()  # the other run still recorded


def test_init_color_starts_the_colour_network_from_another_model(tmp_path, photos):
    """init_color: Y from ``init``, the colour network from another model of the same widths
    (a new Y network reuses a trained colour network); a misfit is a clear error."""
    torch.manual_seed(1)
    y_source, color_source = build_model("tiny"), build_model("tiny")
    trainer = Trainer(tiny_config(tmp_path / "run", photos, stage="color",
                                  init=str(save_init(y_source, tmp_path / "y.pt")),
                                  init_color=str(save_init(color_source, tmp_path / "color.pt"))))
    trainer.build()
    model = trainer.model
    for ours, source in ((model.y_network, y_source.y_network), (model.color_network, color_source.color_network)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), source.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(model.color_network.state_dict().values(),
                                                     y_source.color_network.state_dict().values()))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        tiny_config(tmp_path, photos, steps=0)
    misfit = save_init(build_model("tiny", color_width=4), tmp_path / "misfit.pt")
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(tiny_config(tmp_path / "other", photos, stage="color", init=str(tmp_path / "y.pt"),
                            init_color=str(misfit))).build()


def test_model_options_with_init_change_the_configuration_and_keep_the_weights(tmp_path, photos):
    """A colour stage can move the model it starts from to another chroma upsampling; options
    that reshape the weights, or that QGAC does not take, are clear errors."""
    torch.manual_seed(2)
    source = build_model("tiny")
    init = str(save_init(source, tmp_path / "y.pt"))
    trainer = Trainer(tiny_config(tmp_path / "run", photos, stage="color", init=init,
                                  model_options={"chroma_upsampling": "fancy"}))
    trainer.build()
    assert trainer.model.chroma_upsampling == "fancy" and trainer.model.config["chroma_upsampling"] == "fancy"
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), source.state_dict().values()))
    for options, message in (({"color_width": 4}, "change the weights"), ({"color": False}, "change the weights"),
                             ({"colour": True}, "do not fit"), ({"chroma_upsampling": "cubic"}, "do not fit"),
                             ({"coefficient_std": [[2.0] * 64] * 3}, "keeps its statistics")):
        with pytest.raises(ValueError, match=message):
            Trainer(tiny_config(tmp_path / "other", photos, stage="color", init=init, model_options=options)).build()


@pytest.mark.parametrize("body", ["residual", "nafnet"])
def test_a_deeper_block_depth_with_init_starts_from_the_same_function(tmp_path, photos, body):
    """``block_depth`` above the init's appends blocks that start as the identity: the deeper
    model corrects exactly as the one it grew from, keeps its weights, and still learns in the
    new blocks (the first convolution of a new residual block stays random)."""
    torch.manual_seed(3)
    source = build_model("tiny", block_body=body, block_depth=1)
    for parameter in source.parameters():  # a NAFNet block fresh from its constructor is the identity already
        parameter.data.normal_(0, 0.05)
    init = str(save_init(source, tmp_path / "y.pt"))
    trainer = Trainer(tiny_config(tmp_path / "run", photos, init=init, model_options={"block_body": body, "block_depth": 3}))
    trainer.build()
    deeper = trainer.model.eval()
    assert deeper.config["block_depth"] == 3 and len(deeper.y_network.block1.body) == 3
    kept = source.state_dict()
    assert all(torch.equal(deeper.state_dict()[name], value) for name, value in kept.items())
    y, table = torch.randn(2, 1, 16, 16) * 40, torch.randint(1, 60, (2, 8, 8)).float()
    with torch.no_grad():
        torch.testing.assert_close(deeper.correct_y(y, table), source.eval().correct_y(y, table), rtol=0, atol=0)
    if body == "residual":
        new = deeper.y_network.block2.body[2].body
        assert not new[-1].weight.any() and new[0].weight.any()


def test_train_blocks_from_trains_only_the_blocks_a_grown_model_added(tmp_path, photos):
    """With ``train_blocks_from``, stage y moves the later body blocks of both BlockNets and
    nothing else; where it names no block it is a clear error."""
    torch.manual_seed(4)
    source = build_model("tiny", block_body="residual", block_depth=1)
    init = str(save_init(source, tmp_path / "y.pt"))
    deeper = {"block_body": "residual", "block_depth": 2}
    trainer = train(tiny_config(tmp_path / "run", photos, init=init, model_options=deeper,
                                train_blocks_from=1, steps=3, ema_decay=0))
    grown, before = trainer.model.state_dict(), source.state_dict()
    added = [name for name in grown if ".body.1." in name and "y_network.block" in name]
    assert added and all(not torch.equal(grown[name], torch.zeros_like(grown[name])) for name in added
                         if name.endswith("body.2.weight"))
    assert all(torch.equal(grown[name], value) for name, value in before.items())
    for options, overrides in ((deeper, {"train_blocks_from": 2}), (deeper, {"train_blocks_from": 1, "stage": "color"})):
        with pytest.raises(ValueError, match="names no BlockNet body blocks"):
            Trainer(tiny_config(tmp_path / "other", photos, init=init, model_options=options, **overrides)).build()
    with pytest.raises(ValueError, match="names no BlockNet body blocks"):
        Trainer(tiny_config(tmp_path / "rrdb", photos, train_blocks_from=0)).build()
    with pytest.raises(ValueError, match="train_blocks_from must be a block index"):
        tiny_config(tmp_path / "run", photos, train_blocks_from=-1)
    with pytest.raises(ValueError, match="trains with train_blocks_from=1, not None"):  # resumed otherwise
        Trainer(tiny_config(tmp_path / "run", photos, init=init, model_options=deeper)).build()


def test_a_deeper_body_that_cannot_start_as_the_identity_is_refused(tmp_path, photos):
    """RRDB's dense blocks have no identity to start from; a shallower body would drop weights."""
    init = str(save_init(build_model("tiny", block_body="residual", block_depth=2), tmp_path / "y.pt"))
    rrdb = str(save_init(build_model("tiny"), tmp_path / "rrdb.pt"))
    residual = {"block_body": "residual"}
    for source, options in ((rrdb, {"block_depth": 4}), (init, {**residual, "block_depth": 1}),
                            (init, {**residual, "block_depth": 3, "block_width": 24})):
        with pytest.raises(ValueError, match="change the weights"):
            Trainer(tiny_config(tmp_path / "other", photos, init=source, model_options=options)).build()


def test_card_names_the_last_stage_configuration_and_a_transferred_colour_network():
    from training.export import card_for, training_notes

    config = dict(TrainConfig(data="photos").__dict__)
    stages = [StageRecord("y", 10, 60.0, {**config, "model": "small", "model_options": {"block_depth": 2}}, None, "a"),
              StageRecord("color", 5, 30.0, {**config, "model": "fast", "stage": "color", "init": "x.pt",
                                              "init_color": "hub/qgac-small"}, None, "b")]
    assert card_for("m", stages).configuration == "fast"
    assert card_for("m", stages).load_name is None and card_for("qgac-fast", stages).load_name == "qgac-fast"
    assert card_for("m", stages[:1]).configuration == 'small with {"block_depth": 2}'
    moved = StageRecord("color", 5, 30.0, {**stages[1].config, "model_options": {"chroma_upsampling": "fancy"}}, None, "c")
    assert card_for("m", [moved]).configuration == "fast"  # the named configuration holds the option now
    assert "Stage color of run `b` started its colour network from `hub/qgac-small`." in training_notes(stages)


def test_card_counts_the_held_out_images_of_every_stage():
    from training.export import held_out_counts

    config = dict(TrainConfig(data="photos").__dict__)
    stages = [StageRecord("y", 1, 1.0, {**config, "validation_images": n}, None, "r") for n in (12, 12, 12, 6, 6)]
    assert held_out_counts(stages[:3]) == "12"
    assert held_out_counts(stages) == "12 in stages 1-3, 6 in stages 4-5"
    assert held_out_counts(stages[2:4]) == "12 in stage 1, 6 in stage 2"


def test_channels_splits_the_gain_by_ycbcr_channel(tmp_path, photos, capsys):
    from training.channels import CHANNELS, channel_gains

    folder = tmp_path / "held-out"
    folder.mkdir()
    for name in ("photo0.png", "photo1.png"):
        (folder / name).write_bytes((photos / name).read_bytes())
    Image.open(photos / "photo2.png").convert("L").save(folder / "gray.png")  # left out: one channel
    rows = channel_gains(folder, [30, 90])
    assert [(row["image"], row["quality"]) for row in rows] == [
        ("photo0.png", 30), ("photo0.png", 90), ("photo1.png", 30), ("photo1.png", 90)]
    assert all(math.isfinite(row[c]) for row in rows for c in CHANNELS)
    assert main(["channels", "--data", str(folder), "--quality", "30"]) == 0
    table = capsys.readouterr().out
    assert "| photo0.png | 30 |" in table and table.splitlines()[-1].startswith("| **mean** | 30 |")
    with pytest.raises(ValueError, match="quality"):
        channel_gains(folder, [0])
    gray = tmp_path / "gray-only"
    gray.mkdir()
    (gray / "gray.png").write_bytes((folder / "gray.png").read_bytes())
    assert main(["channels", "--data", str(gray), "--quality", "30"]) == 2  # was an empty table
    assert f"{gray}: no colour photos" in capsys.readouterr().err
