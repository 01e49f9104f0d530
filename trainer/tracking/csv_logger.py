"""`metrics.csv` in the run folder, in the layout of Lightning's CSVLogger.

One header line (`step`, then every metric name in the order first logged) and one row per
logged step; a metric not logged at a step leaves its cell empty. Rows are appended as steps
complete; a new metric name rewrites the file once with the wider header.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from decltrain.trainer.runs import layout
from decltrain.trainer.tracking.loggers import Logger


class CSVLogger(Logger):
    def __init__(self, log_dir: str | Path) -> None:
        self.path = Path(log_dir) / layout.METRICS_CSV
        self.rows: dict[int, dict[str, float]] = {}
        self.columns: list[str] = []
        self.file_columns: list[str] = []  # the header the file has now
        self.last_written = -1             # the file holds every row up to this step...
        self.stale = False                 # ...unless a row it holds got more values since

    def state_dict(self) -> dict[str, Any]:
        """The latest step and its scalars (see `LastStep`: the rows are the record here)."""
        step = max(self.rows, default=-1)
        return {"step": step, "scalars": dict(self.rows.get(step, {}))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run keeps the file's rows before the checkpoint's latest step, then that step's scalars."""
        if self.path.is_file():
            self._read_rows_before(state["step"])
        if state["scalars"]:
            self.log_metrics(state["scalars"], state["step"])
        self._save()

    def _read_rows_before(self, step: int) -> None:
        with self.path.open(newline="") as file:
            reader = csv.DictReader(file)
            self.columns = [name for name in reader.fieldnames or [] if name != "step"]
            for row in reader:
                if int(row["step"]) < step:
                    self.rows[int(row["step"])] = {name: float(value) for name, value in row.items()
                                                   if name != "step" and value not in ("", None)}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.columns += [name for name in metrics if name not in self.columns]
        self.rows.setdefault(step, {}).update(metrics)
        if step <= self.last_written:
            self.stale = True  # e.g. the test metrics, logged at the last training step
        if any(self.last_written < done < step for done in self.rows):
            self._save(before=step)

    def _save(self, before: int | None = None) -> None:
        """Writes the rows of steps before `before` (all when None): appends while the header
        and the written rows stay as they are, else rewrites the file atomically."""
        steps = sorted(step for step in self.rows if before is None or step < before)
        if self.stale or self.columns != self.file_columns:
            buffer = io.StringIO()
            csv.writer(buffer).writerow(["step", *self.columns])
            self._write_rows(buffer, steps)
            temporary = self.path.with_name(layout.METRICS_CSV + ".tmp")
            temporary.write_text(buffer.getvalue())
            os.replace(temporary, self.path)  # a kill never leaves a half-written header
            self.file_columns, self.stale = list(self.columns), False
        else:
            with self.path.open("a", newline="") as file:
                self._write_rows(file, [step for step in steps if step > self.last_written])
        self.last_written = max(steps, default=self.last_written)

    def _write_rows(self, file: Any, steps: list[int]) -> None:
        writer = csv.writer(file)
        for step in steps:
            row = self.rows[step]
            writer.writerow([step, *(repr(row[name]) if name in row else "" for name in self.columns)])

    def flush(self) -> None:
        if self.stale or any(step > self.last_written for step in self.rows):
            self._save()

    def close(self, status: str = "success") -> None:
        self.flush()
