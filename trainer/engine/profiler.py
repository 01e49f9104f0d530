"""Where the time of a fit goes: `trainer.profiler=simple` (a table) or `pytorch` (a torch.profiler trace).

The loop marks its phases with `section(name)`, iterates its data through `iterate`, and lets
`wrap` time each callback's handler. Off (`trainer.profiler=null`), `wrap` returns the handler
itself and `section` a shared no-op context: nothing is timed or synchronised.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.table import Table

from decltrain.trainer.engine.settings import PROFILER_SCHEDULE, check_profiler

log = logging.getLogger("decltrain")
T = TypeVar("T")
_NO_OP = contextlib.nullcontext()


class Profiler:
    """Off: the loop's hooks do nothing."""

    def setup(self, device: torch.device) -> None: ...

    def section(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return _NO_OP

    def iterate(self, name: str, iterable: Iterable[T]) -> Iterable[T]:
        return iterable

    def wrap(self, name: str, handler: Callable[..., None]) -> Callable[..., None]:
        return handler

    def step(self) -> None: ...

    def profiling(self) -> contextlib.AbstractContextManager[Any]:
        return _NO_OP

    def report(self) -> None: ...


class SimpleProfiler(Profiler):
    """Wall time per section, exclusive of nested sections, so the shares add up to the fit's time.

    The fit's time runs from the first section (the first `on_fit_start` handler, or the first
    batch) to `report`, which the loop calls right after `on_fit_end`; "other" is what no
    section covered (the loop's own bookkeeping). On CUDA each section boundary synchronises the
    device; otherwise queued kernels would be billed to whichever section next waits for them.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "profiler.txt"
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []  # time spent in children of each open section
        self._sync: Callable[[], None] = lambda: None
        self._first: float | None = None
        self._fit_time = 0.0

    def setup(self, device: torch.device) -> None:
        if device.type == "cuda":
            self._sync = torch.cuda.synchronize

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        if self._first is None:
            self._first = start
        self._stack.append(0.0)
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            children = self._stack.pop()
            if self._stack:
                self._stack[-1] += elapsed
            self.totals[name] += elapsed - children
            self.counts[name] += 1

    def iterate(self, name: str, iterable: Iterable[T]) -> Iterator[T]:
        iterator = iter(iterable)
        while True:
            with self.section(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def wrap(self, name: str, handler: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            with self.section(name):
                handler(*args)
        return timed

    def rows(self) -> list[tuple[str, int, float, float, float]]:
        """(section, calls, total s, mean ms, share %), largest first, with the untimed rest as "other"."""
        total = self._fit_time or sum(self.totals.values())
        timed = dict(self.totals)
        timed["other"] = max(0.0, total - sum(timed.values()))
        rows = [(name, self.counts.get(name, 1), seconds, 1e3 * seconds / max(1, self.counts.get(name, 1)),
                 100 * seconds / total if total else 0.0) for name, seconds in timed.items()]
        return sorted(rows, key=lambda row: -row[2])

    def report(self) -> None:
        from decltrain.trainer.console import console

        self._fit_time = time.perf_counter() - (self._first or time.perf_counter())
        table = Table(title=f"profiler: where the {self._fit_time:.2f} s of training went")
        for column in ("section", "calls", "total s", "mean ms", "share %"):
            table.add_column(column, justify="left" if column == "section" else "right")
        for name, calls, seconds, mean_ms, share in self.rows():
            table.add_row(name, str(calls), f"{seconds:.3f}", f"{mean_ms:.2f}", f"{share:.1f}")
        console.print(table)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as handle:
            from rich.console import Console
            Console(file=handle, width=120).print(table)
        log.info("profiler table saved to %s", self.path)


class PyTorchProfiler(Profiler):
    """A torch.profiler trace over a few steps (wait, warmup, active), for Perfetto or chrome://tracing.

    The loop's sections appear in the trace as named ranges (`record_function`).
    """

    def __init__(self, run_dir: Path, schedule: dict[str, int]) -> None:
        self.trace = run_dir / "profiler" / "trace.json"
        self.schedule = {**PROFILER_SCHEDULE, **schedule}
        self._profile: torch.profiler.profile | None = None

    def setup(self, device: torch.device) -> None:
        self.activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)

    def section(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return torch.profiler.record_function(name)

    def step(self) -> None:
        if self._profile is not None:
            self._profile.step()

    def _export(self, profile: torch.profiler.profile) -> None:
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        profile.export_chrome_trace(str(self.trace))
        self._averages = profile.key_averages()

    @contextlib.contextmanager
    def profiling(self) -> Iterator[None]:
        schedule = torch.profiler.schedule(**self.schedule, repeat=1)
        with torch.profiler.profile(activities=self.activities, schedule=schedule, on_trace_ready=self._export,
                                    record_shapes=True) as self._profile:
            yield
        self._profile = None

    def report(self) -> None:
        from decltrain.trainer.console import console

        if not self.trace.is_file():
            log.warning("the profiler recorded no step: the run had fewer than %d optimizer steps",
                        sum(self.schedule.values()))
            return
        console.print(self._averages.table(sort_by="self_cpu_time_total", row_limit=12))
        log.info("profiler trace saved to %s (open it in https://ui.perfetto.dev or chrome://tracing)",
                 self.trace)


def build_profiler(kind: str | None, run_dir: Path, schedule: dict[str, int] | None = None) -> Profiler:
    check_profiler(kind)
    if kind is None:
        return Profiler()
    if kind == "simple":
        return SimpleProfiler(run_dir)
    return PyTorchProfiler(run_dir, dict(schedule or {}))
