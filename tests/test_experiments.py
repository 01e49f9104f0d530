"""Every experiment in configs/config runs offline; real runs on small generated files (images, table, text)."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.commands import run_train
from tests.helpers.paths import REPO

EXPERIMENTS = sorted(path.stem for path in (REPO / "configs" / "config").glob("*.yaml"))


def test_the_catalogue_has_the_seed_experiments():
    assert {"mnist_cnn", "mnist_mlp", "fashion_mnist_cnn", "cifar10_cnn", "cifar10_resnet18",
            "imagefolder_resnet18", "text_lstm", "tabular_regression"} <= set(EXPERIMENTS)


@pytest.mark.slow
def test_every_experiment_runs_one_step_on_fake_data(tmp_path):
    # One sweep (one process) over all experiments: the same command a user runs per experiment,
    # without paying the start-up once per experiment; small batches keep it quick on a CPU.
    # No data files, no network.
    result = run_train("-m", f"config={','.join(EXPERIMENTS)}", "dataset.fake=true", "trainer.fast_dev_run=true",
                       "dataset.batch_size=4", "dataset.eval_batch_size=4", "dataset.num_workers=0",
                       cwd=tmp_path, env={"DATA_DIR": str(tmp_path / "none")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("final metrics") == len(EXPERIMENTS)
    assert f"{len(EXPERIMENTS)} done, 0 failed" in result.stdout
    assert not (tmp_path / "none").exists()


def write_pngs(root: Path, counts: dict[str, int]) -> None:
    """Class `dark` is dark, `light` is light: a model can tell them apart."""
    rng = random.Random(0)
    for split, count in counts.items():
        for name, base in (("dark", 30), ("light", 220)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), (base + rng.randint(-20, 20),) * 3).save(folder / f"{i}.png")


@pytest.mark.slow
def test_image_folder_fine_tuning_from_a_local_weights_file(tmp_path):
    write_pngs(tmp_path / "images", {"train": 16, "val": 4})
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    run_dir = tmp_path / "run"
    result = run_train("config=imagefolder_resnet18", f"dataset.root={tmp_path / 'images'}", f"model.weights={weights}",
                       "dataset.image_size=32", "dataset.batch_size=8", "dataset.num_workers=0",
                       "trainer.max_epochs=2", "callbacks.backbone_unfreeze.epoch=1", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {"test/acc", "test/precision", "test/recall", "test/f1", "test/loss"} <= set(metrics)
    assert "epoch 1: backbone unfrozen" in (run_dir / "train.log").read_text()
    model = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    source = torch.load(weights, weights_only=True)
    assert model["net.fc.weight"].shape == (2, 512)
    assert not torch.equal(model["net.conv1.weight"], source["conv1.weight"])  # fine-tuned after unfreezing
    events = EventAccumulator(str(run_dir)).Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]


@pytest.mark.slow
def test_tabular_regression_on_a_csv(tmp_path):
    rng = random.Random(0)
    rows = [[a, b, 2 * a - b + rng.gauss(0, 0.05)] for a, b in ((rng.uniform(-1, 1), rng.uniform(-1, 1))
                                                                for _ in range(400))]
    with (tmp_path / "table.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["a", "b", "y"], *rows])
    run_dir = tmp_path / "run"
    result = run_train("config=tabular_regression", f"dataset.path={tmp_path / 'table.csv'}", "dataset.target=y",
                       "trainer.max_epochs=8", "dataset.batch_size=16", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    variance = torch.tensor([row[2] for row in rows]).var().item()
    assert metrics["test/mse"] < 0.05 * variance  # far better than predicting the mean
    assert 0 < metrics["test/mae"] < metrics["test/mse"] ** 0.5 * 1.5


@pytest.mark.slow
def test_text_lstm_on_a_csv(tmp_path):
    rng = random.Random(0)
    words = {"pos": ["great", "lovely", "superb"], "neg": ["awful", "dull", "poor"]}
    filler = ["the", "film", "was", "plot", "and", "acting", "really"]
    rows = []
    for i in range(300):
        label = "pos" if i % 2 else "neg"
        tokens = rng.sample(filler, rng.randint(1, 6)) + [rng.choice(words[label])]
        rng.shuffle(tokens)
        rows.append([" ".join(tokens), label])
    with (tmp_path / "text.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], *rows])
    run_dir = tmp_path / "run"
    result = run_train("config=text_lstm", f"dataset.path={tmp_path / 'text.csv'}", "trainer.max_epochs=3",
                       "dataset.batch_size=16", "model.hidden_size=32", "model.embedding_dim=32",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["test/acc"] >= 0.9
