"""A hand-written MNIST loop as in PyTorch's MNIST example (pytorch/examples): the baseline `benchmark.py` times.

Per-sample PIL transforms (ToTensor, Normalize), DataLoader(batch_size=64, shuffle=True), the
CNN of models/mnist_cnn.py, Adam at 1e-3, every training digit, no validation; then the test
accuracy. On CUDA it does what pytorch/examples' MNIST does there: one loader worker, pinned
memory, each batch copied to the device. It prints one JSON line per epoch and one at the end
(with the peak device memory on CUDA), which the benchmark reads.

    python scripts/handwritten_mnist.py --data-dir ../shared/data --epochs 5 [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from decltrain.models.mnist_cnn import MnistCNN


def job_arguments(description: str) -> argparse.Namespace:
    """The job's command line; its Lightning twin (scripts/lightning_mnist.py) takes the same."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-batches", type=int, default=None, help="stop each epoch after N batches")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser.parse_args()


def loader_settings(device: torch.device) -> dict[str, Any]:
    """The DataLoader settings pytorch/examples' MNIST uses: on CUDA one worker and pinned memory."""
    return {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}


def main() -> None:
    args = job_arguments(__doc__.splitlines()[0])
    device = torch.device(args.device)
    loader_kwargs = loader_settings(device)
    torch.manual_seed(args.seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True, **loader_kwargs)
    test_loader = DataLoader(test_set, batch_size=1000, **loader_kwargs)

    model = MnistCNN(num_classes=10, input_shape=(1, 28, 28)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        samples = 0
        for batch_idx, (data, target) in enumerate(train_loader):
            if args.limit_batches is not None and batch_idx >= args.limit_batches:
                break
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
            samples += len(data)
        last_loss = loss.item()  # waits for the device, so the epoch's time is complete
        print(json.dumps({"epoch": epoch + 1, "seconds": time.perf_counter() - start, "loss": last_loss,
                          "samples": samples}), flush=True)

    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += int((model(data.to(device)).argmax(dim=1) == target.to(device)).sum())
    peak = {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    print(json.dumps({"test_acc": correct / len(test_set), **peak}), flush=True)


if __name__ == "__main__":
    main()
