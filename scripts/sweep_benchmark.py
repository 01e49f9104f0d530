"""A 4-job CPU sweep with hydra/launcher=parallel, n_jobs=1 against n_jobs=2: the wall time of each.

    DATA_DIR=... python scripts/sweep_benchmark.py [--batches 40] [--epochs 1] [--rounds 2]

Each job trains the MNIST CNN for `epochs` epochs of at most `batches` batches (the MNIST subset
of the tests has 57 a epoch) and tests it. The sweeps alternate
(1, 2, 2, 1, 1, 2, ...: a load that drifts weighs on both alike), in a scratch folder. Each line
gives the sweep's wall time, the processor time of all its processes (user + system: what it
costs, whatever else runs) and the machine's load average before and after it: with a load
above the number of cores, the sweeps share the processors with other work and the wall times
say little about the launcher.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_common import installed


def load_average() -> float:
    return os.getloadavg()[0]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sweep(n_jobs: int, batches: int, epochs: int, folder: Path) -> tuple[float, float]:
    """The sweep's wall time and processor time, in seconds."""
    command = [installed("train"), "-m", "config=mnist_cnn", "optimizer.lr=1e-3,2e-3,3e-3,4e-3", f"trainer.max_epochs={epochs}",
               f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
               "logger=none", "callbacks.progress_bar=null", "hydra/launcher=parallel",
               f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={folder}"]
    started, cpu = time.perf_counter(), children_cpu_seconds()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, children_cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="training batches an epoch, at most")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of sweeps (n_jobs=1 and 2)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sweep-benchmark-"))
    walls: dict[int, list[float]] = {1: [], 2: []}
    try:
        for round_number in range(args.rounds):
            for n_jobs in (1, 2) if round_number % 2 == 0 else (2, 1):
                before = load_average()
                wall, cpu = sweep(n_jobs, args.batches, args.epochs, folder / f"{round_number}_n_jobs_{n_jobs}")
                walls[n_jobs].append(wall)
                print(f"n_jobs={n_jobs}: {wall:.1f} s wall, {cpu:.1f} s processor; "
                      f"load average {before:.1f} before, {load_average():.1f} after", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"4 jobs, median of {args.rounds}: n_jobs=1 {one:.1f} s, n_jobs=2 {two:.1f} s (ratio {two / one:.2f}); "
          f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
