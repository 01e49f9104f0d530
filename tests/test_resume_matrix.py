"""The resume equivalence matrix: every way a run can stop, with every setting that holds state.

Each cell is a real run that stops, then continues, and must equal the uninterrupted run in
everything a user can see: the final weights bit for bit, the files in checkpoints/ (names,
weights, progress, callback states), the step best.ckpt holds, the final metrics, and the
TensorBoard scalars (steps and values). Cells about the loop's state run the Trainer API on
synthetic data; the cells about the user's path (signals, kill -9, DDP, runs that finished and
are extended) run the installed `train` on MNIST.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchvision.transforms import v2

from decltrain.callbacks import EarlyStopping, GradientClipping, LearningRateMonitor, ModelCheckpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.datasets import coco_detection
from decltrain.datasets.base import LoaderSettings, TransformedSubset
from decltrain.models import TorchvisionDetector
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import Preempted
from decltrain.trainer.tracking.loggers import TensorBoardLogger
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.tasks.detection import Detection
from tests.helpers.callbacks import OverflowAt
from tests.helpers.commands import run_train, train_command
from tests.helpers.data import synthetic_splits
from tests.helpers.gan import gan_trainer
from tests.helpers.trainers import make_trainer

pytestmark = pytest.mark.slow  # MNIST runs of `train`, and 42 synthetic runs stopped and resumed

EPOCHS = 3


# ------------------------------------------------------------------------ what a user can see
def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's view of the run folder (after its purges), tag -> [(step, value)]."""
    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def checkpoint_files(run_dir: Path) -> dict[str, dict]:
    return {path.name: torch.load(path, weights_only=True) for path in sorted((run_dir / "checkpoints").glob("*.ckpt"))}


def assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a["progress"] == b["progress"], what
    assert {name: a["callbacks"][name] for name in b["callbacks"]} == b["callbacks"], what  # less the stopper
    assert a["model"].keys() == b["model"].keys(), what
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"]), f"{what}: weights differ"


def assert_same_run(resumed: Path, reference: Path, timing: tuple[str, ...] = ()) -> None:
    """Everything but wall-clock measures (`timing` tags: their steps only) is equal."""
    files, expected = checkpoint_files(resumed), checkpoint_files(reference)
    assert files.keys() == expected.keys()
    for name in files:
        assert_same_state(files[name], expected[name], name)
    assert files["best.ckpt"]["progress"] == expected["best.ckpt"]["progress"]
    seen, wanted = scalars(resumed), scalars(reference)
    assert seen.keys() == wanted.keys()
    for tag in seen:
        if tag.startswith(timing) and timing:
            assert [step for step, _ in seen[tag]] == [step for step, _ in wanted[tag]], tag
        else:
            assert seen[tag] == wanted[tag], tag


# --------------------------------------------------------------- loop state: the Trainer API
class Augment:
    """Random noise on every sample: with loader workers, drawn inside the workers."""

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs + 0.1 * torch.randn_like(inputs)


class SignalAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Killed(BaseException):
    """Stands in for kill -9: nothing of the run reacts to it."""


class KillAt(SignalAt):
    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            raise Killed


SETTINGS = {
    "loader": {},
    "accumulation": {"accumulate_grad_batches": 3},
    "warmup_step_scheduler": {"schedule": "step"},
    "plateau": {"schedule": "plateau"},
    "workers_augmentation": {"workers": 2},
    "bf16_mixed": {"precision": "bf16-mixed"},
    # fp16's loss scaling, a CPU GradScaler standing in for CUDA's: its scale grows every 3 steps and
    # halves at a forced overflow (step 5, before every stop), so the logged scale tells whether it resumed.
    "fp16_scaler": {"fp16_scaler": True},
}


def synthetic_run(run_dir: Path, setting: str, *, patience: int = 5, max_epochs: int = EPOCHS, max_steps: int = -1,
                  every_n_train_steps: int | None = None, stop: Callback | None = None):
    """One segment of a run on synthetic data, as `train` would build it (TensorBoard logger included)."""
    options = dict(SETTINGS[setting])
    splits = synthetic_splits(n=128, batch_size=16)
    if workers := options.pop("workers", 0):
        splits.train = TransformedSubset(splits.train, range(len(splits.train)), Augment())
        splits.loader = LoaderSettings(batch_size=16, num_workers=workers, persistent_workers=True)
    schedule = options.pop("schedule", None)
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/acc", every_n_train_steps=every_n_train_steps),
                 "early_stopping": EarlyStopping(monitor="val/loss", patience=patience, min_delta=10.0)}
    placement = None
    if options.pop("fp16_scaler", False):
        placement = Placement(TrainerSettings(max_epochs=max_epochs, accelerator="cpu"))
        placement.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
        callbacks["overflow"] = OverflowAt(5)
    if stop is not None:
        callbacks["stop"] = stop
    def lr_schedule(optimizer: torch.optim.Optimizer) -> LRSchedule:
        if schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.8)
            return LRSchedule(optimizer, scheduler, interval="step", warmup_steps=2)
        if schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
            return LRSchedule(optimizer, scheduler, monitor="val/loss")
        return LRSchedule(optimizer, None)

    return make_trainer(run_dir, callbacks=callbacks, splits=splits, max_epochs=max_epochs, max_steps=max_steps,
                        log_every_n_steps=2, loggers={"tensorboard": TensorBoardLogger(run_dir)},
                        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2), schedule=lr_schedule,
                        placement=placement, **options)


def finish(trainer, ckpt_path: Path | None = None) -> None:
    try:
        trainer.fit(ckpt_path)
    finally:
        for logger in trainer.loggers.values():
            logger.close()


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted run of each setting."""
    folders = {}
    for setting in SETTINGS:
        folders[setting] = tmp_path_factory.mktemp("reference") / setting
        finish(synthetic_run(folders[setting], setting))
    return folders


STOPS = ("sigterm_mid_epoch", "sigterm_at_last_step_of_epoch", "epoch_boundary", "max_steps_then_extended",
         "early_stopping_then_extended_patience", "kill_after_step_checkpoint")


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_loop_state_resumes_exactly(tmp_path, references, setting, stop):
    steps = 3 if setting == "accumulation" else 8  # optimizer steps per epoch: 8 batches (in groups 3, 3, 2)
    mid = steps + steps // 2 + 1  # inside epoch 2, an odd step: after a step checkpoint (every 2 steps)
    first = {"sigterm_mid_epoch": dict(stop=SignalAt(mid)), "sigterm_at_last_step_of_epoch": dict(stop=SignalAt(steps)),
             "epoch_boundary": dict(max_epochs=1), "max_steps_then_extended": dict(max_steps=mid),
             "early_stopping_then_extended_patience": dict(patience=1),
             "kill_after_step_checkpoint": dict(stop=KillAt(mid), every_n_train_steps=2)}[stop]
    started = time.time()
    with pytest.raises((Preempted, Killed)) if "stop" in first else contextlib.nullcontext():
        finish(synthetic_run(tmp_path, setting, **first))
    last = tmp_path / "checkpoints" / "last.ckpt"
    if stop == "kill_after_step_checkpoint":
        assert checkpoint.load(last)["progress"]["global_step"] == mid - 1
    time.sleep(max(0.0, math.floor(started) + 1 - time.time()))  # event files are named by the second: keep order
    resumed = synthetic_run(tmp_path, setting)
    finish(resumed, last)
    assert resumed.global_step == EPOCHS * steps
    assert_same_run(tmp_path, references[setting])



# ------------------------------------------ a task with list batches and the model's own losses
def detection_run(run_dir: Path, stop: Callback | None = None):
    """Faster R-CNN on generated 64-pixel shapes, randomly flipped: 2 epochs of 2 steps of 2 images."""
    splits = coco_detection.build("unused", fake=True, image_size=64, train_transforms=[v2.RandomHorizontalFlip()],
                                  batch_size=2, num_workers=0)
    torch.manual_seed(0)
    model = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", splits.num_classes, splits.input_shape,
                                min_size=64, max_size=64, box_batch_size_per_image=32)
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/map")}
    if stop is not None:
        callbacks["stop"] = stop
    return make_trainer(run_dir, callbacks=callbacks, splits=splits, model=model, task=Detection(splits.class_names),
                        max_epochs=2, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                        log_every_n_steps=1, loggers={"tensorboard": TensorBoardLogger(run_dir)},
                        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9))


def test_detection_sigterm_mid_epoch_resumes_exactly(tmp_path):
    finish(detection_run(tmp_path / "reference"))
    started = time.time()
    with pytest.raises(Preempted):
        finish(detection_run(tmp_path / "run", stop=SignalAt(3)))  # inside epoch 2
    time.sleep(max(0.0, math.floor(started) + 1 - time.time()))  # event files are named by the second: keep order
    resumed = detection_run(tmp_path / "run")
    finish(resumed, tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed.global_step == 4
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    assert {"train/loss_classifier", "train/loss_objectness", "val/map"} <= scalars(tmp_path / "run").keys()


# ----------------------------------------- several optimizers: a GAN's discriminator, then its generator
def gan_run(run_dir: Path, accumulate: int, stop: Callback | None = None):
    """A DCGAN on random 8x8 images: 2 epochs of 4 batches, each optimizer clipped, both learning rates logged."""
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/mean_image_gap", mode="min"),
                 "gradient_clipping": GradientClipping(value=1.0), "lr_monitor": LearningRateMonitor()}
    if stop is not None:
        callbacks["stop"] = stop
    return gan_trainer(run_dir, max_epochs=2, accumulate_grad_batches=accumulate, log_every_n_steps=1,
                       callbacks=callbacks, loggers={"tensorboard": TensorBoardLogger(run_dir)})


@pytest.mark.parametrize("accumulate", [1, 2])
def test_gan_sigterm_mid_epoch_resumes_both_networks_and_both_optimizers_exactly(tmp_path, accumulate):
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    finish(gan_run(reference, accumulate))
    steps = 4 // accumulate  # optimizer steps per epoch
    started = time.time()
    with pytest.raises(Preempted):
        finish(gan_run(run_dir, accumulate, stop=SignalAt(steps + 1)))  # inside epoch 2
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["progress"]["global_step"] == steps + 1
    time.sleep(max(0.0, math.floor(started) + 1 - time.time()))  # event files are named by the second: keep order
    resumed = gan_run(run_dir, accumulate)
    finish(resumed, run_dir / "checkpoints" / "last.ckpt")
    assert resumed.global_step == 2 * steps
    assert_same_run(run_dir, reference)
    files, expected = checkpoint_files(run_dir), checkpoint_files(reference)
    for name in files:
        for optimizer in ("discriminator", "generator"):
            saved, wanted = files[name]["optimizer"][optimizer], expected[name]["optimizer"][optimizer]
            assert saved["param_groups"] == wanted["param_groups"], (name, optimizer)
            assert all(torch.equal(saved["state"][index][key], wanted["state"][index][key])
                       for index in wanted["state"] for key in wanted["state"][index]), (name, optimizer)
    assert {"train/grad_norm_generator", "train/lr_discriminator", "train/loss_generator"} <= scalars(run_dir).keys()


# ------------------------------------------------------------- the user's path: `train` on MNIST
STEPS_PER_EPOCH = 10
MNIST = ["config=mnist_cnn", f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=4",
         "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.early_stopping.min_delta=10",
         "callbacks.early_stopping.patience=5", "callbacks.progress_bar=null"]
TIMING = ("perf/",)  # wall-clock measures: compared by their steps only


def run_folder(cwd: Path) -> Path:
    """The one run folder `train` created under `cwd` (outputs/mnist_cnn/<timestamp>)."""
    (folder,) = (cwd / "outputs" / "mnist_cnn").glob("2*")
    return folder


def train_in(cwd: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    result = run_train(*args, cwd=cwd, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def stopped_by(signum: int, cwd: Path, data_dir: Path, *args: str) -> Path:
    """Starts `train`, sends `signum` to its process group once a step checkpoint exists, waits."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([train_command(), *args], cwd=cwd, env={**os.environ, "DATA_DIR": str(data_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((cwd / "outputs").glob("mnist_cnn/2*/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run wrote no checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=120)
    expected = -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
    assert proc.returncode == expected, output
    return run_folder(cwd)


def metrics(run_dir: Path) -> dict:
    """metrics.json without the wall-clock values."""
    report = json.loads((run_dir / "metrics.json").read_text())
    report["last"] = {key: value for key, value in report["last"].items() if not key.startswith(TIMING)}
    return report


@pytest.fixture(scope="module")
def mnist_reference(tmp_path_factory, data_dir) -> Path:
    cwd = tmp_path_factory.mktemp("mnist_reference")
    train_in(cwd, data_dir, *MNIST)
    return run_folder(cwd)


def assert_same_mnist_run(resumed: Path, reference: Path) -> None:
    assert_same_run(resumed, reference, timing=TIMING)
    report = metrics(resumed)
    assert report == metrics(reference)
    assert report["last"]["global_step"] == EPOCHS * STEPS_PER_EPOCH
    # What best.ckpt scored is the best point of the curve the user sees.
    assert report["monitor"] == "val/acc" and report["test"]["model"] == "best"
    assert report["best"]["val/acc"] == max(value for _, value in scalars(resumed)["val/acc"])
    assert report["best"]["global_step"] == checkpoint_files(resumed)["best.ckpt"]["progress"]["global_step"]


def test_sigterm_mid_epoch_then_resume(tmp_path, data_dir, mnist_reference):
    run_dir = stopped_by(signal.SIGTERM, tmp_path, data_dir, *MNIST)
    assert 0 < checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["progress"]["global_step"] < 30
    train_in(tmp_path, data_dir, *MNIST, f"resume={run_dir}")
    assert_same_mnist_run(run_dir, mnist_reference)


def test_kill_9_after_a_step_checkpoint_then_resume_latest(tmp_path, data_dir, mnist_reference):
    run_dir = stopped_by(signal.SIGKILL, tmp_path, data_dir, *MNIST)
    older = tmp_path / "outputs" / "mnist_cnn" / "2000-01-01_00-00-00" / "checkpoints"
    older.mkdir(parents=True)
    (older / "last.ckpt").write_bytes(b"an older run: resume=latest must not pick it")
    result = train_in(tmp_path, data_dir, *MNIST, "resume=latest")
    assert f"resumed from {run_dir / 'checkpoints' / 'last.ckpt'}" in result.stdout + result.stderr
    assert_same_mnist_run(run_dir, mnist_reference)


def test_early_stopping_then_extended_patience(tmp_path, data_dir, mnist_reference):
    train_in(tmp_path, data_dir, *MNIST, "callbacks.early_stopping.patience=1")
    run_dir = run_folder(tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["last"]["epoch"] == 2  # stopped early, and tested
    # The run folder's own overrides come with resume=<folder> (patience=1): the new value is given.
    result = train_in(tmp_path, data_dir, *MNIST, "callbacks.early_stopping.patience=5", f"resume={run_dir}")
    assert "changed settings: callbacks.early_stopping.patience (1 -> 5)" in result.stdout + result.stderr
    assert_same_mnist_run(run_dir, mnist_reference)


def test_max_steps_mid_epoch_then_extended(tmp_path, data_dir, mnist_reference):
    train_in(tmp_path, data_dir, *MNIST, "trainer.max_steps=15")
    run_dir = run_folder(tmp_path)
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["progress"] == {
        "epoch": 1, "batch_idx": 5, "global_step": 15}
    result = train_in(tmp_path, data_dir, *MNIST, "trainer.max_steps=-1", f"resume={run_dir}")
    assert "trainer.max_steps (15 -> -1)" in result.stdout + result.stderr
    assert_same_mnist_run(run_dir, mnist_reference)


def test_ddp_two_ranks_sigterm_then_resume(tmp_path, data_dir):
    ddp = [*MNIST, "trainer.devices=2", "trainer.log_every_n_steps=2"]
    train_in(tmp_path / "reference", data_dir, *ddp)
    run_dir = stopped_by(signal.SIGTERM, tmp_path / "run", data_dir, *ddp)
    state = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert state["progress"]["global_step"] % 2 == 0 and len(state["rng_per_rank"]) == 2
    train_in(tmp_path / "run", data_dir, *ddp, f"resume={run_dir}")
    assert_same_mnist_run(run_dir, run_folder(tmp_path / "reference"))


# ------------------------------------------------------- segmentation: masks moved by random crops and flips
SEGMENTATION = ["config=segmentation_folder", "dataset.fake=true", "dataset.image_size=32", "model.width=4",
                "model.depth=2", f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=4",
                "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.early_stopping=null",
                "callbacks.progress_bar=null"]


def test_segmentation_stopped_mid_epoch_then_extended(tmp_path):
    """8 steps an epoch (128 generated images, batch 16); the augmentation draws from the RNG checkpoints restore."""
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    train_in(tmp_path, tmp_path, *SEGMENTATION, f"hydra.run.dir={reference}")
    train_in(tmp_path, tmp_path, *SEGMENTATION, "trainer.max_steps=12", f"hydra.run.dir={run_dir}")
    assert checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["progress"] == {
        "epoch": 1, "batch_idx": 4, "global_step": 12}
    train_in(tmp_path, tmp_path, *SEGMENTATION, "trainer.max_steps=-1", f"resume={run_dir}")  # the new limit, named
    assert_same_run(run_dir, reference, timing=TIMING)
    assert metrics(run_dir) == metrics(reference)
