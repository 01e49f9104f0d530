"""A 4-job CPU sweep with hydra/launcher=parallel, n_jobs=1 against n_jobs=2: the wall time of each.

    DATA_DIR=... python scripts/sweep_benchmark.py [--batches 40]

Each job trains the MNIST CNN for `batches` batches (one epoch) and tests it; the sweeps run one
after the other in a scratch folder.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def sweep_seconds(n_jobs: int, batches: int, folder: Path) -> float:
    command = ["train", "-m", "config=mnist_cnn", "optimizer.lr=1e-3,2e-3,3e-3,4e-3", "trainer.max_epochs=1",
               f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
               "logger=none", "callbacks.progress_bar=null", "hydra/launcher=parallel",
               f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={folder / f'n_jobs_{n_jobs}'}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sweep-benchmark-"))
    try:
        one, two = (sweep_seconds(n_jobs, args.batches, folder) for n_jobs in (1, 2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"4 jobs: n_jobs=1 {one:.1f} s, n_jobs=2 {two:.1f} s (ratio {two / one:.2f})")


if __name__ == "__main__":
    main()
