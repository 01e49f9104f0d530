"""`train -m`: sweeps as the README writes them, from an empty folder, with no folder flags."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from decltrain.trainer.runs import sweep_summary
from tests.helpers.commands import run_train, train_command

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2"]


def sweep_folder(cwd: Path) -> Path:
    (sweep,) = (cwd / "outputs" / "multirun").iterdir()
    return sweep


@pytest.mark.slow
def test_documented_sweep_runs_each_job_in_its_own_folder(tmp_path, data_dir):
    result = run_train("-m", "config=mnist_cnn", "optimizer.lr=1e-3,1e-2", *SHORT, cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = sweep_folder(tmp_path)
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert [job.name for job in jobs] == ["0_mnist_cnn", "1_mnist_cnn"]
    lrs = [yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] for job in jobs]
    assert lrs == [1e-3, 1e-2]
    records = json.loads((sweep / "summary.json").read_text())
    for job, record in zip(jobs, records):
        metrics = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "done" and record["folder"] == str(job)
        assert record["metric"] == "val/acc" and 0 <= record["value"] <= 1
        assert record["value"] == metrics["best"][metrics["monitor"]]  # the monitored value the job returned
    assert "2 done, 0 failed" in result.stdout
    assert "2 done, 0 failed" in (sweep / "summary.txt").read_text()


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, data_dir):
    """Job 0 stops on its non-finite loss; job 1 still runs."""
    result = run_train("-m", "config=mnist_cnn", "optimizer.lr=1e9,1e-3", *SHORT, cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = sweep_folder(tmp_path)
    failed, done = json.loads((sweep / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["value"] is None
    assert failed["error"].startswith("the training loss became NaN or infinite at step")
    assert not (Path(failed["folder"]) / "metrics.json").exists()
    assert done["status"] == "done" and (Path(done["folder"]) / "metrics.json").is_file()
    summary = (sweep / "summary.txt").read_text()
    assert "1 done, 1 failed" in summary and "the training loss became NaN" in summary
    assert "Traceback" not in result.stderr


BOOM = """
from decltrain.callbacks import Callback


class Boom(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.at_step:
            raise ZeroDivisionError("my callback divided by zero")
"""


@pytest.mark.slow
def test_user_code_and_missing_data_failures_are_one_line_each(tmp_path, data_dir):
    (tmp_path / "boom.py").write_text(BOOM)
    (tmp_path / "empty").mkdir()
    result = run_train("-m", "config=mnist_cnn", "+callbacks.boom._target_=boom.Boom", "+callbacks.boom.at_step=2,1000",
                       f"dataset.root={tmp_path / 'empty'},{data_dir}", "dataset.download=false", *SHORT,
                       cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads((sweep_folder(tmp_path) / "summary.json").read_text())
    assert [record["status"] for record in records] == ["failed", "failed", "failed", "done"]
    missing_data = f"MNIST not found under {tmp_path / 'empty' / 'MNIST'}"
    assert records[0]["error"].startswith(missing_data) and records[2]["error"].startswith(missing_data)
    # Failed before training, a sweep's job keeps its folder: the summary names it.
    assert (Path(records[0]["folder"]) / "train.log").is_file()
    assert records[1]["error"] == "ZeroDivisionError: my callback divided by zero"
    # The traceback of the user's code is kept in the job's log, for debugging.
    assert 'raise ZeroDivisionError("my callback divided by zero")' in (Path(records[1]["folder"]) / "train.log").read_text()
    assert (Path(records[3]["folder"]) / "metrics.json").is_file()


@pytest.mark.slow
def test_a_sweep_over_experiments_files_each_job_under_its_own(tmp_path, data_dir):
    result = run_train("-m", "config=mnist_cnn,mnist_mlp", *SHORT, cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = sweep_folder(tmp_path)
    for job, model in (("0_mnist_cnn", "decltrain.models.MnistCNN"), ("1_mnist_mlp", "decltrain.models.MLP")):
        config = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert config["model"]["_target_"] == model
        assert (sweep / job / "metrics.json").is_file()


def job_return(num: int, status: JobStatus, value: object, monitor: str | None = "val/acc") -> JobReturn:
    job = JobReturn(overrides=["config=mnist_cnn", f"optimizer.lr={num}"], status=status,
                    cfg=OmegaConf.create({"callbacks": {"model_checkpoint": {"monitor": monitor} if monitor else None}}),
                    hydra_cfg=OmegaConf.create({"hydra": {"job": {"num": num},
                                                          "runtime": {"output_dir": f"/runs/sweep/{num}_mnist_cnn"}}}))
    job.return_value = value
    return job


def test_summary_reads_any_launchers_job_returns(tmp_path):
    """The interface other sweepers use: JobRecord.of(JobReturn) and report(records, sweep_dir)."""
    records = [sweep_summary.JobRecord.of(job) for job in (
        job_return(1, JobStatus.FAILED, ValueError("first line\nsecond line")),
        job_return(0, JobStatus.COMPLETED, 0.875),
        job_return(2, JobStatus.COMPLETED, None, monitor=None),
    )]
    assert records[0] == sweep_summary.JobRecord(1, ["config=mnist_cnn", "optimizer.lr=1"], "failed", "val/acc", None,
                                                 "ValueError: first line", "/runs/sweep/1_mnist_cnn")
    assert (records[1].status, records[1].value, records[2].metric) == ("done", 0.875, None)
    written = sweep_summary.report(records, tmp_path / "sweep")
    text = written.read_text()
    assert "2 done, 1 failed" in text and "every job: config=mnist_cnn" in text
    assert "0.8750" in text and "ValueError: first line" in text and "second line" not in text
    assert [record["number"] for record in json.loads((tmp_path / "sweep" / "summary.json").read_text())] == [0, 1, 2]


def test_a_sweep_of_seeds_or_folds_reports_each_metric_s_mean_and_std(tmp_path, capsys):
    def job(number: int, overrides: list[str], acc: float) -> sweep_summary.JobRecord:
        folder = tmp_path / f"{number}_mnist_cnn"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"monitor": "val/acc", "best": {"val/acc": acc},
                                                         "test": {"model": "best", "test/acc": acc - 0.1}}))
        return sweep_summary.JobRecord(number, overrides, "done", "val/acc", acc, None, str(folder))

    folds = [job(n, ["dataset.folds=3", f"dataset.fold={n}"], acc) for n, acc in enumerate([0.8, 0.9, 1.0])]
    sweep_summary.report(folds, tmp_path)
    assert "best val/acc: mean 0.9000, std 0.1000 over 3 jobs" in capsys.readouterr().out
    assert "test/acc: mean 0.8000, std 0.1000 over 3 jobs" in (tmp_path / "summary.txt").read_text()
    assert json.loads((tmp_path / "mean_std.json").read_text())["best val/acc"]["std"] == pytest.approx(0.1)
    learning_rates = [dataclasses.replace(record, overrides=[f"optimizer.lr={n}e-3"]) for n, record in enumerate(folds)]
    assert sweep_summary.over_repeats(learning_rates) == {}  # a mean over learning rates means nothing


def test_a_summary_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "summary.txt").mkdir()  # in the way of the file
    record = sweep_summary.JobRecord(0, ["seed=1"], "done", "val/acc", 0.5, None, str(tmp_path / "0_mnist_cnn"))
    with pytest.raises(SystemExit) as stop:
        sweep_summary.report([record], tmp_path)
    assert stop.value.code == 1
    assert capsys.readouterr().err == f"error: cannot write {tmp_path / 'summary.txt'}: Is a directory; free disk space\n"


def job_spans(sweep: Path) -> list[tuple[float, float]]:
    """(start, end) of each job in number order: its .hydra folder appears first, its metrics.json last."""
    jobs = sorted((path for path in sweep.iterdir() if (path / ".hydra").is_dir()), key=lambda path: path.name)
    return [((job / ".hydra").stat().st_mtime, (job / "metrics.json").stat().st_mtime) for job in jobs]


@pytest.mark.slow
def test_parallel_launcher_runs_two_jobs_at_a_time_with_the_summary_of_a_sequential_sweep(tmp_path, data_dir):
    tiny = ["config=mnist_cnn", "optimizer.lr=1e-3,2e-3,3e-3,4e-3", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "logger=none", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    summaries = []
    for name, launcher in (("sequential", []), ("parallel", ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"])):
        sweep = tmp_path / name
        result = run_train("-m", *tiny, *launcher, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                           env={"DATA_DIR": str(data_dir)})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        summaries.append([{**record, "folder": Path(record["folder"]).name}
                          for record in json.loads((sweep / "summary.json").read_text())])
    sequential, parallel = summaries
    assert [{**r, "value": None} for r in parallel] == [{**r, "value": None} for r in sequential]
    assert [r["value"] for r in parallel] == pytest.approx([r["value"] for r in sequential], abs=0.02)
    spans = job_spans(tmp_path / "parallel")
    assert spans[1][0] < spans[0][1] and spans[0][0] < spans[1][1]  # jobs 0 and 1 ran together
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 1  # job 2 waited for a free slot (1 s: mtime resolution)


@pytest.mark.slow
def test_ctrl_c_stops_the_running_parallel_jobs_with_checkpoints_and_starts_no_other(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [train_command(), "-m", "config=mnist_cnn", "optimizer.lr=1e-3,2e-3,3e-3", "trainer.max_epochs=3",
         "trainer.limit_train_batches=30", "trainer.limit_val_batches=1", "logger=none", "callbacks.progress_bar=null",
         "callbacks.model_checkpoint.every_n_train_steps=2", "trainer.log_every_n_steps=1", "hydra/launcher=parallel",
         "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "DATA_DIR": str(data_dir)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the jobs wrote no checkpoints"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output
    assert output.count("stopped by SIGINT") == 2
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == ["0_mnist_cnn", "1_mnist_cnn"]
