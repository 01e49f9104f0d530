"""`benchmark.py --mode text_gpt`: a character GPT trained by `train config=text_gpt` and by the
loop a nanoGPT user writes (scripts/handwritten_gpt.py), whole processes alternated over rounds.

Both train the same model (models/gpt.py, the same sizes) with the same optimizer (AdamW, decay on
matrices only; fused on a GPU on both sides), clipping and schedule on the same generated text;
on a GPU both compile the model and autocast to bf16, as nanoGPT's defaults do. The figure is
training tokens per second after the first epoch (compilation and warm-up excluded): the
toolkit's from its `perf/samples_per_sec` points (training windows only, no validation) times the
block size, the hand-written loop's from its epoch times. On the CPU the model is smaller
(4 layers, 128 wide, 128 tokens of context, batch 32) so that a round takes a minute.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench_common import Contender, Sample, script, steady_training_rate, toolkit

# (n_layer, n_head, n_embd, block_size, batch_size, sentences of generated text)
SIZES = {"cuda": (6, 6, 384, 256, 64, 100_000),  # nanoGPT's shakespeare_char
         "cpu": (4, 4, 128, 128, 32, 4_000)}


def toolkit_tokens_per_second(sample: Sample, block_size: int) -> float:
    """Median training rate after the first epoch, from the run's TensorBoard points."""
    rate = steady_training_rate(sample.report["run_dir"])
    if rate is None:
        sys.exit("benchmark: the toolkit logged no training rate after its first epoch; run more epochs")
    return rate * block_size


def script_tokens_per_second(sample: Sample, tokens_per_step: int) -> float:
    """Median training rate after the first epoch, from the hand-written loop's epoch times."""
    steps = sample.report["steps_per_epoch"]
    return statistics.median(steps * tokens_per_step / seconds for seconds in sample.report["epoch_seconds"][1:])


def text_gpt_mode(args: argparse.Namespace, env: dict[str, str], work: Path, console: Console) -> None:
    from decltrain.datasets.text_file import generated_text

    n_layer, n_head, n_embd, block_size, batch_size, sentences = SIZES[args.device]
    text = work / "input.txt"
    text.write_text(generated_text(sentences), encoding="utf-8")
    on_gpu = args.device == "cuda"
    loop_args = ["--text", str(text), "--device", args.device, "--n-layer", str(n_layer), "--n-head", str(n_head),
                 "--n-embd", str(n_embd), "--block-size", str(block_size), "--batch-size", str(batch_size),
                 *(["--compile", "--precision", "bf16"] if on_gpu else [])]
    contenders: dict[str, Contender] = {
        "toolkit (train config=text_gpt)": toolkit(
            f"dataset.path={text}", f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.n_embd={n_embd}",
            f"dataset.block_size={block_size}", f"dataset.batch_size={batch_size}", f"trainer.accelerator={args.device}",
            "callbacks.early_stopping=null", "trainer.limit_val_batches=4",
            *(["trainer.compile=true", "trainer.precision=bf16-mixed", "+optimizer.fused=true"] if on_gpu else []),
            config="text_gpt", metric="test/loss"),
        "hand-written loop (nanoGPT's train.py)": script("handwritten_gpt.py", *loop_args),
    }
    if not on_gpu:  # the same loop with the toolkit's thread setting, as in the MNIST table
        contenders["hand-written, OMP_WAIT_POLICY=PASSIVE"] = script("handwritten_gpt.py", *loop_args,
                                                                     OMP_WAIT_POLICY="PASSIVE")
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    for index in range(args.rounds):  # alternate, so a busy moment hits both alike
        for name, run in contenders.items():
            sample = run(args, env, work, index)
            rate = (toolkit_tokens_per_second(sample, block_size) if "run_dir" in sample.report
                    else script_tokens_per_second(sample, batch_size * block_size))
            rates[name].append(rate)
            walls[name].append(sample.wall)
            console.print(f"round {index + 1}/{args.rounds} {name}: {rate:,.0f} tokens/s, {sample.wall:.1f} s")
    setting = "torch.compile, bf16" if on_gpu else "eager, fp32"
    table = Table(title=f"Character GPT ({n_layer} layers, {n_embd} wide, {block_size} context, batch {batch_size}) "
                        f"on {args.device}, {setting}, {args.epochs} epochs, median of {args.rounds} rounds")
    for column in ("", "tokens/s", "x hand-written", "wall s"):
        table.add_column(column, justify="left" if not column else "right")
    baseline = statistics.median(rates["hand-written loop (nanoGPT's train.py)"])
    for name in contenders:
        rate = statistics.median(rates[name])
        table.add_row(name, f"{rate:,.0f}", f"{rate / baseline:.3f}", f"{statistics.median(walls[name]):.1f}")
    console.print(table)
