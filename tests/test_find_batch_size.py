"""find-batch-size: doubling then bisection, and the command on MNIST."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from decltrain.trainer.engine.batch_size_finder import search, step_fits
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.tasks.classification import Classification
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


@pytest.mark.cuda
def test_on_a_gpu_the_largest_size_found_is_the_last_before_running_out_of_memory():
    """A process capped at 1 GiB of the device: every size up to the one found ran a real step, the
    next one ran out of memory, and the tries after each out-of-memory error still ran."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    task = Classification(nn.CrossEntropyLoss(), "multiclass", 10)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(size, 1024), torch.randint(0, 10, (size,))

    fits = step_fits(model, optimizer, task, Precision("32", device), batch, device, margin=0.0)
    torch.cuda.set_per_process_memory_fraction(2**30 / torch.cuda.get_device_properties(device).total_memory)
    try:
        result = search(fits, start=1, largest=1 << 20)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    found = result.batch_size
    power = 1 << (found.bit_length() - 1)  # the doubling's last size that fit
    assert result.tried[power][0] and not result.tried[2 * power][0]
    assert result.tried[found][0] and not result.tried[found + 1][0]
    assert 1000 < found < 1 << 20  # the cap, not the upper limit, ended the search
