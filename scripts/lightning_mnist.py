"""The hand-written MNIST job (scripts/handwritten_mnist.py) as a PyTorch Lightning user writes it.

Same data, transforms, loader settings, model, optimizer and epochs (the command line and
loader settings are the hand-written script's own); Lightning's defaults otherwise (its
checkpoint and logger included). `lightning` comes with the `bench` extra; `benchmark.py` runs
this script only where it is installed. Prints the same JSON lines as the hand-written script.

    python scripts/lightning_mnist.py --data-dir ../shared/data --epochs 5 [--device cuda]
"""
from __future__ import annotations

import json
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from decltrain.models.mnist_cnn import MnistCNN
from handwritten_mnist import job_arguments, loader_settings  # scripts/ is this script's path


class LitMnist(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = MnistCNN(num_classes=10, input_shape=(1, 28, 28))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        data, target = batch
        loss = F.cross_entropy(self.model(data), target)
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        data, target = batch
        self.log("test_acc", (self.model(data).argmax(dim=1) == target).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class EpochTimer(L.Callback):
    """One JSON line per epoch, like the hand-written script."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        self.samples = 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: object,
                           batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.samples += len(batch[0])

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)  # the epoch's work is done, not only queued
        print(json.dumps({"epoch": trainer.current_epoch + 1, "seconds": time.perf_counter() - self.start,
                          "samples": self.samples}), flush=True)


def main() -> None:
    args = job_arguments(__doc__.splitlines()[0])
    loader_kwargs = loader_settings(torch.device(args.device))
    L.seed_everything(args.seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    trainer = L.Trainer(max_epochs=args.epochs, limit_train_batches=args.limit_batches, accelerator=args.device,
                        devices=1, enable_progress_bar=False, callbacks=[EpochTimer()])
    module = LitMnist()
    trainer.fit(module, DataLoader(train_set, batch_size=64, shuffle=True, **loader_kwargs))
    results = trainer.test(module, DataLoader(test_set, batch_size=1000, **loader_kwargs), verbose=False)
    peak = {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20} if args.device == "cuda" else {}
    print(json.dumps({"test_acc": results[0]["test_acc"], **peak}), flush=True)


if __name__ == "__main__":
    main()
