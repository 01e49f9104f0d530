"""The `runs` command over run folders: statuses, filters, JSON and CSV, show, diff and best."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from decltrain.trainer.commands import runs
from decltrain.trainer.runs import status
from tests.helpers.commands import run_train, train_command


def make_run(folder: Path, experiment: str, record: dict[str, Any] | None, config: dict[str, Any],
             overrides: list[str], best: float | None = None) -> Path:
    """A run folder as `train` leaves it, with only the small files `runs` reads."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if record is not None:
        status.write(folder, {"experiment": experiment, "overrides": overrides, "started": "2026-12-01T10:00:00+00:00",
                              "host": socket.gethostname(), "pid": os.getpid(), "seconds": 60.0, **record})
    if best is not None:
        (folder / "metrics.json").write_text(json.dumps({
            "monitor": "val/acc", "best": {"val/acc": best, "val/loss": 1 - best},
            "last": {"epoch": 2, "global_step": 20}, "test": {"model": "best", "test/acc": best - 0.01}}))
    return folder


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    config = {"seed": 42, "optimizer": {"lr": 0.001}, "model": {"hidden": 64}}
    make_run(root / "mnist_mlp" / "a", "mnist_mlp", {"status": "done", "started": "2026-12-01T10:00:00+00:00",
                                                    "mode": "max"}, config, ["config=mnist_mlp"], best=0.9)
    make_run(root / "mnist_mlp" / "b", "mnist_mlp", {"status": "done", "started": "2026-12-02T10:00:00+00:00",
                                                    "mode": "max"},
             {**config, "optimizer": {"lr": 0.01}}, ["config=mnist_mlp", "optimizer.lr=1e-2"], best=0.95)
    make_run(root / "mnist_cnn" / "c", "mnist_cnn", {"status": "failed", "error": "NonFiniteLoss at step 3",
                                                    "started": "2026-12-03T10:00:00+00:00"}, config, ["config=mnist_cnn"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    make_run(root / "mnist_cnn" / "d", "mnist_cnn", {"status": "running", "pid": dead.pid,
                                                    "started": "2026-12-04T10:00:00+00:00"}, config, ["config=mnist_cnn"])
    make_run(root / "mnist_cnn" / "e", "mnist_cnn", {"status": "running", "started": "2026-12-04T11:00:00+00:00",
                                                    "this_start": status.now()}, config, ["config=mnist_cnn"])
    return root


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    runs.main(["ls", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_ls_lists_newest_first_with_statuses_live_and_crashed(outputs, capsys):
    entries = listed(capsys, "--root", str(outputs))
    assert [(Path(e["folder"]).name, e["status"]) for e in entries] == [
        ("e", "running"), ("d", "crashed"), ("c", "failed"), ("b", "done"), ("a", "done")]
    by_name = {Path(e["folder"]).name: e for e in entries}
    assert (by_name["b"]["metric"], by_name["b"]["best"], by_name["b"]["epoch"]) == ("val/acc", 0.95, 2)
    assert by_name["c"]["error"] == "NonFiniteLoss at step 3"


def test_ls_filters_by_experiment_status_since_and_config_values(outputs, capsys):
    names = lambda *args: [Path(e["folder"]).name for e in listed(capsys, "--root", str(outputs), *args)]  # noqa: E731
    assert names("--experiment", "mnist_mlp") == ["b", "a"]
    assert names("--status", "failed") == ["c"]
    assert names("--since", "2026-12-03") == ["e", "d", "c"]
    assert names("optimizer.lr=1e-2") == ["b"]  # as numbers: 1e-2 is the 0.01 of the config
    assert names("--sort", "val/acc") == ["b", "a", "e", "d", "c"]  # runs without the metric last
    assert names("--sort", "val/loss", "--min")[:2] == ["b", "a"]


def test_ls_csv_and_table(outputs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the width Rich gives a table outside a terminal
    runs.main(["ls", "--root", str(outputs), "--csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["status"] for row in rows] == ["running", "crashed", "failed", "done", "done"]
    runs.main(["--root", str(outputs)])  # `runs` alone lists
    table = capsys.readouterr().out
    assert "5 runs under" in table and "crashed" in table and "val/acc 0.95" in table
    runs.main(["ls", "--root", str(outputs), "--limit", "2"])
    table = capsys.readouterr().out
    assert "5 runs under" in table and "3 older runs not shown: --limit 0 shows all" in table and "done" not in table


def test_diff_names_the_keys_that_differ_and_the_metrics(outputs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    runs.main(["diff", str(outputs / "mnist_mlp" / "a"), str(outputs / "mnist_mlp" / "b")])
    out = capsys.readouterr().out
    assert "config: optimizer.lr=0.001 | 0.01\n" in out
    assert "best val/acc" in out and "0.95" in out


def test_best_prints_the_folder_of_the_best_finished_run(outputs, capsys):
    runs.main(["best", "mnist_mlp", "--root", str(outputs)])
    assert capsys.readouterr().out.strip() == str(outputs / "mnist_mlp" / "b")
    runs.main(["best", "mnist_mlp", "--root", str(outputs), "--metric", "val/loss", "--min"])
    assert capsys.readouterr().out.strip() == str(outputs / "mnist_mlp" / "b")


def test_show_names_status_error_and_checkpoint_scores(outputs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    folder = outputs / "mnist_mlp" / "b"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "epoch=002-step=20.ckpt").write_bytes(b"")
    status.write(folder, {**status.read(folder), "monitor": "val/acc", "checkpoints": {"epoch=002-step=20.ckpt": 0.95}})
    runs.main(["show", str(folder)])
    out = capsys.readouterr().out
    assert "mnist_mlp, done" in out and "epoch=002-step=20.ckpt  val/acc=0.95" in out
    runs.main(["show", str(outputs / "mnist_cnn" / "c")])
    assert "failed (NonFiniteLoss at step 3)" in capsys.readouterr().out


def test_a_missing_root_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        runs.main(["ls", "--root", str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_run_of_an_earlier_version_without_a_status_record(tmp_path, capsys):
    make_run(tmp_path / "outputs" / "mnist_cnn" / "old", "mnist_cnn", None, {"seed": 1}, ["seed=1"], best=0.5)
    (entry,) = listed(capsys, "--root", str(tmp_path / "outputs"))
    assert (entry["experiment"], entry["status"], entry["best"], entry["overrides"]) == ("mnist_cnn", "done", 0.5,
                                                                                         ["seed=1"])


SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "logger=none",
         "callbacks.early_stopping=null"]


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_and_runs_listing_its_jobs(tmp_path, data_dir):
    """A sweep of four jobs: two fail (a negative learning rate), one finishes, SIGTERM stops the last.

    The sweep writes its summary with the stopped job marked; `runs` lists each job's status and best
    value, and `runs diff` of two jobs names exactly the key the sweep varied between them.
    """
    env = {**os.environ, "DATA_DIR": str(data_dir), "COLUMNS": "200"}
    sweep = subprocess.Popen([train_command(), "-m", "config=mnist_mlp", "optimizer.lr=-1,1e-3",
                              "trainer.max_epochs=1,1000", *SHORT, "hydra.sweep.dir=sweep"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "sweep/3_mnist_mlp/checkpoints/last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGTERM)
    output = sweep.communicate(timeout=120)[0]
    assert sweep.returncode == 143, output[-3000:]
    summary = json.loads((tmp_path / "sweep/summary.json").read_text())
    assert [(job["number"], job["status"]) for job in summary] == [(0, "failed"), (1, "failed"), (2, "done"),
                                                                   (3, "stopped")]
    assert "2 failed" in output and "1 stopped" in output

    listing = subprocess.run([train_command("runs"), "ls", "--json", "--root", "sweep"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True)
    entries = {Path(e["folder"]).name: e for e in json.loads(listing.stdout)}
    assert [entries[f"{n}_mnist_mlp"]["status"] for n in range(4)] == ["failed", "failed", "done", "stopped"]
    assert "Invalid learning rate" in entries["0_mnist_mlp"]["error"]
    metrics = json.loads((tmp_path / "sweep/2_mnist_mlp/metrics.json").read_text())
    assert entries["2_mnist_mlp"]["best"] == metrics["best"]["val/acc"] == summary[2]["value"]
    assert entries["3_mnist_mlp"]["best"] is not None and entries["3_mnist_mlp"]["step"] > 0
    diff = subprocess.run([train_command("runs"), "diff", "sweep/2_mnist_mlp", "sweep/3_mnist_mlp"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=True)
    assert diff.stdout.splitlines()[0] == "config: trainer.max_epochs=1 | 1000"
