"""`train config=mnist_gan` shows generated digits at every validation, `predict num_samples=` draws a
grid of them, and a config without one of the task's optimizers fails at start (issue: several optimizers)."""
from __future__ import annotations

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.commands import run_command, run_train

SMALL = ["config=mnist_gan", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.val_check_interval=0.5",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "model.width=8", "callbacks.progress_bar=null"]


@pytest.mark.slow
def test_mnist_gan_logs_a_grid_at_every_validation_and_predict_draws_samples(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    trained = run_train(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    grids = events.Images("val/samples")
    assert [event.step for event in grids] == [0, 2, 4]  # before training, mid-epoch, at the epoch's end
    assert grids[0].encoded_image_string != grids[-1].encoded_image_string  # the same noise, a trained generator
    assert all((event.width, event.height) == (242, 242) for event in grids)  # 8 x 8 digits of 28 pixels, 2 apart
    assert {"val/d_acc", "val/mean_image_gap", "train/loss_generator", "train/grad_norm_discriminator",
            "train/lr_generator"} <= set(events.Tags()["scalars"])
    predicted = run_command("predict", f"run={run_dir}", "num_samples=16", cwd=tmp_path, data_dir=data_dir)
    assert predicted.returncode == 0, predicted.stdout[-3000:] + predicted.stderr[-3000:]
    with Image.open(run_dir / "samples.png") as image:
        assert image.size == (242, 62)  # two rows of 8


@pytest.mark.slow
def test_a_config_without_one_of_the_tasks_optimizers_fails_at_start_naming_both(tmp_path, data_dir):
    result = run_train(*SMALL, "~optimizer.discriminator", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert "task GAN needs optimizer.discriminator; the config has optimizer.generator only" in \
        result.stdout + result.stderr
