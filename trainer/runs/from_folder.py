"""`train resume=<run folder>` and `train rerun=<run folder>`: the run's own experiment and overrides, from its folder.

Before Hydra composes anything, `expanded` puts the overrides the run was started with
(`<run>/.hydra/overrides.yaml`, and the `--config-dir` of the user's own configs from
`.hydra/hydra.yaml`) in front of the command line's, so `train resume=<folder>` alone continues the
run as it was configured. An override given on the command line replaces the saved
one of the same key: for a resumed run, the checkpoint's config then refuses what would change the
training (trainer/runs/config_drift.py); for a rerun (a new run folder, whose reproducibility.json
names the source run) any override goes, e.g. `train -m rerun=<folder> seed=1,2,3`.
No torch import: the `train` console script calls this first.
"""
from __future__ import annotations

from pathlib import Path

from decltrain.trainer.runs import catalog, layout

RERUN = "rerun"
_FROM_FOLDER = ("resume", RERUN)
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def expanded(argv: list[str]) -> list[str]:
    """`argv` with the saved overrides of the run folder that `resume=` or `rerun=` names (when it names one)."""
    given = {_key(arg): arg for arg in argv if _is_override(arg)}
    source = next((folder for key in _FROM_FOLDER if key in given
                   for folder in [_run_folder(given[key].split("=", 1)[1].strip("'\""))] if folder), None)
    if source is None:
        return argv
    saved = catalog.read_yaml(source / layout.OVERRIDES) or []
    inherited = [str(arg) for arg in saved if _key(str(arg)) not in given and _key(str(arg)) not in _FROM_FOLDER]
    flags = [arg for arg in argv if not _is_override(arg)]
    return [*flags, *_config_dirs(source, flags), *inherited, *(arg for arg in argv if _is_override(arg))]


def _config_dirs(source: Path, flags: list[str]) -> list[str]:
    """`--config-dir DIR` for each folder of the user's own configs the run was started with (its
    experiment may live there), unless the command line names config folders itself."""
    if any(flag in CONFIG_DIR_FLAGS or flag.startswith(("--config-dir=", "-cd=")) for flag in flags):
        return []
    hydra = (catalog.read_yaml(source / layout.HYDRA / "hydra.yaml") or {}).get("hydra", {})
    sources = (hydra.get("runtime") or {}).get("config_sources") or []
    return [part for item in sources if item.get("provider") == "command-line"
            for part in ("--config-dir", str(item.get("path")))]


def _run_folder(value: str) -> Path | None:
    """The run folder a `resume=`/`rerun=` value names: the folder itself, or a checkpoint's in <run>/checkpoints/."""
    path = Path(value)
    if path.is_file() and path.parent.name == layout.CHECKPOINTS:
        path = path.parent.parent
    return path if (path / layout.OVERRIDES).is_file() else None


def _is_override(arg: str) -> bool:
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")
