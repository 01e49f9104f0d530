"""`make-shards` and `dataset=shards`: LitData shards from an image folder, a CSV table, a Hugging Face dataset."""
from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from decltrain.datasets.make_shards import main as make_shards
from decltrain.datasets.shards import build
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from tests.helpers.commands import run_train

pytest.importorskip("litdata")  # installed with the `shards` extra


def write_image_folder(root: Path, per_class: int, classes: int = 3) -> Path:
    """`root/train/c<k>/<i>.png`: 16x16 RGB images whose brightness tells the class."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / "train" / f"c{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((16, 16, 3), 60 * label, np.uint8) + rng.integers(0, 40, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def chunks(folder: Path) -> list[dict]:
    return json.loads((folder / "index.json").read_text())["chunks"]


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory) -> Path:
    """125 images (3 classes) in an odd number of shards of about 20 kB."""
    root = tmp_path_factory.mktemp("shards")
    write_image_folder(root / "images", per_class=42)
    (root / "images" / "train" / "c2" / "0.png").unlink()  # 125 images
    make_shards([str(root / "images"), str(root / "out"), "--chunk-bytes", "20kB"])
    return root / "out"


def test_an_image_folder_becomes_shards_that_read_back_as_the_files(image_shards):
    assert len(chunks(image_shards / "train")) > 2
    splits = build(str(image_shards), mean=[0.5] * 3, std=[0.5] * 3, num_workers=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (101, 12, 12)
    assert splits.class_names == ["c0", "c1", "c2"] and splits.input_shape == (3, 16, 16)
    image, label = splits.train.base[0]
    with Image.open(image_shards.parent / "images" / "train" / "c0" / "0.png") as original:
        assert np.array_equal(np.asarray(image), np.asarray(original.convert("RGB"))) and label == 0


def test_a_csv_table_becomes_shards_of_features(tmp_path):
    (tmp_path / "table.csv").write_text("a,b,kind\n" + "".join(f"{i},{2 * i},{'xy'[i % 2]}\n" for i in range(20)))
    make_shards([str(tmp_path / "table.csv"), str(tmp_path / "out"), "--target", "kind"])
    splits = build(str(tmp_path / "out"), num_workers=0)
    features, label = splits.train.base[3]
    assert torch.equal(features, torch.tensor([3.0, 6.0])) and label == 1 and splits.class_names == ["x", "y"]


def test_a_hugging_face_dataset_becomes_shards(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(np.full((4, 4, 3), i, np.uint8)) for i in range(12)]
    table = datasets.Dataset.from_dict({"picture": images, "digit": [i % 2 for i in range(12)]},
                                       features=datasets.Features({"picture": datasets.Image(),
                                                                   "digit": datasets.ClassLabel(names=["odd", "even"])}))
    table.save_to_disk(str(tmp_path / "saved"))
    make_shards([str(tmp_path / "saved"), str(tmp_path / "out"), "--image-column", "picture", "--label-column", "digit"])
    splits = build(str(tmp_path / "out"), mean=[0.5] * 3, std=[0.5] * 3, num_workers=0)
    image, label = splits.train.base[5]
    assert np.asarray(image)[0, 0, 0] == 5 and label == 1 and splits.class_names == ["odd", "even"]


def test_a_missing_folder_or_a_corrupt_shard_is_one_line(image_shards, tmp_path):
    with pytest.raises(UserError, match="shard folder .*absent does not exist"):
        build(str(tmp_path / "absent"), num_workers=0)
    broken = tmp_path / "broken"
    os.system(f"cp -r {image_shards} {broken}")
    shard = broken / "train" / chunks(broken / "train")[1]["filename"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UserError, match=f"shard {shard} has 100 bytes, not the .* its index records"):
        build(str(broken), num_workers=0)


def test_make_shards_names_an_unknown_column_in_one_line(tmp_path, capsys):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as exit_:
        make_shards([str(tmp_path / "table.csv"), str(tmp_path / "out"), "--target", "label"])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in message and "no column 'label'" in message
    assert not (tmp_path / "out").exists()


STOP_AT = textwrap.dedent('''
    import os, signal
    from decltrain.trainer.engine.callback import Callback

    class SignalAtStep(Callback):
        """SIGTERM to this rank after optimizer step `step` (every rank sends its own)."""
        def __init__(self, step):
            self.step = step

        def on_train_batch_end(self, trainer):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGTERM)
''')


@pytest.mark.slow
def test_two_ranks_stopped_twice_mid_epoch_end_bit_identical(image_shards, tmp_path):
    """An odd number of shards and 101 training samples over 2 ranks of batch 8: 7 batches each, no hang."""
    assert len(chunks(image_shards / "train")) % 2 == 1
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "stop_at.py").write_text(STOP_AT)
    env = {"PYTHONPATH": str(tmp_path / "plugins")}
    common = ("dataset=shards", f"dataset.path={image_shards}", "model=mlp", "trainer.max_epochs=2",
              "trainer.devices=2", "dataset.batch_size=8", "dataset.num_workers=1", "trainer.log_every_n_steps=2",
              "dataset.train_transforms=[{_target_: torchvision.transforms.v2.RandomHorizontalFlip}]")
    reference = run_train(*common, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path, env=env, timeout=300)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    run_dir = tmp_path / "run"
    for stop_step, where in ((3, {"epoch": 0, "batch_idx": 4}), (10, {"epoch": 1, "batch_idx": 3})):
        resume = [f"resume={run_dir}"] if (run_dir / "checkpoints").is_dir() else [f"hydra.run.dir={run_dir}"]
        stopped = run_train(*common, *resume, "+callbacks.stop._target_=stop_at.SignalAtStep",
                            f"+callbacks.stop.step={stop_step}", cwd=tmp_path, env=env, timeout=300)
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout + stopped.stderr
        progress = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["progress"]
        assert {key: progress[key] for key in where} == where  # mid-epoch
    resumed = run_train(*common, f"resume={run_dir}", cwd=tmp_path, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final, expected = (checkpoint.load(folder / "checkpoints" / "last.ckpt") for folder in (run_dir, tmp_path / "reference"))
    assert final["progress"] == expected["progress"] == {"epoch": 2, "batch_idx": 0, "global_step": 14}
    assert all(torch.equal(final["model"][key], expected["model"][key]) for key in expected["model"])
