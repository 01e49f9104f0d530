"""The throughput and memory callback."""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from decltrain.callbacks import ThroughputMonitor, throughput
from decltrain.trainer.engine.callback import Callback
from tests.helpers.trainers import make_trainer

TICK = 0.25  # seconds the callback's clock advances each time it is read
SLOW_VALIDATION = 100.0  # seconds each validation adds: training time leaves them out


class Recorder:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step): self.points.append((step, metrics))
    def flush(self): ...


class FakeClock:
    """The callback's `time`: read once per batch and once per epoch start, each read TICK later."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += TICK
        return self.now


class SlowValidation(Callback):
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def on_validation_end(self, trainer, metrics) -> None:
        self.clock.now += SLOW_VALIDATION


class FakeUsage:
    """The callback's `resource`: the n-th reading reports a peak resident size of n MiB (in the platform's unit)."""
    RUSAGE_SELF = resource.RUSAGE_SELF

    def __init__(self) -> None:
        self.readings = 0

    def getrusage(self, who: int) -> SimpleNamespace:
        self.readings += 1
        return SimpleNamespace(ru_maxrss=self.readings * (2**20 if sys.platform == "darwin" else 2**10))


def test_logs_samples_per_second_and_peak_memory_and_adds_them_to_the_final_metrics(tmp_path, monkeypatch):
    clock, usage = FakeClock(), FakeUsage()
    monkeypatch.setattr(throughput, "time", clock)
    monkeypatch.setattr(throughput, "resource", usage)
    recorder = Recorder()
    callbacks = {"throughput": ThroughputMonitor(), "validation": SlowValidation(clock)}
    trainer = make_trainer(tmp_path, callbacks=callbacks, max_epochs=2, log_every_n_steps=4)
    trainer.loggers = {"recorder": recorder}
    trainer.fit()
    perf = [(step, m) for step, m in recorder.points if "perf/samples_per_sec" in m]
    assert [step for step, _ in perf] == [4, 8, 12, 16, 20, 24, 28, 32]  # 16 steps per epoch, every 4th
    # Each logging window is 4 batches of 16 samples, read 4 ticks apart.
    assert [m["perf/samples_per_sec"] for _, m in perf] == [4 * 16 / (4 * TICK)] * 8
    assert [m["perf/peak_memory_mb"] for _, m in perf] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    final = trainer.callback_metrics
    # Two epochs of 256 samples, each 16 ticks from its start to its last batch; validations left out.
    assert final["perf/samples_per_sec"] == 2 * 256 / (2 * 16 * TICK)
    assert final["perf/peak_memory_mb"] == 9.0  # read again at the end of fit
    assert "val/acc" in final


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_peak_memory_on_the_cpu_is_the_peak_resident_size_in_mib():
    status = Path("/proc/self/status").read_text()
    high_water_mark_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    # Linux's own record of the peak; the kernel counts it a little apart from getrusage (well under 1%).
    assert throughput.peak_memory_mb(torch.device("cpu")) == pytest.approx(high_water_mark_kib / 1024, rel=0.01)
