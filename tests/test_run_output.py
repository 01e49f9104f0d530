"""What `train` prints around a run: the run folder at the start and under the final table, with the
commands that open it."""
from __future__ import annotations

import re
import shlex

import pytest

from tests.helpers.commands import run_command, run_train

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_dir):
    """A short `train config=mnist_cnn` from an empty folder: (working folder, its output)."""
    work = tmp_path_factory.mktemp("work")
    result = run_train("config=mnist_cnn", *SHORT, cwd=work, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    return work, result.stdout.splitlines()


@pytest.mark.slow
def test_the_run_folder_is_printed_at_the_start_and_under_the_final_table(short_run, data_dir):
    work, lines = short_run
    (run_dir,) = (work / "outputs" / "mnist_cnn").iterdir()
    folder = str(run_dir.relative_to(work))
    shown = [number for number, line in enumerate(lines) if re.fullmatch(rf"run folder:?\s+{folder}\s*", line)]
    first_epoch = next(number for number, line in enumerate(lines) if "epoch 1/1" in line)
    table_end = max(number for number, line in enumerate(lines) if line.startswith("└"))
    assert len(shown) == 2 and shown[0] < first_epoch and shown[1] > table_end, lines
    assert lines[shown[1] + 1].split(":", 1)[1].strip() == f"tensorboard --logdir {folder}"
    evaluate = lines[shown[1] + 2].split(":", 1)[1].strip()
    assert evaluate == f"evaluate run={folder}"
    result = run_command("evaluate", *shlex.split(evaluate)[1:], cwd=work, data_dir=data_dir)
    assert result.returncode == 0 and re.search(r"test/acc\s.*\d", result.stdout), result.stdout + result.stderr


@pytest.mark.slow
def test_the_start_is_compact_and_tells_the_run_apart(short_run):
    _, lines = short_run
    start = lines[:next(number for number, line in enumerate(lines) if "epoch 1/1" in line)]
    assert len(start) <= 40, "\n".join(start)
    text = "\n".join(start)
    for shown in ("experiment   mnist_cnn", "optimizer=adam", "trainer.limit_train_batches=3",
                  "learning rate 0.001, batch size 64, 1 epoch, 1,199,882 parameters", "model: MnistCNN"):
        assert shown in text, text
    assert "_target_" not in text and "print_config=full" in text


@pytest.mark.slow
def test_print_config_full_prints_the_config_tree_too(tmp_path, data_dir):
    result = run_train("config=mnist_cnn", *SHORT, "print_config=full", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "_target_: torch.optim.Adam" in result.stdout and "experiment   mnist_cnn" in result.stdout
