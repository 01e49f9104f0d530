"""The table a sweep ends with: one row per job (number, overrides, status, monitored metric, folder).

Any sweeper can use it: make one `JobRecord` per finished job (`JobRecord.of` reads a Hydra
`JobReturn`, from any launcher) and call `report(records, sweep_dir)`, which prints the table and
writes it to `<sweep_dir>/summary.txt` (and the records to `summary.json`). A sweep that repeats one
configuration (seeds, cross-validation folds) adds each metric's mean and standard deviation
(`over_repeats`, also in `mean_std.json`). No torch import.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from decltrain.trainer.runs import catalog, status

SUMMARY_TEXT = "summary.txt"
SUMMARY_JSON = "summary.json"
SPREAD_JSON = "mean_std.json"  # a sweep of seeds or folds: each metric's mean and standard deviation
WRITE_FAILED_EXIT_CODE = 1
REPEAT_KEYS = {"seed", "dataset.fold"}  # overrides by which the jobs of one configuration's repeats differ


@dataclass(frozen=True)
class JobRecord:
    """One job of a sweep as the summary shows it."""
    number: int
    overrides: list[str]
    status: str               # "done", "failed" or "stopped" (by a signal); "pruned" too in an Optuna search
    metric: str | None        # the monitored metric's name (callbacks.model_checkpoint.monitor)
    value: float | None       # what the job returned to the sweeper: the monitored validation value
    error: str | None         # a failed job's error in one line
    folder: str               # the job's run folder

    @classmethod
    def of(cls, job: JobReturn) -> JobRecord:
        # `job.return_value` re-raises a failed job's exception; the stored value is what we show.
        returned = job._return_value
        failed = job.status != JobStatus.COMPLETED
        assert job.hydra_cfg is not None and job.cfg is not None  # Hydra sets both on every job it ran
        hydra_cfg = job.hydra_cfg.hydra
        return cls(number=int(hydra_cfg.job.num), overrides=[str(o) for o in job.overrides or []],
                   status="failed" if failed else "done",
                   metric=OmegaConf.select(job.cfg, "callbacks.model_checkpoint.monitor", default=None),
                   value=None if failed else _as_number(returned), error=one_line(returned) if failed else None,
                   folder=str(hydra_cfg.runtime.output_dir))


def interrupted(sweep_dir: Path, jobs: Sequence[tuple[int, list[str]]]) -> list[JobRecord]:
    """The jobs (number, overrides) of a batch that a stop signal cut short, from their run folders'
    status records: those that ended, and the one that was `stopped`; a job not started is left out."""
    folders = {tuple(record.get("overrides", [])): (folder, record) for folder in catalog.run_folders(Path(sweep_dir))
               for record in [status.read(folder) or {}]}
    records = []
    for number, overrides in jobs:
        if tuple(overrides) not in folders:
            continue
        folder, record = folders[tuple(overrides)]
        state = record.get("status", status.STOPPED)
        records.append(JobRecord(number=number, overrides=list(overrides),
                                 status=status.STOPPED if state == status.RUNNING else state,
                                 metric=record.get("monitor"), value=record.get("best"), error=record.get("error"),
                                 folder=str(folder)))
    return records


def one_line(error: object) -> str:
    """`error`'s first line; other than our own UserError, named by its type (`ZeroDivisionError: ...`)."""
    text = (str(error).strip().splitlines() or [""])[0]
    if type(error).__name__ in ("UserError", "NonFiniteLoss"):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def report(records: Sequence[JobRecord], sweep_dir: str | Path) -> Path:
    """Prints the table and writes it to `<sweep_dir>/summary.txt`; returns that file."""
    records = sorted(records, key=lambda record: record.number)
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    counts = Counter(record.status for record in records)
    tally = [f"{counts.pop('done', 0)} done", f"{counts.pop('failed', 0)} failed",
             *(f"{count} {status}" for status, count in counts.items())]
    # A line of its own, never wrapped into a table title: what readers (and grep) look for first.
    heading = f"sweep {sweep_dir}: {', '.join(tally)}"
    table = _table(records, sweep_dir)
    spread = over_repeats(records)
    lines = [f"{name}: mean {mean:.4f}, std {std:.4f} over {count} jobs" for name, (mean, std, count) in spread.items()]
    console = Console()
    console.print(heading, highlight=False, soft_wrap=True)
    console.print(table)
    for line in lines:
        console.print(line, highlight=False)
    try:
        with (sweep_dir / SUMMARY_TEXT).open("w") as handle:
            handle.write(heading + "\n")
            Console(file=handle, width=200, color_system=None).print(table)
            handle.writelines(line + "\n" for line in lines)
        (sweep_dir / SUMMARY_JSON).write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=2) + "\n")
        if spread:
            (sweep_dir / SPREAD_JSON).write_text(json.dumps(
                {name: {"mean": mean, "std": std, "jobs": count} for name, (mean, std, count) in spread.items()},
                indent=2) + "\n")
    except OSError as err:  # the table is printed above; the sweep ends with one line, not a traceback
        print(f"error: cannot write {err.filename}: {err.strerror or err}; free disk space", file=sys.stderr)
        sys.exit(WRITE_FAILED_EXIT_CODE)
    return sweep_dir / SUMMARY_TEXT


def over_repeats(records: Sequence[JobRecord]) -> dict[str, tuple[float, float, int]]:
    """{metric: (mean, standard deviation, jobs)} over the finished jobs of a sweep that repeats one
    configuration: jobs that differ only in `seed` or `dataset.fold` (cross-validation, a `rerun`
    sweep of seeds). Metrics: the best checkpoint's validation values and the test values of each
    job's metrics.json. Empty for any other sweep (a mean over learning rates means nothing) or
    fewer than two finished jobs."""
    done = [record for record in records if record.status == "done"]
    varying = {override.split("=", 1)[0].lstrip("+") for record in done for override in record.overrides
               if any(override not in other.overrides for other in done)}
    if len(done) < 2 or not varying <= REPEAT_KEYS:
        return {}
    values: dict[str, list[float]] = {}
    for record in done:
        for name, value in _final_metrics(Path(record.folder)).items():
            values.setdefault(name, []).append(value)
    return {name: (statistics.fmean(series), statistics.stdev(series), len(series))
            for name, series in values.items() if len(series) == len(done)}


def _final_metrics(folder: Path) -> dict[str, float]:
    """A job's best validation values (`best val/acc`) and test values (`test/acc`), from its metrics.json."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    best = {f"best {key}": value for key, value in (metrics.get("best") or {}).items() if key.startswith("val/")}
    test = {key: value for key, value in (metrics.get("test") or {}).items() if "/" in key}
    return {name: float(value) for name, value in {**best, **test}.items() if isinstance(value, (int, float))}


def _table(records: Sequence[JobRecord], sweep_dir: Path) -> Table:
    """Columns: job, overrides, status, the monitored metric (named in its header), run folder, error.

    The error column shows what went wrong, up to the first "; " (our errors go on with how to fix
    it: summary.json and the job's train.log have the whole line).
    """
    names = {record.metric for record in records if record.metric}
    # The overrides every job shares go in the caption; each row shows what sets its job apart.
    common = set.intersection(*(set(record.overrides) for record in records)) if len(records) > 1 else set()
    shared = [override for override in records[0].overrides if override in common] if records else []
    table = Table(caption=f"every job: {' '.join(shared)}" if shared else None)
    header = next(iter(names)) if len(names) == 1 else "metric"
    for column in ("job", "overrides", "status", header, "run folder", "error"):
        table.add_column(column, justify="right" if column == "job" else "left", overflow="fold")
    for record in records:
        value = "-" if record.value is None else f"{record.value:.4f}"
        if len(names) > 1 and record.value is not None:  # experiments monitoring different metrics
            value = f"{record.metric} {value}"
        own = [override for override in record.overrides if override not in common]
        table.add_row(str(record.number), " ".join(own), record.status, value,
                      _shown(record.folder, sweep_dir), (record.error or "").split("; ")[0])
    return table


def _shown(folder: str, sweep_dir: Path) -> str:
    """A job's folder relative to the sweep folder (named in the heading) when it lies there."""
    relative = os.path.relpath(folder, sweep_dir.resolve())
    return folder if relative.startswith("..") else relative


def _as_number(value: object) -> float | None:
    """The job's return value as a float (a number, or a tensor's item), or None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if not math.isnan(number) else None
