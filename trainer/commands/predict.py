"""`predict run=<run folder> inputs=<file, folder or glob>`: a trained model on new inputs.

Each input goes through the run's evaluation transform (`DataSplits.eval_transform`), as the
test split did. Images are first converted to the colour mode the model was trained on and, if
the transform leaves them at another size, resized to the training size. `.txt` files give one
input per non-empty line (text runs), `.csv` files one per row as {column: value} (table runs).
An input that cannot be read or transformed is reported by name and skipped. A language model
continues `prompt=` instead; a generative model (a GAN) draws `num_samples=` images into one PNG grid.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import default_collate
from torchvision.io import write_png

from decltrain.datasets.base import DataSplits
from decltrain.trainer.commands import build, inference_record
from decltrain.trainer.engine.device import resolve_device
from decltrain.trainer.engine.placement import to_device
from decltrain.trainer.engine.task import Generates, Samples, Task
from decltrain.trainer.errors import UserError, first_line
from decltrain.trainer.runs.run_folder import RunFolder

log = logging.getLogger("decltrain")
IMAGE_MODES = {1: "L", 3: "RGB"}  # channels of the model's input -> PIL mode
# What a broken or foreign input raises while it is read and transformed: it is skipped, not fatal.
INPUT_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError, UserError)


def main(cfg: DictConfig, overrides: list[str]) -> list[dict[str, Any]]:
    run = RunFolder.open(cfg.run, overrides)
    if cfg.prompt is None and cfg.inputs is None and cfg.num_samples is None:
        raise UserError("predict needs inputs=FILE|FOLDER|GLOB (or, for a language model, prompt=TEXT; for a "
                        "generative model, num_samples=N)")
    files = find_inputs(str(cfg.inputs)) if cfg.prompt is None and cfg.num_samples is None else []
    splits, model, task, _ = build.trained_model(run, cfg.ckpt, data_needed=inference_record.data_overridden(overrides))
    device = resolve_device(str(run.config.trainer.get("accelerator", "auto")))
    if cfg.prompt is not None:
        return [{"prompt": cfg.prompt, "text": generate(cfg, run, splits, model.to(device), task, device)}]
    if cfg.num_samples is not None:
        return [{"samples": str(draw_samples(cfg, run, model.to(device), task))}]
    names, tensors, skipped = [], [], []

    def skip(name: str, err: Exception) -> None:
        skipped.append(name)
        log.warning("skipped %s: %s", name, first_line(err))

    for name, raw in read_inputs(files, skip):
        try:
            tensors.append(prepare(raw, splits))
            names.append(name)
        except INPUT_ERRORS as err:
            skip(name, err)
    if not tensors:
        raise UserError(f"none of the inputs matched by inputs={cfg.inputs} could be read as inputs of run "
                        f"{run.path} (see the lines above)")
    predicted = predictions(model.to(device), task, tensors, splits, device)
    rows = [{"input": name, **row} for name, row in zip(names, predicted)]
    target = write(rows, Path(cfg.output) if cfg.output else run.path / "predictions.csv")
    for row in rows:
        print(describe(row))
    print(f"wrote {len(rows)} predictions to {target}" + (f"; skipped {len(skipped)}: {', '.join(skipped)}"
                                                          if skipped else ""))
    return rows


def generate(cfg: DictConfig, run: RunFolder, splits: DataSplits, model: torch.nn.Module, task: Task,
             device: torch.device) -> str:
    """`prompt=`: the prompt continued by `max_new_tokens` tokens of the run's language model, printed
    and written to `output` (default <run>/generated.txt)."""
    tokenizer = splits.eval_transform
    if not isinstance(task, Generates) or tokenizer is None or not hasattr(tokenizer, "decode"):
        raise UserError(f"prompt= continues text with a language model; run {run.path} was trained with "
                        f"task {type(task).__name__}: give inputs= instead")
    tokens = tokenizer(str(cfg.prompt)).unsqueeze(0).to(device)
    if tokens.shape[1] == 0:
        raise UserError("prompt= is empty; give the text to continue, e.g. prompt='ROMEO:'")
    with torch.no_grad():
        sampled = task.generate(model, tokens, int(cfg.max_new_tokens), float(cfg.temperature),
                                None if cfg.top_k is None else int(cfg.top_k))
    text = tokenizer.decode(sampled[0].tolist())
    target = Path(cfg.output) if cfg.output else run.path / "generated.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote the text to {target}")
    return text


def draw_samples(cfg: DictConfig, run: RunFolder, model: torch.nn.Module, task: Task) -> Path:
    """`num_samples=`: a grid of that many images of the run's generative model, drawn from the noise
    of `noise_seed`, written as a PNG to `output` (default <run>/samples.png)."""
    count = int(cfg.num_samples)
    if not isinstance(task, Samples):
        raise UserError(f"num_samples= draws images from a generative model; run {run.path} was trained with "
                        f"task {type(task).__name__}: give inputs= instead")
    if count < 1:
        raise UserError(f"num_samples={count} must be at least 1 (e.g. num_samples=64: a grid of 8 rows)")
    with torch.no_grad():
        grid = task.samples(model, count, int(cfg.noise_seed))
    target = Path(cfg.output) if cfg.output else run.path / "samples.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_png(grid, str(target))
    print(f"wrote {count} samples to {target}")
    return target


def find_inputs(spec: str) -> list[Path]:
    """A file, every file in a folder (sorted), or the files a glob (`**` recursive) matches."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(f"inputs={spec} is no file, no folder with files and no glob that matches a file; "
                        "pass an image, a folder of images or a quoted glob such as 'inputs=digits/*.png'")
    return files


def read_inputs(files: list[Path], skip: Callable[[str, Exception], None]) -> Iterator[tuple[str, Any]]:
    """(name, raw input) pairs; a file that cannot be read is handed to `skip` instead."""
    for path in files:
        try:
            if path.suffix.lower() == ".txt":
                lines = path.read_text(encoding="utf-8").splitlines()
                yield from ((f"{path}:{number}", line) for number, line in enumerate(lines, 1) if line.strip())
            elif path.suffix.lower() == ".csv":
                with path.open(newline="", encoding="utf-8") as handle:
                    # line 1 is the header
                    rows = list(csv.DictReader(handle))
                yield from ((f"{path}:{number}", row) for number, row in enumerate(rows, 2))
            else:
                with Image.open(path) as image:
                    image.load()  # decode now: a truncated file fails here, under its own name
                    yield str(path), image.copy()
        except INPUT_ERRORS as err:
            skip(str(path), err)


def prepare(raw: Any, splits: DataSplits) -> torch.Tensor:
    """One raw input to one model input, through the run's evaluation transform."""
    transform = splits.eval_transform
    if transform is None:
        raise UserError(f"dataset {splits.name or '?'} gives no eval_transform, so new inputs cannot be prepared")
    if not isinstance(raw, Image.Image):
        return transform(raw)
    shape = tuple(splits.input_shape)
    image = raw.convert(IMAGE_MODES.get(shape[0], "RGB"))
    tensor = transform(image)
    if splits.any_image_size:
        return tensor
    if tuple(tensor.shape) != shape and len(shape) == 3:
        tensor = transform(image.resize((shape[2], shape[1]), Image.Resampling.BILINEAR))
    if tuple(tensor.shape) != shape:
        raise ValueError(f"the image becomes {tuple(tensor.shape)} but the model takes {shape}")
    return tensor


@torch.no_grad()
def predictions(model: torch.nn.Module, task: Task, tensors: list[torch.Tensor], splits: DataSplits,
                device: torch.device) -> list[dict[str, Any]]:
    """The task's row for each input, in batches collated like the run's evaluation batches
    (with a dummy target: the task picks the model's inputs out of the batch)."""
    collate = splits.loader.collate_fn or default_collate
    batch_size = splits.loader.eval_batch_size or splits.loader.batch_size
    rows = []
    for start in range(0, len(tensors), batch_size):
        inputs = task.model_inputs(collate([(tensor, 0) for tensor in tensors[start:start + batch_size]]))
        rows.extend(task.predict(model, to_device(inputs, device)))
    return rows


def write(rows: list[dict[str, Any]], target: Path) -> Path:
    """Writes the rows to `target`: a CSV table, or JSON (beside it, `.json`) when a value is a list or
    a dict. Image values are saved as PNGs in a folder named after the file; the row holds their path."""
    folder = target.parent / target.stem
    for number, row in enumerate(rows):
        for key, value in row.items():
            if isinstance(value, Image.Image):
                folder.mkdir(parents=True, exist_ok=True)
                row[key] = str(folder / f"{number:05d}_{Path(row['input']).stem}_{key}.png")
                value.save(row[key])
    target.parent.mkdir(parents=True, exist_ok=True)
    if any(isinstance(value, (list, dict)) for row in rows for value in row.values()):
        target = target.with_suffix(".json")
        target.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return target
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def describe(row: dict[str, Any]) -> str:
    """The terminal line for one prediction: a class with its probability, a value, or the row's fields."""
    if "class_name" in row:
        return f"{row['input']}  {row['class_name']} (class {row['class_index']})  p={row['probability']:.4f}"
    if "value" in row:
        return f"{row['input']}  {row['value']:.6g}"
    return "  ".join([row["input"], *(f"{key}={value}" for key, value in row.items()
                                      if key != "input" and not isinstance(value, (list, dict)))])
