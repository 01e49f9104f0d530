"""scripts/benchmark.py runs end to end and prints its tables (no timing is asserted)."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.paths import REPO


@pytest.mark.slow
def test_quick_benchmark_prints_both_tables_with_equal_losses(data_dir: Path):
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--quick", "--data-dir", str(data_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"toolkit \(train config=mnist_cnn\)\s*│\s*[\d.]+\s*│\s*[\d.]+", out)
    assert re.search(r"hand-written loop\s*│\s*[\d.]+\s*│\s*1\.00", out)
    lightning = importlib.util.find_spec("lightning") is not None
    assert ("not installed" in out) is not lightning
    assert re.search(r"ratio\s*│\s*[\d.]+\s*│\s*[\d.]+", out)  # overhead: step-time and memory ratios
    assert "losses: max abs difference 0 over 3 steps" in out  # the Trainer computes what the plain loop does
    assert re.search(r"train --help: [\d.]+ s", out)
    assert re.search(r"cache / PIL, eval transforms\s*│\s*[\d.]+\s*│\s*[\d.]+", out)  # image folder, 32 and 64 images
    assert re.search(r"cache build / PIL epoch \(train transforms\)\s*│\s*[\d.]+", out)
    assert re.search(r"train config=mnist_cnn trainer.fast_dev_run=true\s*│\s*[\d.]+\s*│\s*[\d.]+", out)


@pytest.mark.slow
def test_device_benchmark_children_time_steady_epochs_of_the_trainer_and_the_compute_only_loop():
    """The measurements behind the GPU tables, on the CPU with a tiny job (the tables: --mode device)."""
    for kind in ("toolkit", "compute"):
        result = subprocess.run([sys.executable, "scripts/device_benchmark.py", "--child", kind, "--device", "cpu",
                                 "--precision", "bf16-mixed", "--model", "mnist_cnn", "--channels", "1", "--size", "28",
                                 "--batch-size", "8", "--samples", "24", "--epochs", "2"],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(report["epoch_seconds"]) == 2 and all(s > 0 for s in report["epoch_seconds"]), kind
        assert report["samples"] == 24, kind


@pytest.mark.slow
def test_a_one_epoch_toolkit_run_has_no_steady_epoch_and_no_rate_not_a_crash(tiny_run: Path, monkeypatch):
    """The benchmarks' steady figures leave out the first epoch; tiny_run has one (10 steps, logged every
    50), whose end is its only epoch end: its validation before training (step 0) is no epoch's end."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_common

    assert bench_common.toolkit_epoch_seconds(tiny_run) == []
    assert bench_common.steady_training_rate(tiny_run) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: --device cuda runs the tables")
def test_asking_for_the_gpu_tables_without_a_gpu_is_one_line_at_once():
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--device", "cuda"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "benchmark: --device cuda, but torch sees no CUDA device here; use --device cpu (or auto)\n"


@pytest.mark.slow
def test_the_hand_written_gpt_loop_reports_its_epochs_and_the_rate_is_taken_after_the_first(tmp_path: Path,
                                                                                          monkeypatch):
    """The baseline of `--mode text_gpt`, tiny, on the CPU; its rate leaves out the warm-up epoch."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from bench_common import Sample, json_lines
    from text_gpt_benchmark import script_tokens_per_second

    from decltrain.datasets.text_file import generated_text

    text = tmp_path / "input.txt"
    text.write_text(generated_text(200))
    result = subprocess.run([sys.executable, "scripts/handwritten_gpt.py", "--text", str(text), "--epochs", "3",
                             "--limit-batches", "2", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                             "--block-size", "16", "--batch-size", "4"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json_lines(result.stdout)
    assert len(report["epoch_seconds"]) == 3 and report["steps_per_epoch"] == 2
    assert 0 < report["train_loss"] < 10
    sample = Sample(wall=1.0, peak_mib=1.0, report={**report, "epoch_seconds": [100.0, 2.0, 4.0]})
    assert script_tokens_per_second(sample, tokens_per_step=64) == 48.0  # the median of 64 and 32 tokens/s
