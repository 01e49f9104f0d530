"""What scripts/benchmark.py and scripts/device_benchmark.py share: child processes and their reports.

A contender runs as a child process (`run_child`: wall time and its own peak RSS) and reports
JSON lines on stdout; `toolkit` and `script` make the contenders both benchmarks alternate.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


@dataclass
class Sample:
    """One child process: wall seconds, peak RSS (MiB), and what it reported."""
    wall: float
    peak_mib: float
    report: dict = field(default_factory=dict)


Contender = Callable[[argparse.Namespace, dict[str, str], Path, int], Sample]


def run_child(command: list[str], env: dict[str, str], cwd: Path) -> tuple[Sample, str]:
    """Runs `command` to the end; its own peak RSS comes from wait4's rusage (Linux: KiB)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if process.returncode != 0:
        sys.exit(f"benchmark: {' '.join(command)} failed with exit code {process.returncode}:\n{text[-3000:]}")
    return Sample(wall, usage.ru_maxrss / 1024), text


def installed(name: str) -> str:
    """A console script of the toolkit: beside this Python first (a virtual environment not activated), then on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def json_lines(text: str) -> dict:
    """The JSON objects a script printed, merged, with `epoch_seconds` collected in order."""
    merged: dict = {"epoch_seconds": []}
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "seconds" in record:
                merged["epoch_seconds"].append(record["seconds"])
            merged.update({k: v for k, v in record.items() if k not in ("seconds", "epoch")})
    return merged


def _epoch_ends(run_dir: Path) -> tuple[Any, list[Any]]:
    """The run's TensorBoard scalars, and its `val/loss` points at the ends of epochs, in order (the
    point at step 0, the validation before training, is none: `trainer.validate_on_start`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    ends = [event for event in events.Scalars("val/loss") if event.step > 0] \
        if "val/loss" in events.Tags()["scalars"] else []
    return events, ends


def toolkit_epoch_seconds(run_dir: Path) -> list[float]:
    """Epoch durations from TensorBoard: gaps between the `val/loss` points of epoch ends (epochs 2..E)."""
    _, ends = _epoch_ends(run_dir)
    return [later.wall_time - earlier.wall_time for earlier, later in zip(ends, ends[1:])]


def steady_training_rate(run_dir: Path) -> float | None:
    """Median `perf/samples_per_sec` (training windows only, no validation) logged after the first
    epoch (warm-up and compilation excluded); None when none was (fewer steps than the logging interval)."""
    events, ends = _epoch_ends(run_dir)
    if not ends or "perf/samples_per_sec" not in events.Tags()["scalars"]:
        return None
    rates = [event.value for event in events.Scalars("perf/samples_per_sec") if event.step > ends[0].step]
    return statistics.median(rates) if rates else None


def toolkit(*overrides: str, config: str = "mnist_cnn", metric: str = "test/acc") -> Contender:
    """`train config=<config>` with `overrides` (e.g. trainer.accelerator=cuda); its test `metric` is reported as `test_acc`."""
    def run(args: argparse.Namespace, env: dict[str, str], work: Path, index: int) -> Sample:
        run_dir = Path(tempfile.mkdtemp(prefix=f"toolkit_{index}_", dir=work)) / "run"
        command = [installed("train"), f"config={config}", f"trainer.max_epochs={args.epochs}",
                   *overrides, f"hydra.run.dir={run_dir}"]
        if args.limit_batches:
            command += [f"trainer.limit_train_batches={args.limit_batches}", "trainer.limit_val_batches=2"]
        sample, _ = run_child(command, env, REPO)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        sample.report = {"test_acc": metrics["test"][metric], "steady_epoch_seconds": toolkit_epoch_seconds(run_dir),
                         "run_dir": run_dir, "peak_memory_mb": metrics["last"].get("perf/peak_memory_mb")}
        return sample
    return run


def script(name: str, *extra_args: str, **extra_env: str) -> Contender:
    """A benchmark script of scripts/, run in its own scratch folder (Lightning writes logs there)."""
    def run(args: argparse.Namespace, env: dict[str, str], work: Path, index: int) -> Sample:
        command = [sys.executable, str(SCRIPTS / name), "--epochs", str(args.epochs), "--data-dir", args.data_dir,
                   *extra_args]
        if args.limit_batches:
            command += ["--limit-batches", str(args.limit_batches)]
        folder = Path(tempfile.mkdtemp(prefix=f"{Path(name).stem}_{index}_", dir=work))
        sample, text = run_child(command, {**env, **extra_env}, folder)
        sample.report = json_lines(text)
        sample.report["steady_epoch_seconds"] = sample.report["epoch_seconds"][1:]  # without warm-up
        return sample
    return run


def steady_epoch(sample: Sample) -> float | None:
    """Median epoch time without the first epoch (warm-up, lazy imports, first allocations)."""
    steady = sample.report["steady_epoch_seconds"]
    return statistics.median(steady) if steady else None


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
