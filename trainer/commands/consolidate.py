"""`consolidate-checkpoint CHECKPOINT [--output FILE] [--safetensors]`: a sharded checkpoint as one file.

A run with `trainer.strategy=fsdp` writes each rank's shard of the weights and optimizer state in a
folder beside the checkpoint file (trainer/engine/sharded_checkpoint.py). This command reads them in
one process and writes the whole state as one ordinary checkpoint file, the format a one-process
run writes (`torch.load(FILE, weights_only=True)` opens it; `train resume=`, `trainer.init_from=`,
`evaluate ckpt=` take it), and with `--safetensors` the weights alone as a safetensors file beside it.
An ordinary checkpoint is copied as it is read.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from decltrain.trainer.console import console
from decltrain.trainer.engine import checkpoint
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        source = Path(args.checkpoint)
        if source.is_dir():
            source = layout.last(source)
        output = Path(args.output) if args.output else source.with_name(f"{source.stem}-consolidated.ckpt")
        if output.resolve() == source.resolve():
            raise UserError(f"--output {output} is the checkpoint being read; choose another file name")
        state = checkpoint.load(source)
        checkpoint.save_atomic(state, output)
        written = [output]
        if args.safetensors:
            written.append(write_safetensors(state["model"], output.with_suffix(".safetensors")))
    except UserError as err:
        print(f"consolidate-checkpoint: {err}", file=sys.stderr)
        sys.exit(2)
    console.print(f"{source} consolidated: " + ", ".join(str(path) for path in written))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consolidate-checkpoint", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file (e.g. outputs/.../checkpoints/last.ckpt) or a run "
                                           "folder (its checkpoints/last.ckpt)")
    parser.add_argument("--output", help="the file to write (default: <checkpoint>-consolidated.ckpt beside it)")
    parser.add_argument("--safetensors", action="store_true",
                        help="also write the weights as <output>.safetensors (needs the `export` extra)")
    return parser


def write_safetensors(weights: dict[str, torch.Tensor], path: Path) -> Path:
    """`weights` as a safetensors file; tensors that share memory (tied weights) are stored as copies,
    which the format requires."""
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise UserError("--safetensors needs the safetensors package: pip install -e \".[export]\"") from err
    seen: set[int] = set()
    tensors = {}
    for name, tensor in weights.items():
        shared = tensor.untyped_storage().data_ptr() in seen
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor.detach().clone() if shared else tensor.detach().contiguous()
    tmp_name = checkpoint.temporary_sibling(path)
    try:
        save_file(tensors, str(tmp_name), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        tmp_name.chmod(0o666 & ~umask)  # safetensors creates its file readable by its owner only
        tmp_name.replace(path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return path
