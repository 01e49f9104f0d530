"""Segmentation end to end: `train config=segmentation_folder` learns, draws masks, predicts mask PNGs; DDP reduces IoU exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from decltrain.datasets import segmentation_folder
from decltrain.models import UNet
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.segmentation import Segmentation
from tests.helpers.commands import run_command, run_train
from tests.helpers.distributed import on_ranks
from tests.helpers.segmentation import PLAIN, write_segmentation_folder

# The acceptance command; the smaller images and U-Net keep it to seconds on a CPU.
ACCEPTANCE = ("config=segmentation_folder", "dataset.fake=true", "trainer.max_epochs=2")
SMALL = ("dataset.image_size=64", "model.width=8")


@pytest.mark.slow
def test_segmentation_run_beats_all_background_draws_masks_and_predicts_mask_pngs(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*ACCEPTANCE, *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    last = json.loads((run_dir / "metrics.json").read_text())["last"]
    masks = segmentation_folder.build("unused", image_size=64, fake=True, **PLAIN).val.targets
    background = float((masks == 0).float().mean())  # predicting background everywhere scores this
    assert last["val/pixel_acc"] > background and last["val/miou"] > background / 3
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    drawn = events.Images("val/masks")
    assert len({image.step for image in drawn}) >= 2 and drawn[-1].width == 4 * 64 + 5 * 2 and drawn[-1].height == 2 * 64 + 3 * 2

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for index in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * index, dtype=np.uint8)).save(inputs / f"photo{index}.png")
    result = run_command("predict", f"run={run_dir}", f"inputs={inputs}", cwd=tmp_path, data_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted((run_dir / "predictions").glob("*.png"))
    assert [path.name for path in written] == ["00000_photo0_mask.png", "00001_photo1_mask.png"]
    with Image.open(written[0]) as mask:
        assert mask.mode == "L" and mask.size == (64, 64) and int(np.array(mask).max()) < 3


@pytest.mark.slow
def test_a_mask_index_out_of_range_is_one_line_naming_the_file(tmp_path):
    write_segmentation_folder(tmp_path / "data")
    Image.fromarray(np.full((20, 20), 9, dtype=np.uint8)).save(tmp_path / "data" / "masks" / "4.png")
    result = run_train("config=segmentation_folder", f"dataset.root={tmp_path / 'data'}", cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "masks/4.png holds class index 9, but the dataset has 3 classes" in lines[0], lines


def evaluate_unet(run_dir: Path, devices: int = 1) -> dict[str, float]:
    """The test metrics of one untrained U-Net (the same weights on every rank) on the fake test split."""
    torch.manual_seed(0)
    splits = segmentation_folder.build("unused", image_size=32, fake=True, batch_size=8, eval_batch_size=5, **PLAIN)
    trainer = Trainer(TrainerSettings(accelerator="cpu", devices=devices, max_epochs=1),
                      UNet(3, (3, 32, 32), width=4, depth=2), splits, Segmentation(3), run_dir=run_dir)
    return trainer.test()


@pytest.mark.slow
def test_two_ranks_reduce_iou_accuracy_and_dice_to_the_values_of_one_process(tmp_path):
    one = evaluate_unet(tmp_path / "one")
    for rank_metrics in on_ranks(evaluate_unet, tmp_path / "two"):
        for name in ("test/miou", "test/pixel_acc", "test/dice"):
            assert rank_metrics[name] == one[name], name  # confusion counts, summed: exact
        assert rank_metrics["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)
