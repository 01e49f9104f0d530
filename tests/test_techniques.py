"""Validation by steps, the time budget, the profiler, overfit_batches, anomaly detection, the model
summary, the learning-rate finder, the CSV classification experiment and the debug configs."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from decltrain.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary
from decltrain.callbacks.model_summary import summary_table
from decltrain.trainer.engine.time_budget import parse_duration
from decltrain.datasets import csv_table
from decltrain.trainer.commands import console_script
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger
from decltrain.trainer.engine.lr_finder import range_test, suggest
from decltrain.trainer.tasks.classification import Classification, ClassificationLoss
from tests.helpers.commands import run_train, train_command
from tests.helpers.data import synthetic_splits
from tests.helpers.resume import assert_bit_identical, stopped_then_resumed
from tests.helpers.trainers import TinyNet, make_trainer


class Recorder(Logger):
    def __init__(self) -> None:
        self.points: list[tuple[str, float, int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.points += [(name, value, step) for name, value in metrics.items()]

    def steps(self, name: str) -> list[int]:
        return [step for metric, _, step in self.points if metric == name]


# ------------------------------------------------------------------------------ val_check_interval
def step_validated(run_dir: Path, extra: dict | None = None, **kwargs):
    callbacks = {"model_checkpoint": ModelCheckpoint(monitor="val/acc", save_top_k=-1),
                 "early_stopping": EarlyStopping(monitor="val/loss", patience=100), **(extra or {})}
    return make_trainer(run_dir, callbacks=callbacks, val_check_interval=5, max_epochs=2, seed=3, **kwargs)


def test_val_check_interval_validates_mid_epoch_and_checkpoints_each_validation(tmp_path):
    recorder = Recorder()
    trainer = step_validated(tmp_path, loggers={"recorder": recorder})
    trainer.fit()
    # 16 steps an epoch: every 5 steps, and at each epoch's end (not twice at one step); 0: before training.
    assert recorder.steps("val/acc") == [0, 5, 10, 15, 16, 20, 25, 30, 32]
    names = sorted(path.name for path in (tmp_path / "checkpoints").glob("epoch=*.ckpt"))
    assert names == sorted(f"epoch={1 if s <= 16 else 2:03d}-step={s}.ckpt" for s in [5, 10, 15, 16, 20, 25, 30, 32])
    assert trainer.callbacks["early_stopping"].wait + 1 <= 8
    state = checkpoint.load(tmp_path / "checkpoints" / "epoch=001-step=10.ckpt")
    assert state["progress"] == {"epoch": 0, "batch_idx": 10, "global_step": 10}


def test_val_check_interval_resume_is_bit_identical_and_early_stopping_follows_it(tmp_path):
    reference = step_validated(tmp_path / "ref")
    reference.fit()
    resumed = stopped_then_resumed(lambda extra: step_validated(tmp_path / "run", extra=extra), tmp_path / "run", 20)
    assert_bit_identical(resumed.model.state_dict(), reference.model.state_dict())
    assert resumed.callbacks["early_stopping"].state_dict() == reference.callbacks["early_stopping"].state_dict()
    assert resumed.callbacks["model_checkpoint"].state_dict() == reference.callbacks["model_checkpoint"].state_dict()

    stopper = step_validated(tmp_path / "stop", extra={"early_stopping": EarlyStopping(patience=1, min_delta=10.0)})
    stopper.fit()
    assert stopper.global_step == 10  # the second validation without a (huge) improvement


@pytest.mark.parametrize(("interval", "extra", "validated"), [
    (0.5, {}, [0, 8, 16, 24, 32]),  # 16 steps an epoch: twice per epoch (0: the validation before training)
    (0.4, {}, [0, 6, 12, 16, 22, 28, 32]),  # every int(0.4 * 16) = 6 steps, counted from each epoch's start
    (0.5, {"accumulate_grad_batches": 3}, [0, 3, 6, 9, 12]),  # 6 optimizer steps an epoch (the last one short)
    (1.0, {}, [0, 16, 32]),  # the whole epoch: only at its end
])
def test_a_fractional_val_check_interval_validates_within_each_epoch(tmp_path, interval, extra, validated):
    recorder = Recorder()
    make_trainer(tmp_path, loggers={"recorder": recorder}, val_check_interval=interval, max_epochs=2,
                 **extra).fit()
    assert recorder.steps("val/acc") == validated


@pytest.mark.parametrize("interval", [0, -3, 0.0, 1.5, 20.0, True, "abc"])
def test_an_impossible_val_check_interval_is_one_line_naming_the_key(tmp_path, interval):
    with pytest.raises(UserError, match=r"^trainer.val_check_interval=.* is not valid; use a fraction of the "
                                        r"training epoch in \(0, 1\]"):
        make_trainer(tmp_path, val_check_interval=interval)


# ------------------------------------------------------------------------------------- max_time
@pytest.mark.parametrize(("text", "seconds"), [("00:00:00:30", 30), ("01:02:03:04", 93784), ("90", 90), (1.5, 1.5)])
def test_max_time_reads_dd_hh_mm_ss_or_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1:00", "soon", "-5", "00:00:00:00"])
def test_a_bad_max_time_is_one_clear_error(text):
    with pytest.raises(UserError, match="trainer.max_time"):
        parse_duration(text)


def test_time_budget_stops_after_the_step_checkpoints_and_resume_gets_what_is_left(tmp_path):
    def timed(budget: float):
        return make_trainer(tmp_path, callbacks={"model_checkpoint": ModelCheckpoint(monitor="val/acc")},
                            max_epochs=100000, max_time=budget)

    trainer = timed(1.0)
    trainer.fit()
    assert trainer.should_stop and 0 < trainer.global_step
    state = checkpoint.load(tmp_path / "checkpoints" / "last.ckpt")
    assert state["progress"]["global_step"] == trainer.global_step
    elapsed = state["time_budget"]["elapsed"]
    assert elapsed >= 1.0
    # Resumed with 0.3 s more budget, the run trains for what is left, not for the whole budget.
    resumed = timed(elapsed + 0.3)
    resumed.fit(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed.time_budget.elapsed_before == elapsed
    assert resumed.global_step > trainer.global_step
    # This segment trained for what was left (0.3 s), not for the whole budget again (1.3 s or more).
    assert 0.3 <= resumed.time_budget.elapsed() - elapsed < 1.0


# ------------------------------------------------------------------------------------- profiler
def test_simple_profiler_shares_add_up_and_name_every_phase(tmp_path):
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": ModelCheckpoint(monitor="val/acc")},
                           max_epochs=1, profiler="simple")
    trainer.fit()
    rows = {name: (calls, share) for name, calls, _, _, share in trainer.profiler.rows()}
    assert sum(share for _, share in rows.values()) == pytest.approx(100, abs=0.01)
    for phase in ("data", "forward", "backward", "optimizer", "validation", "checkpointing",
                  "model_checkpoint.on_train_epoch_end"):
        assert phase in rows, phase
    assert rows["forward"][0] == rows["optimizer"][0] == 16
    assert rows["other"][1] < 20
    assert "share %" in (tmp_path / "profiler.txt").read_text()


def test_pytorch_profiler_writes_a_chrome_trace(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1, profiler="pytorch",
                           profiler_schedule={"wait": 1, "warmup": 1, "active": 2})
    trainer.fit()
    trace = json.loads((tmp_path / "profiler" / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"forward", "backward", "optimizer"} <= names
    assert any(str(name).startswith("aten::") for name in names)


def test_profiler_off_leaves_the_handlers_unwrapped(tmp_path):
    callback = ModelCheckpoint(monitor="val/acc")
    trainer = make_trainer(tmp_path, callbacks={"model_checkpoint": callback})
    assert trainer._handlers["on_train_epoch_end"] == [callback.on_train_epoch_end]


def test_unknown_profiler_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="trainer.profiler='fancy'"):
        make_trainer(tmp_path, profiler="fancy")


# ------------------------------------------------------------------------- debugging switches
def test_overfit_batches_trains_and_validates_on_the_same_fixed_batches(tmp_path):
    splits = synthetic_splits()
    splits.loader = replace(splits.loader, eval_batch_size=64)
    trainer = make_trainer(tmp_path, splits=splits, overfit_batches=2, max_epochs=40, lr=0.1)
    seen: list[torch.Tensor] = []
    for epoch in range(2):
        trainer.train_loader.sampler.set_epoch(epoch)
        seen.append(torch.cat([inputs for inputs, _ in list(trainer.train_loader)[:2]]))
    torch.testing.assert_close(seen[0], seen[1])  # no shuffling
    val = torch.cat([inputs for inputs, _ in list(trainer.val_loader)[:2]])
    torch.testing.assert_close(seen[0], val)  # the very batches validation sees
    assert trainer.num_train_batches == 2
    trainer.fit()
    assert trainer.callback_metrics["val/acc"] == 1.0


def test_detect_anomaly_names_the_operation(tmp_path):
    class NaNNet(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = super().forward(x)
            return logits + torch.sqrt(logits * 0)  # a finite forward, a NaN gradient (0 * inf)

    trainer = make_trainer(tmp_path, detect_anomaly=True, max_epochs=1, model=NaNNet(),
                           optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    try:  # anomaly mode warns with the forward call's traceback, then the backward raises
        with pytest.raises(RuntimeError, match=r"Function '\w+Backward\d' returned nan values"), \
                pytest.warns(UserWarning, match=r"Error detected in \w+Backward\d\. Traceback of forward call"):
            trainer.fit()
    finally:
        torch.autograd.set_detect_anomaly(False)


# -------------------------------------------------------------------------------- model summary
def test_model_summary_shows_nested_layers_with_output_shapes(tmp_path):
    trainer = make_trainer(tmp_path)
    from rich.console import Console

    def render(depth: int) -> str:
        console = Console(width=150, record=True)
        console.print(summary_table(trainer.model, depth, trainer.task, trainer.splits, trainer.device))
        return console.export_text()

    shallow, deep = render(1), render(2)
    assert "net" in shallow and "Linear" not in shallow
    assert re.search(r"0\s+│ Linear\s+│ \[2, 32\]\s+│\s+288", deep)
    assert re.search(r"3\s+│ Linear\s+│ \[2, 3\]", deep)
    assert ModelSummary(max_depth=2).max_depth == 2


# -------------------------------------------------------------------------------- lr finder
def test_range_test_sweeps_a_copy_and_suggests_a_rate_before_divergence():
    splits = synthetic_splits()
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    from decltrain.trainer.engine import data
    loader = data.train_loader(splits.train, splits.loader, 0, torch.device("cpu"))
    rng = torch.get_rng_state()
    result = range_test(model, optimizer, loader, Classification(nn.CrossEntropyLoss(), "multiclass", 3), torch.device("cpu"),
                        min_lr=1e-5, max_lr=100.0, num_steps=150)
    assert_bit_identical(model.state_dict(), before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert result.diverged and len(result.lrs) < 150
    assert 1e-4 < result.suggestion < 10


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + i * 0.1) for i in range(50)]
    losses = [2.0] * 20 + [2.0 - 0.1 * i for i in range(15)] + [0.6 + 0.5 * i for i in range(15)]
    assert lrs[20] <= suggest(lrs, losses) <= lrs[34]


# ----------------------------------------------------------------------- CSV classification
@pytest.mark.parametrize("classes", [2, 3])
def test_classification_task_follows_the_number_of_classes(tmp_path, classes):
    path = tmp_path / "table.csv"
    path.write_text("a,b,class\n" + "".join(f"{i % 7},{i % 5},c{i % classes}\n" for i in range(60)))
    splits = csv_table.build(str(path), target="class", task="classification")
    assert splits.task == ("binary" if classes == 2 else "multiclass")
    assert splits.num_classes == (1 if classes == 2 else 3)
    outputs = torch.zeros(4, splits.num_classes)
    targets = torch.tensor([0, 1, 0, 1])
    loss = Classification(ClassificationLoss(), splits.task, splits.num_classes).loss(nn.Identity(), (outputs, targets))
    assert float(loss) == pytest.approx(0.6931 if classes == 2 else 1.0986, abs=1e-4)


@pytest.mark.slow
def test_tabular_classification_trains_on_a_csv_with_no_other_override(tmp_path, data_dir):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=generator)
    features = torch.randn(200, 3, generator=generator) + labels[:, None] * 2.0
    rows = "".join(f"{x:.3f},{y:.3f},{z:.3f},{'yes' if k else 'no'}\n" for (x, y, z), k in zip(features.tolist(), labels))
    (tmp_path / "people.csv").write_text("x,y,z,class\n" + rows)
    result = run_train("config=tabular_classification", "dataset.path=people.csv", "trainer.max_epochs=3",
                       cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads(next((tmp_path / "outputs" / "tabular_classification").glob("*/metrics.json")).read_text())
    assert metrics["test"]["test/acc"] > 0.8 and "val/acc" in metrics["best"] and metrics["monitor"] == "val/acc"


# ------------------------------------------------------------------------------ debug configs
@pytest.mark.parametrize(("debug", "expected"), [
    ("fdr", {"trainer.fast_dev_run": True, "trainer.detect_anomaly": True}),
    ("overfit", {"trainer.overfit_batches": 3, "callbacks.early_stopping": None, "callbacks.model_checkpoint": None}),
    ("limit", {"trainer.max_epochs": 3, "trainer.limit_train_batches": 0.05}),
    ("profiler", {"trainer.profiler": "simple", "trainer.max_epochs": 1}),
])
def test_debug_configs_compose_into_their_own_folder(debug, expected):
    console_script.register_train_config()  # the schema and the run_dir resolver their folders use
    from omegaconf import OmegaConf
    with initialize_config_module(version_base="1.3", config_module="decltrain.configs"):
        cfg = compose("train", overrides=[f"debug={debug}", "config=mnist_cnn"], return_hydra_config=True)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.hydra.run.dir.startswith(f"outputs/debug/{debug}/")


@pytest.mark.slow
def test_debug_fdr_runs_in_its_own_folder(tmp_path, data_dir):
    result = run_train("debug=fdr", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "outputs" / "mnist_cnn").exists()
    (run_dir,) = (tmp_path / "outputs" / "debug" / "fdr").iterdir()
    assert (run_dir / "train.log").is_file() and not (run_dir / "checkpoints").exists()



# ------------------------------------------------------------------- the commands, end to end
@pytest.mark.slow
def test_find_lr_prints_a_rate_and_the_command_and_writes_the_plot(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", cwd=tmp_path, env={"DATA_DIR": str(data_dir)},
                       command=train_command("find-lr"))
    assert result.returncode == 0, result.stdout + result.stderr
    suggested = float(re.search(r"suggested learning rate: (\S+)", result.stdout)[1])
    assert 1e-4 <= suggested <= 1e-1
    assert f"train config=mnist_cnn optimizer.lr={suggested:.3g}" in result.stdout
    (folder,) = (tmp_path / "outputs" / "mnist_cnn").glob("find_lr_*")
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(folder.glob("events.out.tfevents.*"))
    assert json.loads((folder / "lr_find.json").read_text())["suggestion"] == pytest.approx(suggested, rel=1e-2)


@pytest.mark.slow
def test_simple_profiler_table_from_the_train_command(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "trainer.max_steps=30", "trainer.profiler=simple", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "where the" in result.stdout
    (saved,) = (tmp_path / "outputs" / "mnist_cnn").glob("*/profiler.txt")
    shares = [float(line.split("│")[5]) for line in saved.read_text().splitlines()
              if line.startswith("│") and line.split("│")[5].strip()]
    assert sum(shares) == pytest.approx(100, abs=0.5)
    assert re.search(r"│ forward\s+│\s+30 │", saved.read_text())


@pytest.mark.slow
def test_ema_with_step_validation_from_the_train_command(tmp_path, data_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_train("config=mnist_cnn", "callbacks=[default,ema]", "trainer.val_check_interval=20",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=45", "trainer.limit_val_batches=4",
                       "trainer.limit_test_batches=2", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "outputs" / "mnist_cnn").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [point.step for point in events.Scalars("val/acc")] == [0, 20, 40, 45]  # 0: the validation before training
    best = checkpoint.load(run_dir / "checkpoints" / "best.ckpt")
    assert set(best["model"]) == set(best["training_weights"])
    assert not torch.equal(best["model"]["classifier.0.weight"], best["training_weights"]["classifier.0.weight"])
