"""The seeds' hand-written MNIST loop (pytorch/examples style): the baseline `benchmark.py` times.

Per-sample PIL transforms (ToTensor, Normalize), DataLoader(batch_size=64, shuffle=True), the
CNN of models/mnist_cnn.py, Adam at 1e-3, every training digit, no validation; then the test
accuracy. It prints one JSON line per epoch and one at the end, which the benchmark reads.

    python scripts/handwritten_mnist.py --data-dir ../shared/data --epochs 5
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from decltrain.models.mnist_cnn import MnistCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-batches", type=int, default=None, help="stop each epoch after N batches")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = MnistCNN(num_classes=10, input_shape=(1, 28, 28))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            if args.limit_batches is not None and batch_idx >= args.limit_batches:
                break
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        print(json.dumps({"epoch": epoch + 1, "seconds": time.perf_counter() - start, "loss": loss.item()}),
              flush=True)

    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += int((model(data).argmax(dim=1) == target).sum())
    print(json.dumps({"test_acc": correct / len(test_set)}), flush=True)


if __name__ == "__main__":
    main()
