"""find-batch-size: doubling then bisection, and the command on MNIST."""
from __future__ import annotations

import pytest

from decltrain.trainer.engine.batch_size_finder import search
from tests.helpers.commands import run_command


def test_sizes_double_until_one_does_not_fit_then_bisect():
    result = search(lambda size: (size <= 37, size * 10), start=1, largest=1000)
    assert result.batch_size == 37
    assert list(result.tried) == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert result.tried[37] == (True, 370) and result.tried[38] == (False, 380)


def test_the_upper_limit_and_a_start_that_does_not_fit():
    assert search(lambda size: (True, 0), start=3, largest=20).batch_size == 20
    assert search(lambda size: (False, 0), start=4, largest=20).batch_size == 0


@pytest.mark.slow
def test_find_batch_size_on_mnist_prints_a_size_and_the_train_command(tmp_path, data_dir):
    result = run_command("find-batch-size", "config=mnist_cnn", "batch_size_find.largest=48", "optimizer.lr=0.01",
                         cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch size     32:         fits, peak process memory (CPU)" in result.stdout
    assert "largest batch size that fits: 48" in result.stdout
    assert "train config=mnist_cnn optimizer.lr=0.01 dataset.batch_size=48" in result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written
