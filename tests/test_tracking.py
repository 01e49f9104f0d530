"""Loggers beside TensorBoard: CSV, MLflow, W&B; HPARAMS of the values that matter; the
reproducibility record. End-to-end runs use the installed `train` from a folder outside the repo."""
from __future__ import annotations

import csv
import json
import logging
from importlib import metadata
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from decltrain.trainer.tracking.csv_logger import CSVLogger
from decltrain.trainer.tracking.hparams import select
from decltrain.trainer.tracking.provenance import installed_packages
from tests.helpers.commands import run_train

SHORT = ("trainer.limit_train_batches=10", "trainer.limit_val_batches=2")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_csv_logger_one_row_per_step_and_resume_drops_later_rows(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 2.0, "epoch": 0}, step=5)
    logger.log_metrics({"lr": 0.1}, step=5)
    logger.log_metrics({"train/loss": 1.0, "epoch": 0}, step=10)
    logger.log_metrics({"val/acc": 0.5}, step=10)  # a new column: the header widens
    logger.flush()
    at_checkpoint = logger.state_dict()  # a checkpoint written at step 10, before the test below
    logger.log_metrics({"test/acc": 0.4}, step=10)  # after flush, same step: the row gets it
    logger.log_metrics({"train/loss": 0.5, "epoch": 1}, step=15)
    logger.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "train/loss", "epoch", "lr", "val/acc", "test/acc"]
    assert [row["step"] for row in rows] == ["5", "10", "15"]
    assert rows[0] == {"step": "5", "train/loss": "2.0", "epoch": "0", "lr": "0.1", "val/acc": "", "test/acc": ""}
    assert (rows[1]["val/acc"], rows[1]["test/acc"]) == ("0.5", "0.4")

    resumed = CSVLogger(tmp_path)
    resumed.load_state_dict(at_checkpoint)
    resumed.log_metrics({"train/loss": 0.6, "epoch": 1}, step=15)
    resumed.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(row["step"], row["train/loss"]) for row in rows] == [("5", "2.0"), ("10", "1.0"), ("15", "0.6")]
    # What the interrupted run logged after its checkpoint at step 10 (a test) is gone; the rest stays.
    assert (rows[1]["val/acc"], rows[1]["test/acc"]) == ("0.5", "")


def test_hparams_are_the_values_that_matter():
    config = {"seed": 1, "model": {"_target_": "decltrain.models.MnistCNN", "hidden": 128},
              "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-4},
              "dataset": {"batch_size": 64}, "scheduler": {"lr_scheduler": None}, "trainer": {"max_epochs": 3},
              "callbacks": {"early_stopping": {"patience": 5}}, "resume": None}
    picked = select(config, ["optimizer.lr=3e-4", "callbacks.early_stopping.patience=5", "hydra.run.dir=x",
                             "resume=latest"], {"config": "mnist_cnn", "optimizer": "adam", "model": "mnist_cnn"})
    assert picked == {"config": "mnist_cnn", "seed": 1, "model": "mnist_cnn", "dataset.batch_size": 64,
                      "optimizer": "adam", "optimizer.lr": 3e-4, "trainer.max_epochs": 3,
                      "callbacks.early_stopping.patience": 5}


def test_tensorboard_hparams_show_booleans_as_text_and_the_values_curves_end_at(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    from decltrain.trainer.tracking.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"val/acc": 0.5, "perf/samples_per_sec": 900.0}, step=10)
    logger.log_hyperparams({"trainer.deterministic": True, "optimizer.lr": 0.1},
                           {"val/acc": 0.5, "perf/samples_per_sec": 850.0})  # a run mean no curve ends at
    logger.close()
    content = EventAccumulator(str(tmp_path)).Reload().PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["trainer.deterministic"].string_value == "true"
    assert start.hparams["optimizer.lr"].number_value == 0.1
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [info.name.tag for info in experiment.metric_infos] == ["val/acc"]


def test_unreachable_tracking_server_warns_once_and_the_logger_goes_quiet(tmp_path, caplog):
    from decltrain.trainer.tracking.mlflow_logger import MLflowLogger

    with caplog.at_level(logging.WARNING, logger="decltrain"):
        logger = MLflowLogger(tmp_path, tracking_uri="http://127.0.0.1:9", experiment_name="x")
        logger.log_config({"a": 1})
        logger.log_metrics({"val/acc": 0.5}, step=1)
        logger.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "MLflow logger switched off" in warnings[0]
    assert logger.state_dict() == {}


def same_points(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Equal steps, values equal to float32 precision (TensorBoard stores float32)."""
    return [step for step, _ in a] == [step for step, _ in b] and \
        [value for _, value in a] == pytest.approx([value for _, value in b], rel=1e-6)


def tensorboard_hparams(run_dir: Path) -> set[str]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = EventAccumulator(str(run_dir)).Reload().PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return set(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir)).Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


# MLflow's SQLite store (read here by MlflowClient) configures SQLAlchemy mappers with the `noload`
# strategy that SQLAlchemy 2.1 deprecates: MLflow's code, not ours, so not shown in the summary.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")
def test_mlflow_run_with_tensorboard_and_csv_resumed_in_the_same_run(tmp_path, data_dir):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"DATA_DIR": str(data_dir), "MLFLOW_TRACKING_URI": uri}
    first = run_train("config=mnist_cnn", "trainer.max_epochs=2", "logger=[tensorboard,csv,mlflow]", *SHORT,
                      cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_dir,) = (tmp_path / "outputs" / "mnist_cnn").iterdir()
    client = MlflowClient(uri)
    (run,) = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/acc")]
    # two epochs' validations and the one before training (step 0)
    assert len(history) == 3 and same_points(history, tensorboard_scalars(run_dir, "val/acc"))
    csv_points = [(int(row["step"]), float(row["val/acc"])) for row in read_csv(run_dir / "metrics.csv")
                  if row["val/acc"]]
    assert same_points(csv_points, history)
    assert run.data.tags["experiment"] == "mnist_cnn" and run.data.params["optimizer.lr"] == "0.001"
    assert run.info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "metrics.csv", "reproducibility.json", ".hydra"} <= artifacts
    hparams = tensorboard_hparams(run_dir)
    assert {"config", "optimizer", "optimizer.lr", "dataset", "dataset.batch_size", "trainer.max_epochs"} <= hparams
    assert "dataset.download" not in hparams and "model.hidden" not in hparams
    assert not [key for key in hparams if "_target_" in key or key.startswith(("callbacks.", "logger.", "hydra"))]

    resumed = run_train("config=mnist_cnn", "trainer.max_epochs=3", "logger=[tensorboard,csv,mlflow]", *SHORT,
                        f"resume={run_dir}", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (run,) = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert len(history) == 4 and same_points(history, tensorboard_scalars(run_dir, "val/acc"))  # no second step 0
    steps = [int(row["step"]) for row in read_csv(run_dir / "metrics.csv")]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume
    records = json.loads((run_dir / "reproducibility.json").read_text())
    assert [record["command"][-1] for record in records] == [SHORT[-1], f"resume={run_dir}"]
    assert {"python", "torch", "cuda", "packages", "host", "devices", "git"} <= set(records[0])


def test_the_package_list_reads_what_full_metadata_parsing_reads():
    parsed = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions()
                    if dist.metadata["Name"])
    assert installed_packages() == parsed and any(name.startswith("torch==") for name in parsed)


@pytest.mark.slow
def test_unreachable_tracking_uri_does_not_stop_the_run(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", "trainer.max_epochs=1", "logger=[csv,mlflow]",
                       "logger.mlflow.tracking_uri=http://127.0.0.1:9", *SHORT, cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert output.count("MLflow logger switched off") == 1
    (run_dir,) = (tmp_path / "outputs" / "mnist_cnn").iterdir()
    assert (run_dir / "metrics.json").is_file() and read_csv(run_dir / "metrics.csv")


@pytest.mark.slow
def test_wandb_offline_run_resumes_the_same_run_id(tmp_path, data_dir):
    env = {"DATA_DIR": str(data_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    first = run_train("config=mnist_cnn", "trainer.max_epochs=1", "logger=wandb", *SHORT, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_dir,) = (tmp_path / "outputs" / "mnist_cnn").iterdir()
    resumed = run_train("config=mnist_cnn", "trainer.max_epochs=2", "logger=wandb", *SHORT, f"resume={run_dir}",
                        cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({folder.name.rsplit("-", 1)[-1] for folder in runs}) == 1
