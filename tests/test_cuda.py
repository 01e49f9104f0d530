"""The CUDA paths: fp16 loss scaling, bf16, channels-last, torch.compile, both data paths on the device,
exact resume with CUDA random states, and a GPU-trained run reopened on a CPU.

What needs no GPU runs everywhere (a CPU GradScaler stands in for fp16's; a checkpoint holding a CUDA
random state is resumed where torch sees no CUDA). Tests marked `cuda` need a CUDA device: where
there is none they are collected and skipped with that reason (tests/conftest.py); on a GPU machine
`pytest -m cuda` runs them alone.
"""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from decltrain.trainer.engine.callback import Callback
from decltrain.datasets.base import DataSplits, LoaderSettings
from decltrain.datasets.in_memory import BatchTransform, InMemory
from decltrain.models.mnist_cnn import MnistCNN
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.engine.device import configure_determinism, load_rng_state, rng_state
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.settings import TrainerSettings, compile_mode
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.runs.run_folder import RunFolder
from decltrain.trainer.tasks.classification import Classification
from tests.helpers.callbacks import OverflowAt
from tests.helpers.commands import python_path, run_train, train_command
from tests.helpers.paths import REPO
from tests.helpers.trainers import make_trainer


class Recorder(Logger):
    """A logger that keeps every scalar it is given."""

    def __init__(self) -> None:
        self.points: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.points.setdefault(step, {}).update(metrics)

    def flush(self) -> None: ...


class WeightsPerStep(Callback):
    def __init__(self) -> None:
        self.weights: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer: Trainer) -> None:
        self.weights[trainer.global_step] = trainer.model.net[0].weight.detach().clone()


# --------------------------------------------------------------------- CUDA paths checked on the CPU
def test_an_overflowing_fp16_step_is_skipped_reported_and_counted_across_a_resume(tmp_path, caplog):
    weights = WeightsPerStep()
    trainer = make_trainer(tmp_path, callbacks={"overflow": OverflowAt(3), "weights": weights}, max_epochs=1,
                           limit_train_batches=5, log_every_n_steps=1)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # fp16's scaler, on the CPU
    recorder = Recorder()
    trainer.loggers = {"recorder": recorder}
    with caplog.at_level("WARNING", logger="decltrain"):
        trainer.fit()
    assert torch.equal(weights.weights[3], weights.weights[2])  # the overflowing step changed nothing
    assert not torch.equal(weights.weights[4], weights.weights[3])
    assert [recorder.points[step]["train/skipped_steps"] for step in range(1, 6)] == [0, 0, 1, 1, 1]
    assert [recorder.points[step]["train/loss_scale"] for step in (2, 3)] == [1024.0, 512.0]
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fp16:")]
    assert reports == ["fp16: 1 optimizer step(s) skipped up to step 3 because gradients overflowed; loss scale "
                       "now 512 (a few while the scale settles are normal; many mean the loss diverges)"]

    trainer.save_checkpoint(tmp_path / "fp16.ckpt")
    state = checkpoint.load(tmp_path / "fp16.ckpt")
    assert state["precision"]["skipped_steps"] == 1 and state["precision"]["scaler"]["scale"] == 512.0
    resumed = make_trainer(tmp_path / "resumed", max_epochs=1, log_every_n_steps=1)
    resumed.precision.scaler = torch.amp.GradScaler("cpu")
    resumed.load_state_dict(state, "fp16.ckpt")
    caplog.clear()
    with caplog.at_level("WARNING", logger="decltrain"):
        assert resumed.precision.report(6) == {"train/loss_scale": 512.0, "train/skipped_steps": 1}
    assert not caplog.records  # skips reported before the checkpoint are not reported again


def test_without_a_scaler_nothing_is_reported():
    assert Precision("bf16-mixed", torch.device("cpu")).report(1) == {}


@pytest.mark.parametrize("setting, mode", [(False, None), (None, None), (True, "default"),
                                           ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")])
def test_trainer_compile_names_a_torch_compile_mode(setting, mode):
    assert compile_mode(setting) == mode


def test_an_unknown_compile_mode_is_refused_naming_the_choices():
    with pytest.raises(UserError, match="trainer.compile='fast' is not valid; use true, false or a torch.compile "
                                        "mode: default, reduce-overhead, max-autotune"):
        compile_mode("fast")


@pytest.mark.slow
def test_reduce_overhead_compiles_and_trains_on_the_cpu(tmp_path):
    """On a CPU there are no CUDA graphs to record: the mode compiles like `default` and trains."""
    trainer = make_trainer(tmp_path, compile="reduce-overhead", max_epochs=2)
    assert trainer.model is not checkpoint.unwrap(trainer.model)
    trainer.fit()
    assert trainer.callback_metrics["val/acc"] > 0.9


@pytest.mark.slow
def test_the_compile_setting_is_checked_when_a_run_starts(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "trainer.compile=fast", "trainer.fast_dev_run=true", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert "trainer.compile='fast' is not valid" in result.stdout + result.stderr


def test_a_checkpoint_with_a_cuda_random_state_resumes_where_no_cuda_is_visible(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit()
    if not torch.cuda.is_initialized():
        assert "cuda" not in rng_state()  # a process that never used CUDA saves no CUDA stream
    trainer.save_checkpoint(tmp_path / "cpu.ckpt")
    state = checkpoint.load(tmp_path / "cpu.ckpt")
    # What a CUDA run writes: its device's generator state (a CPU byte tensor), also per rank.
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, tmp_path / "gpu.ckpt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    resumed = make_trainer(tmp_path / "resumed", max_epochs=2, limit_train_batches=2)
    resumed.load_state_dict(checkpoint.load(tmp_path / "gpu.ckpt"), "gpu.ckpt")
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    resumed.fit()
    assert resumed.global_step == 4


def test_an_op_without_a_deterministic_kernel_stops_with_one_line_naming_it(tmp_path):
    """On CUDA torchvision's segmentation models hit this (bilinear upsampling's backward); put_ has no
    deterministic CPU kernel."""
    trainer = make_trainer(tmp_path, deterministic=True, max_epochs=1)
    model = trainer.model

    def forward_with_put(inputs: torch.Tensor) -> torch.Tensor:
        torch.zeros(1).put_(torch.tensor([0]), torch.tensor([1.0]))
        return model.net(inputs)

    model.forward = forward_with_put
    try:
        with pytest.raises(UserError, match="trainer.deterministic=true, but the model uses put_, which has no "
                                            "deterministic implementation on this device; set "
                                            "trainer.deterministic=false"):
            trainer.fit()
    finally:
        configure_determinism(False, False)  # the setting is global to the process


@pytest.fixture
def gpu_run(tiny_run, tmp_path) -> Path:
    """A copy of a run folder whose saved config names what a GPU run's does: CUDA-only settings."""
    run = tmp_path / "gpu_run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval_*.json", "export", "predictions.csv"))
    config_file = run / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["trainer"].update(accelerator="cuda", precision="16-mixed", compile=True, sync_batchnorm=True, devices=2)
    config_file.write_text(yaml.safe_dump(config))
    return run


@pytest.mark.slow
def test_a_gpu_runs_folder_reopens_on_the_cpu_in_fp32_and_overrides_still_win(gpu_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    trainer = RunFolder.open(str(gpu_run), []).config.trainer
    assert (trainer.accelerator, trainer.precision, trainer.compile, trainer.sync_batchnorm, trainer.devices) == \
        ("cpu", "32", False, False, 1)
    assert RunFolder.open(str(gpu_run), ["trainer.precision=bf16-mixed"]).config.trainer.precision == "bf16-mixed"


@pytest.mark.slow
def test_a_gpu_runs_folder_is_evaluated_where_no_cuda_is_visible(gpu_run, tiny_run, tmp_path, data_dir):
    result = run_train(f"run={gpu_run}", cwd=tmp_path, command=train_command("evaluate"),
                       env={"DATA_DIR": str(data_dir), "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA device here: the run's trainer.accelerator=cuda becomes cpu" in result.stdout + result.stderr
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert json.loads((gpu_run / "eval_test.json").read_text())["test/acc"] == trained["test/acc"]


# ------------------------------------------------------------------------------ on a CUDA device
SHORT = ["config=mnist_cnn", "trainer.max_epochs=2", "trainer.limit_train_batches=30", "trainer.limit_val_batches=2",
         "callbacks.early_stopping=null", "callbacks.progress_bar=null", "trainer.accelerator=cuda"]
# Augmentation the in-memory path runs on the device: a vectorized crop, and a step run image by image.
AUGMENT = ("dataset.train_transforms=[{_target_:torchvision.transforms.v2.RandomCrop,size:28,padding:2},"
           "{_target_:torchvision.transforms.v2.RandomRotation,degrees:10}]")
STOP_AT_40 = ["+callbacks.stop._target_=tests.helpers.callbacks.SignalAtStep", "+callbacks.stop.step=40"]  # epoch 2, batch 10


def train(*args: str, cwd: Path, data_dir: Path, **env: str):
    """The installed `train`; PYTHONPATH lets it import this module's test callbacks."""
    return run_train(*args, cwd=cwd, env={"DATA_DIR": str(data_dir), "PYTHONPATH": python_path(REPO), **env})


def last_state(run_dir: Path) -> dict:
    """The run's last.ckpt, a sharded one (trainer.strategy=fsdp) read whole."""
    return checkpoint.load(run_dir / "checkpoints" / "last.ckpt")


def interrupted_and_resumed(args: list[str], tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    """The run uninterrupted, and stopped by SIGTERM mid-epoch then resumed: both run folders."""
    reference, run_dir = tmp_path / "reference", tmp_path / "resumed"
    result = train(*args, f"hydra.run.dir={reference}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    stopped = train(*args, *STOP_AT_40, f"hydra.run.dir={run_dir}", cwd=tmp_path, data_dir=data_dir)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout + stopped.stderr
    state = last_state(run_dir)
    assert state["progress"] == {"epoch": 1, "batch_idx": 10, "global_step": 40}
    assert state["rng"]["cuda"].dtype == torch.uint8  # this device's CUDA stream is saved
    result = train(*args, f"resume={run_dir}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return reference, run_dir


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = last_state(a)["model"], last_state(b)["model"]
    assert all(torch.equal(first[key], second[key]) for key in first), "weights differ after resume"


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in EventAccumulator(str(run_dir)).Reload().Scalars(tag)}


@pytest.mark.slow
@pytest.mark.cuda
def test_deterministic_mid_epoch_resume_with_augmentation_on_the_device_is_bit_identical(tmp_path, data_dir):
    reference, resumed = interrupted_and_resumed([*SHORT, AUGMENT, "trainer.deterministic=true"], tmp_path, data_dir)
    assert_same_weights(reference, resumed)


@pytest.mark.slow
@pytest.mark.cuda
def test_deterministic_bilinear_upsampling_on_cuda_is_refused_naming_the_op(tmp_path, data_dir):
    # A ResNet trains deterministically on CUDA (its 1x1 adaptive pooling is a mean; seen on an H200,
    # torch 2.11); the bilinear upsampling that ends torchvision's segmentation models has no
    # deterministic backward there (torch.use_deterministic_algorithms' list).
    result = train("config=segmentation_folder", "dataset.fake=true", "model=torchvision_segmentation",
                   "model.name=lraspp_mobilenet_v3_large", "trainer.fast_dev_run=true", "trainer.accelerator=cuda",
                   "trainer.deterministic=true", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "trainer.deterministic=true, but the model uses upsample_bilinear2d" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.cuda
def test_fp16_skips_a_forced_overflow_reports_it_and_resumes_exactly_with_its_scaler(tmp_path, data_dir):
    args = [*SHORT, "trainer.precision=16-mixed", "trainer.deterministic=true", "trainer.log_every_n_steps=1",
            "+callbacks.overflow._target_=tests.helpers.callbacks.OverflowAt", "+callbacks.overflow.step=5"]
    reference, resumed = interrupted_and_resumed(args, tmp_path, data_dir)
    assert_same_weights(reference, resumed)
    assert last_state(reference)["precision"] == last_state(resumed)["precision"]  # scale, growth tracker, skips
    assert "skipped up to step 5 because gradients overflowed" in (reference / "train.log").read_text()
    skipped, scale = scalars(reference, "train/skipped_steps"), scalars(reference, "train/loss_scale")
    assert skipped[5] == skipped[4] + 1 and scale[5] == scale[4] / 2
    assert scalars(resumed, "train/loss_scale") == scale  # the resumed run continued the same scale


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("extra", [
    ["trainer.precision=bf16-mixed", "trainer.compile=true", "trainer.cudnn_benchmark=true"],
    ["trainer.compile=reduce-overhead"],
    ["dataset.in_memory=false", "dataset.num_workers=2", "trainer.precision=16-mixed"],
], ids=["bf16-compile-cudnn_benchmark", "cuda_graphs", "dataloader-workers-fp16"])
def test_training_on_cuda_learns(tmp_path, data_dir, extra):
    run_dir = tmp_path / "run"
    result = train(*SHORT, *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] > 0.5 and metrics["last"]["perf/peak_memory_mb"] > 0  # learns: chance is 0.1


def image_splits(count: int = 512, in_memory: bool = True) -> DataSplits:
    """Random 1x28x28 digits, learnable: the label is the brightest quadrant."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 100, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 4, (count,), generator=generator)
    for label in range(4):
        rows, cols = divmod(label, 2)
        images[labels == label, :, rows * 14:(rows + 1) * 14, cols * 14:(cols + 1) * 14] += 150
    if in_memory:
        # A vectorized step and one run image by image, both on the device; neither moves a quadrant.
        train = InMemory(images, labels, BatchTransform([v2.RandomCrop(28, padding=1), v2.RandomRotation(5)],
                                                        [0.5], [0.25]))
        evaluation = InMemory(images, labels, BatchTransform([], [0.5], [0.25]))
    else:
        train = evaluation = TensorDataset((images.float() / 255 - 0.5) / 0.25, labels)
    return DataSplits(train=train, val=evaluation, test=evaluation, num_classes=4, input_shape=(1, 28, 28),
                      loader=LoaderSettings(batch_size=64, num_workers=0 if in_memory else 2), name="quadrants")


def cuda_trainer(tmp_path: Path, splits: DataSplits, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = MnistCNN(splits.num_classes, splits.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Trainer(TrainerSettings(accelerator="cuda", **{"max_epochs": 2, **kwargs}), model, splits,
                   Classification(nn.CrossEntropyLoss(), "multiclass", splits.num_classes), optimizer=optimizer, run_dir=tmp_path)


def record_inputs(trainer: Trainer) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    checkpoint.unwrap(trainer.model).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


@pytest.mark.cuda
def test_in_memory_batches_are_made_on_the_device_and_reach_the_model_channels_last_in_bf16(tmp_path):
    trainer = cuda_trainer(tmp_path, image_splits(), precision="bf16-mixed")
    assert trainer.train_loader.dataset.device.type == "cuda"  # moved once, batched and augmented there
    first_conv = checkpoint.unwrap(trainer.model).features[0]
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    conv_outputs: list[torch.dtype] = []
    first_conv.register_forward_hook(lambda module, args, output: conv_outputs.append(output.dtype))
    seen = record_inputs(trainer)
    trainer.fit()
    assert all(x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) for x in seen)
    assert set(conv_outputs) == {torch.bfloat16} and first_conv.weight.dtype == torch.float32
    assert trainer.callback_metrics["val/acc"] > 0.9


@pytest.mark.cuda
def test_dataloader_batches_come_from_pinned_memory_through_workers(tmp_path):
    trainer = cuda_trainer(tmp_path, image_splits(in_memory=False))
    loader = trainer.train_loader
    assert loader.pin_memory and loader.num_workers == 2 and loader.persistent_workers
    assert next(iter(loader))[0].is_pinned()  # so the copy to the device does not block the host
    seen = record_inputs(trainer)
    trainer.fit()
    assert all(x.is_cuda for x in seen)
    assert trainer.callback_metrics["val/acc"] > 0.9


@pytest.mark.cuda
def test_the_cuda_random_state_saved_is_this_devices_and_restores_its_stream():
    torch.cuda.init()
    saved = rng_state()
    assert torch.equal(saved["cuda"], torch.cuda.get_rng_state(torch.cuda.current_device()))
    expected = torch.rand(4, device="cuda")
    torch.rand(100, device="cuda")
    load_rng_state(saved)
    assert torch.equal(torch.rand(4, device="cuda"), expected)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])  # fsdp: FSDP2 over NCCL
def test_two_gpus_save_each_ranks_cuda_state_and_resume_exactly(tmp_path, data_dir, strategy):
    args = [*SHORT, "trainer.devices=2", f"trainer.strategy={strategy}", "trainer.deterministic=true",
            "trainer.log_every_n_steps=1"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert train(*args, f"hydra.run.dir={reference}", cwd=tmp_path, data_dir=data_dir).returncode == 0
    stopped = train(*args, "+callbacks.stop._target_=tests.helpers.callbacks.SignalAtStep", "+callbacks.stop.step=20",
                    f"hydra.run.dir={resumed}", cwd=tmp_path, data_dir=data_dir)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout + stopped.stderr
    per_rank = last_state(resumed)["rng_per_rank"]
    assert len(per_rank) == 2 and all(state["cuda"].dtype == torch.uint8 for state in per_rank)
    result = train(*args, f"resume={resumed}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_weights(reference, resumed)


@pytest.mark.slow
@pytest.mark.cuda
def test_a_cuda_trained_run_is_evaluated_predicted_and_exported_on_the_cpu(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    result = train(*SHORT, "trainer.precision=16-mixed", "trainer.compile=true", f"hydra.run.dir={run_dir}",
                   cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_state(run_dir)["precision"]["scaler"]["scale"] > 0
    digit = tmp_path / "digit.png"
    torchvision.datasets.MNIST(str(data_dir), train=False)[0][0].save(digit)
    for command, args in (("evaluate", []), ("predict", [f"inputs={digit}"]), ("export-model", ["format=torchscript"])):
        result = run_train(f"run={run_dir}", *args, cwd=tmp_path, command=train_command(command),
                           env={"DATA_DIR": str(data_dir), "CUDA_VISIBLE_DEVICES": ""})  # torch sees no GPU
        assert result.returncode == 0, command + result.stdout + result.stderr
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]["test/acc"]
    assert json.loads((run_dir / "eval_test.json").read_text())["test/acc"] == pytest.approx(trained, abs=0.01)
    assert (run_dir / "export" / "model.torchscript.pt").is_file()
