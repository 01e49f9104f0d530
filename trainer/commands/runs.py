"""The `runs` console script: the run folders under `outputs/` listed, shown, compared, and the best one.

    runs [ls] [--root outputs] [--experiment E] [--status S] [--since 2d] [key=value ...]
              [--sort METRIC [--min]] [--json | --csv]
    runs show RUN
    runs diff RUN RUN [RUN ...]      (or one sweep folder: every job in it)
    runs best EXPERIMENT [--metric METRIC] [--min]

No torch and no Hydra import: it reads the small files of each run folder (trainer/runs/catalog.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from decltrain.trainer.commands.console_script import USER_ERROR_EXIT_CODE
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import catalog, layout, status
from decltrain.trainer.tracking.hparams import flatten

COMMANDS = ("ls", "show", "diff", "best")
TABLE_ROWS = 100  # a table of more rows is not read, and Rich takes about 2 ms to lay out each
_NOT_SETTINGS = ("resume", "rerun")  # config keys that differ by how a run started, not by what it trains
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def main(argv: Sequence[str] | None = None) -> None:
    """The console script; `runs` alone lists."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS and args[0] not in ("-h", "--help"):
        args.insert(0, "ls")
    options = _parser().parse_args(args)
    try:
        options.handler(options)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runs", description="List, show and compare the run folders of `train`.")
    commands = parser.add_subparsers(required=True)
    ls = commands.add_parser("ls", help="a table of runs, newest first (the default)")
    ls.add_argument("filters", nargs="*", metavar="key=value", help="keep runs whose config has key=value")
    ls.add_argument("--root", default="outputs", help="the folder searched for run folders (default outputs)")
    ls.add_argument("--experiment", help="keep runs of this experiment (config=...)")
    ls.add_argument("--status", choices=(*status.ENDED, status.RUNNING, status.CRASHED), help="keep runs in this state")
    ls.add_argument("--since", help="keep runs started since a date (2026-11-22) or for a time (30m, 12h, 2d, 1w)")
    ls.add_argument("--sort", metavar="METRIC", help="order by a metric, best first (highest unless --min)")
    ls.add_argument("--min", action="store_true", help="with --sort: lowest first")
    ls.add_argument("--limit", type=int, help=f"show this many runs (the table: {TABLE_ROWS} unless given; 0: all)")
    ls.add_argument("--json", action="store_true", help="print the runs as JSON")
    ls.add_argument("--csv", action="store_true", help="print the runs as CSV")
    ls.set_defaults(handler=_list)
    show = commands.add_parser("show", help="one run: command, config choices, metrics, checkpoints, status")
    show.add_argument("run", type=Path)
    show.set_defaults(handler=_show)
    diff = commands.add_parser("diff", help="the config keys that differ between runs, and their metrics")
    diff.add_argument("runs", nargs="+", type=Path, help="two or more run folders, or one sweep folder")
    diff.set_defaults(handler=_diff)
    best = commands.add_parser("best", help="the folder of an experiment's best finished run")
    best.add_argument("experiment")
    best.add_argument("--root", default="outputs")
    best.add_argument("--metric", help="default: the run's monitored metric")
    best.add_argument("--min", action="store_true", help="lower is better (default: the monitor's mode)")
    best.set_defaults(handler=_best)
    return parser


def selected(root: Path, experiment: str | None = None, state: str | None = None, since: str | None = None,
             filters: Sequence[str] = ()) -> list[catalog.RunEntry]:
    """The runs under `root` that pass every filter, newest first."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass --root <folder that holds run folders>")
    wanted = dict(_key_value(item) for item in filters)
    earliest = _since(since) if since else None
    runs = []
    for folder in catalog.run_folders(root):
        run = catalog.entry(folder)
        if (experiment and run.experiment != experiment) or (state and run.status != state) \
                or (earliest and (run.started or "") < earliest):
            continue
        if wanted and not _matches(catalog.config(folder), wanted):
            continue
        runs.append(run)
    return sorted(runs, key=lambda run: (run.started or "", run.folder), reverse=True)


def _list(options: argparse.Namespace) -> None:
    runs = selected(Path(options.root), options.experiment, options.status, options.since, options.filters)
    if options.sort:
        runs = _ordered(runs, options.sort, lowest_first=options.min)
    limit = options.limit if options.limit is not None else 0 if options.json or options.csv else TABLE_ROWS
    shown = runs[:limit] if limit else runs
    if options.json:
        print(json.dumps([run.as_dict() for run in shown], indent=1))
    elif options.csv:
        writer = csv.writer(sys.stdout)
        names = list(catalog.RunEntry.__dataclass_fields__)
        writer.writerow(names)
        for run in shown:
            row = run.as_dict()
            writer.writerow([" ".join(row[name]) if name == "overrides" else row[name] for name in names])
    else:
        Console().print(_table(shown, len(runs), options.root, options.sort))


def _table(runs: list[catalog.RunEntry], total: int, root: str, metric: str | None) -> Table:
    """The runs as a table; its title counts every run found, its caption says how to see those left out."""
    left_out = total - len(runs)
    table = Table(title=f"{total} runs under {root}",
                  caption=f"{left_out} older runs not shown: --limit 0 shows all" if left_out else None)
    for column in ("run folder", "experiment", "started", "duration", "status", "epochs/steps",
                   metric or "best", "overrides"):
        table.add_column(column, overflow="fold", ratio=3 if column == "overrides" else None)
    for run in runs:
        value = run.value(metric) if metric else run.best
        shown = "-" if value is None else f"{value:.4g}" if metric else f"{run.metric} {value:.4g}"
        table.add_row(os.path.relpath(run.folder, root), run.experiment, (run.started or "-").replace("T", " ")[:16],
                      _duration(run.seconds), run.status, f"{run.epoch if run.epoch is not None else '-'}/"
                      f"{run.step if run.step is not None else '-'}", shown, " ".join(run.overrides))
    return table


def _show(options: argparse.Namespace) -> None:
    folder: Path = options.run
    if not (folder / layout.HYDRA).is_dir():
        raise UserError(f"{folder} is not a run folder (no {layout.HYDRA}/); pass a folder that `runs` lists")
    run = catalog.entry(folder)
    records = catalog.read_json(folder / layout.REPRODUCIBILITY) or []
    command = " ".join(records[-1]["command"]) if records else " ".join(["train", *run.overrides])
    hydra = flatten((catalog.read_yaml(folder / layout.HYDRA / "hydra.yaml") or {}).get("hydra", {}))
    choices = {key.split(".", 2)[2]: value for key, value in hydra.items()
               if key.startswith("runtime.choices.") and not key.startswith("runtime.choices.hydra/")}
    console = Console()
    console.print(f"[bold]{folder}[/bold]: {run.experiment}, {run.status}"
                  + (f" ({run.error})" if run.error else ""))
    console.print(f"command: {command}")
    console.print("config: " + " ".join(f"{key}={value}" for key, value in choices.items()))
    console.print(f"started {run.started or '-'}, trained {_duration(run.seconds)}, "
                  f"epoch {run.epoch}, step {run.step}")
    metrics = catalog.read_json(folder / layout.METRICS) or {}
    for section in ("best", "last", "test"):
        values = {key: value for key, value in (metrics.get(section) or {}).items() if "/" in key}
        if values:
            console.print(f"{section}: " + ", ".join(f"{key}={_number(value)}" for key, value in values.items()))
    scores = (status.read(folder) or {}).get("checkpoints") or {}
    files = sorted(layout.checkpoints(folder).glob("*.ckpt")) if layout.checkpoints(folder).is_dir() else []
    for path in files:
        score = scores.get(path.name)
        console.print(f"  {path}" + (f"  {run.metric}={_number(score)}" if score is not None else ""))


def _diff(options: argparse.Namespace) -> None:
    folders: list[Path] = options.runs
    if len(folders) == 1:
        folders = sorted(catalog.run_folders(folders[0])) if folders[0].is_dir() else []
    if len(folders) < 2:
        raise UserError("runs diff needs two or more run folders, or a sweep folder holding two or more runs")
    configs = [catalog.config(folder) for folder in folders]
    keys = sorted({key for config in configs for key in config})
    varying = [key for key in keys if len({repr(config.get(key, "<absent>")) for config in configs}) > 1
               and key not in _NOT_SETTINGS]
    runs = [catalog.entry(folder) for folder in folders]
    console = Console()
    console.print("config: " + ("; ".join(
        f"{key}={' | '.join(str(config.get(key, '<absent>')) for config in configs)}" for key in varying)
        or "the same"))
    table = Table(title="metrics")
    table.add_column("")
    for run in runs:
        table.add_column(run.folder, overflow="fold")
    for name in sorted({name for run in runs for name in _metrics(run)}):
        table.add_row(name, *(_number(_metrics(run).get(name)) for run in runs))
    console.print(table)
    metric = runs[0].metric
    if len(runs) > 2 and metric:
        for key in varying:
            by_value: dict[str, list[float]] = {}
            for config, run in zip(configs, runs):
                if run.best is not None:
                    by_value.setdefault(str(config.get(key, "<absent>")), []).append(run.best)
            console.print(f"{metric} by {key}: " + ", ".join(
                f"{value} -> {_number(statistics.fmean(values))}" for value, values in by_value.items()))


def _best(options: argparse.Namespace) -> None:
    runs = [run for run in selected(Path(options.root), options.experiment) if run.status == status.DONE]
    metric = options.metric or next((run.metric for run in runs if run.metric), None)
    if not metric:
        raise UserError(f"no finished run of experiment {options.experiment} under {options.root}; "
                        "check the name with `runs ls`")
    lowest = options.min or (not options.metric or options.metric == metric) and \
        any(run.mode == "min" for run in runs if run.metric == metric)
    ranked = [run for run in _ordered(runs, metric, lowest_first=lowest) if run.value(metric) is not None]
    if not ranked:
        raise UserError(f"no finished run of experiment {options.experiment} under {options.root} has {metric}")
    print(ranked[0].folder)


def _ordered(runs: list[catalog.RunEntry], metric: str, lowest_first: bool) -> list[catalog.RunEntry]:
    """Runs with a value of `metric` best first; those without it last."""
    valued = [(run.value(metric), run) for run in runs]
    present = sorted((pair for pair in valued if pair[0] is not None), key=lambda pair: pair[0],  # type: ignore[arg-type, return-value]
                     reverse=not lowest_first)
    return [run for _, run in present] + [run for value, run in valued if value is None]


def _metrics(run: catalog.RunEntry) -> dict[str, Any]:
    metrics = catalog.read_json(Path(run.folder) / layout.METRICS) or {}
    return {f"{section} {key}": value for section in ("best", "test") for key, value
            in (metrics.get(section) or {}).items() if "/" in key}


def _matches(config: dict[str, Any], wanted: dict[str, str]) -> bool:
    return all(key in config and _same(config[key], value) for key, value in wanted.items())


def _same(value: Any, text: str) -> bool:
    """A config value against the text of a filter: as numbers when both are (1e-3 matches 0.001)."""
    try:
        return float(value) == float(text)
    except (TypeError, ValueError):
        return str(value).lower() == text.lower() if isinstance(value, bool) else str(value) == text


def _key_value(item: str) -> tuple[str, str]:
    key, equals, value = item.partition("=")
    if not equals or not key:
        raise UserError(f"{item}: filters are key=value on the run's config, e.g. optimizer.lr=1e-3")
    return key, value


def _since(text: str) -> str:
    """`--since` as the earliest ISO start time."""
    if text[:-1].isdigit() and text[-1] in _UNITS:
        moment = datetime.now(timezone.utc) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
        return moment.isoformat(timespec="seconds")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text}: give a date (2026-11-22), a time (2026-11-22T10:00) or an age "
                        "(30m, 12h, 2d, 1w)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat(timespec="seconds")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)

