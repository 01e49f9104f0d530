"""Shared fixtures: the shared MNIST subset, a private cache folder, a short real run folder.

The code several test modules share (synthetic data, a small Trainer, the installed commands) is
in tests/helpers/.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.commands import run_train
from tests.helpers.paths import REPO, SHARED_DATA


def _import_hugging_face_datasets() -> None:
    """Under pytest the repository root is on sys.path (tests/ is a package), so its `datasets/`
    folder (installed as `decltrain.datasets`) would shadow Hugging Face's `datasets` package:
    import theirs first, where the `hf` extra is installed, as a user's process would find it."""
    kept = list(sys.path)
    sys.path[:] = [entry for entry in kept if Path(entry or ".").resolve() != REPO]
    try:
        import datasets  # noqa: F401  # Hugging Face's, now in sys.modules
    except ImportError:
        pass
    finally:
        sys.path[:] = kept


_import_hugging_face_datasets()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device; where torch sees none they are skipped, saying why.

    A test using `tiny_run` (a real `train` run) must be marked `slow`, or the fast tier would pay for the run.
    """
    unmarked = [item.nodeid for item in items
                if "tiny_run" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError(f"{', '.join(unmarked)}: uses the tiny_run fixture (a `train` run); "
                                "mark it @pytest.mark.slow")
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false); "
                                   "on a GPU machine run them with: pytest -m cuda")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST subset: DATA_DIR when set (CI sets it), else ../shared/data."""
    path = Path(os.environ.get("DATA_DIR", SHARED_DATA)).resolve()
    if not (path / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"the MNIST subset is missing under {path}; set DATA_DIR to ../shared/data")
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Image-folder caches of every test (and of the commands it starts) go to a temporary folder."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A short real MNIST run folder (10 training batches), for evaluate, predict and export-model."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    result = run_train("config=mnist_cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
                       "trainer.limit_val_batches=2", "trainer.log_every_n_steps=50",  # shorter than one interval
                       f"hydra.run.dir={run_dir}", cwd=REPO,
                       env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir
