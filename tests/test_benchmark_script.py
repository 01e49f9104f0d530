"""scripts/benchmark.py runs end to end and prints its tables (no timing is asserted)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


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
