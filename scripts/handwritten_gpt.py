"""A hand-written character-GPT loop after nanoGPT's train.py: the baseline of `benchmark.py --mode text_gpt`.

What a nanoGPT user writes: the text's characters as one token tensor on the host, random
windows per batch (`get_batch`, pinned and copied without blocking on a GPU), the learning rate
set by hand each step (linear warmup, then cosine), AdamW with weight decay on the matrices only
(fused on a GPU), bf16 autocast and torch.compile when asked, clipping at 1.0, the loss read
only every `--log-interval` steps. The model is the toolkit's GPT (models/gpt.py) with the same
sizes, so both sides run the same arithmetic. An "epoch" is as many steps as the toolkit's
epoch over the same text (non-overlapping blocks of the training part). It prints one JSON line
per epoch (training time only, the device synchronized) and one at the end with the steps per epoch.

    python scripts/handwritten_gpt.py --text input.txt --epochs 3 --device cuda --compile --precision bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from decltrain.models.gpt import GPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True, help="a plain text file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-batches", type=int, default=None, help="steps per epoch at most")
    parser.add_argument("--data-dir", default="", help="unused (the benchmark passes it to every script)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=384)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--log-interval", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(1337)

    text = Path(args.text).read_text(encoding="utf-8")
    train_text = text[:int(len(text) * 0.9)]
    index = {char: i for i, char in enumerate(sorted(set(train_text)))}
    data = torch.tensor([index[char] for char in train_text], dtype=torch.long)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(data) - args.block_size, (args.batch_size,))
        x = torch.stack([data[i:i + args.block_size] for i in starts])
        y = torch.stack([data[i + 1:i + 1 + args.block_size] for i in starts])
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)

    model = GPT(len(index), args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout).to(device)
    groups = model.param_groups()
    optimizer = torch.optim.AdamW([{"params": groups["decay"], "weight_decay": 0.1},
                                   {"params": groups["no_decay"], "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), fused=device.type == "cuda")
    forward = torch.compile(model) if args.compile else model
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    warmup, decay_steps, min_lr = 100, 5000, 1e-4

    def learning_rate(step: int) -> float:
        if step < warmup:
            return 1e-3 * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        return min_lr + 0.5 * (1e-3 - min_lr) * (1 + math.cos(math.pi * progress))

    steps = math.ceil((len(data) - 1) // args.block_size / args.batch_size)
    steps = min(steps, args.limit_batches or steps)
    step = 0
    x, y = get_batch()
    for epoch in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step)
            with autocast:
                logits = forward(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            x, y = get_batch()  # the next batch, while the device works on this one
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % args.log_interval == 0:
                last_loss = loss.item()
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(json.dumps({"epoch": epoch, "seconds": seconds}), flush=True)
    print(json.dumps({"train_loss": last_loss, "steps_per_epoch": steps}), flush=True)


if __name__ == "__main__":
    main()
