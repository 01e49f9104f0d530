"""The throughput and memory callback."""
from __future__ import annotations

import pytest

from decltrain.callbacks import ThroughputMonitor
from tests.helpers.trainers import make_trainer


class Recorder:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step): self.points.append((step, metrics))
    def flush(self): ...


def test_logs_samples_per_second_and_peak_memory_and_adds_them_to_the_final_metrics(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, callbacks={"throughput": ThroughputMonitor()}, max_epochs=2,
                           log_every_n_steps=4)
    trainer.loggers = {"recorder": recorder}
    trainer.fit()
    perf = [(step, m) for step, m in recorder.points if "perf/samples_per_sec" in m]
    assert [step for step, _ in perf] == [4, 8, 12, 16, 20, 24, 28, 32]  # 16 steps per epoch, every 4th
    assert all(m["perf/samples_per_sec"] > 0 and m["perf/peak_memory_mb"] > 10 for _, m in perf)
    final = trainer.callback_metrics
    assert final["perf/samples_per_sec"] > 0
    assert final["perf/peak_memory_mb"] == pytest.approx(perf[-1][1]["perf/peak_memory_mb"], rel=0.5)
    assert "val/acc" in final
