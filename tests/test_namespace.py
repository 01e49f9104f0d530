"""The toolkit installs under one import package, `decltrain`, beside whatever the user has.

Offline stand-ins for the collisions users meet: a distribution that owns top-level `datasets`,
`models`, `configs`, `callbacks` and `trainer` (as Hugging Face `datasets` owns `datasets`), and
a working directory holding folders of those names.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers.commands import run_train
from tests.helpers.paths import REPO

OLD_NAMES = ("datasets", "models", "configs", "callbacks", "trainer")


def write_standin_distribution(root: Path) -> Path:
    """A source tree of a distribution `standin-ml` owning the five top-level packages."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "standin-ml"\nversion = "1.0"\n'
        f"[tool.setuptools]\npackages = {list(OLD_NAMES)!r}\n".replace("'", '"'))
    for name in OLD_NAMES:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f'OWNER = "standin-ml"\n\ndef load_dataset():\n    return "{name}"\n')
    return root


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = [w for w in out.glob("*.whl") if w.name.startswith(source_name(source))]
    return wheel


def source_name(source: Path) -> str:
    return "decltrain" if source == REPO else "standin_ml"


@pytest.fixture(scope="module")
def coexisting_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the stand-in's wheel and the toolkit's wheel (non-editable).

    The toolkit's dependencies (torch, Hydra, ...) come from this test run's environment through
    a path file, so no network and no second torch install are needed; the test run's editable
    install of the toolkit is not visible there (path files of an added path are not read).
    """
    root = tmp_path_factory.mktemp("coexist")
    wheels = root / "wheels"
    standin = build_wheel(write_standin_distribution(root / "standin"), wheels)
    toolkit = build_wheel(REPO, wheels)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    for wheel in (standin, toolkit):
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                        "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


@pytest.mark.slow
def test_wheel_installs_beside_a_distribution_owning_the_old_names(coexisting_venv, tmp_path, data_dir):
    python = coexisting_venv / "bin" / "python"
    check = ("import importlib\n"
             f"for name in {OLD_NAMES!r}:\n"
             "    assert importlib.import_module(name).OWNER == 'standin-ml', name\n"
             "from datasets import load_dataset\n"
             "assert load_dataset() == 'datasets'\n"
             "import decltrain.models, decltrain.datasets.base, decltrain.callbacks\n"
             f"assert decltrain.models.__file__.startswith({str(coexisting_venv)!r}), decltrain.models.__file__\n"
             # Hydra finds the Optuna sweeper the wheel installed into the `hydra_plugins` namespace
             "import inspect\n"
             "from hydra.core.plugins import Plugins\n"
             "from hydra.plugins.sweeper import Sweeper\n"
             "(sweeper,) = [s for s in Plugins.instance().discover(Sweeper) if s.__name__ == 'OptunaSweeper']\n"
             f"assert inspect.getfile(sweeper).startswith({str(coexisting_venv)!r}), inspect.getfile(sweeper)\n")
    result = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True).stdout.strip())
    assert (site / "datasets" / "__init__.py").read_text().startswith('OWNER = "standin-ml"')
    assert (site / "decltrain" / "configs" / "train.yaml").is_file()

    result = run_train("config=mnist_cnn", "trainer.fast_dev_run=true", cwd=tmp_path,
                       env={"DATA_DIR": str(data_dir)}, command=str(coexisting_venv / "bin" / "train"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test/acc" in result.stdout


@pytest.mark.slow
def test_uninstalling_one_distribution_leaves_the_other_whole(coexisting_venv, tmp_path):
    python = coexisting_venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "uninstall", "--yes", "--quiet",
                    "standin-ml"], check=True, capture_output=True, timeout=120)
    result = subprocess.run([str(python), "-c", "import decltrain.trainer.commands.train, decltrain.datasets.base"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The stand-in's `datasets` is gone: nothing imports, or Hugging Face's (where the `hf` extra is installed).
    check = ("try:\n    import datasets\nexcept ImportError:\n    raise SystemExit(0)\n"
             "raise SystemExit(0 if hasattr(datasets, 'load_dataset') else 1)")
    gone = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr


@pytest.mark.slow
def test_train_runs_from_a_folder_holding_folders_with_the_old_names(tmp_path, data_dir):
    """A user's own `configs/`, `models/`, `datasets/`, ... in the working directory shadow nothing."""
    for name in OLD_NAMES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} was imported')\n")
    (tmp_path / "configs" / "train.yaml").write_text("not: the toolkit's\n")
    result = run_train("config=mnist_cnn", "trainer.fast_dev_run=true", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test/acc" in result.stdout
    assert "the user's own" not in result.stdout + result.stderr


def test_nothing_is_installed_under_the_old_top_level_names():
    top_level = set()
    for dist_info in Path(sysconfig.get_path("purelib")).glob("decltrain-*.dist-info"):
        record = (dist_info / "RECORD")
        if record.is_file():
            top_level |= {line.split("/", 1)[0] for line in record.read_text().splitlines()}
    assert not top_level & set(OLD_NAMES), top_level
    env = {**os.environ}
    result = subprocess.run([sys.executable, "-c", "import decltrain.trainer, sys; print(sys.modules.get('trainer'))"],
                            cwd="/", env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "None", result.stdout + result.stderr


def test_every_python_package_of_the_project_is_installed():
    """A folder of modules missing from pyproject's `packages` would be left out of a non-editable install."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"trainer": "decltrain.trainer", "models": "decltrain.models", "datasets": "decltrain.datasets",
             "callbacks": "decltrain.callbacks"}
    found = {".".join([roots[init.relative_to(REPO).parts[0]], *init.relative_to(REPO).parts[1:-1]])
             for root in roots for init in (REPO / root).rglob("__init__.py")
             if "hydra_plugins" not in init.parts}
    assert found <= listed, sorted(found - listed)


def test_hugging_face_datasets_stays_theirs_beside_the_hf_extra(tmp_path):
    """With the `hf` extra installed, `import datasets` is Hugging Face's and ours is `decltrain.datasets`."""
    pytest.importorskip("datasets")
    check = ("import datasets, decltrain.datasets.hf\n"
             "assert callable(datasets.load_dataset) and 'site-packages' in datasets.__file__, datasets.__file__\n"
             "assert decltrain.datasets.hf.build\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
