"""`make-shards SRC OUT`: an image folder, a CSV table or a Hugging Face dataset as LitData shards.

SRC is one of:
- an image folder laid out as `dataset=image_folder` reads it (`SRC/train/<class>/<files>`,
  optional `SRC/val/`, `SRC/test/`): each image's file bytes are stored as they are;
- a CSV file with a header: `--target` names the target column, the other columns (or
  `--features`) are numeric features; `--task regression` keeps the target a number;
- a Hugging Face dataset saved with `save_to_disk` (a folder), or `hf:PATH` for `load_dataset(PATH)`
  with `--data-files`: `--image-column` / `--label-column` name its columns.
OUT gets the splits LitData's writer makes (`OUT/train/` ...) and `OUT/info/`; train with
`dataset=shards dataset.path=OUT`.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from decltrain.datasets.base import read_csv_rows
from decltrain.datasets.hf_rows import HFRows, check_columns, hf_datasets, label_kind
from decltrain.datasets.image_folder import read_folders
from decltrain.datasets.shards import finish, shard_writer, write_info
from decltrain.trainer.console import console
from decltrain.trainer.errors import UserError

Sample = dict[str, Any]
Splits = dict[str, tuple[int, Iterable[Sample]]]  # split -> (count, samples)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out.resolve()} is not empty; choose a new OUT folder or empty it")
        splits, info = _read_source(args)
        _write(splits, info, out, args.chunk_bytes)
    except UserError as err:
        print(f"make-shards: {err}", file=sys.stderr)
        sys.exit(2)
    console.print(f"shards written to {out.resolve()}: train with dataset=shards dataset.path={out}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make-shards", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="an image folder, a CSV file, a saved Hugging Face dataset, or hf:PATH")
    parser.add_argument("out", help="the new folder of shards")
    parser.add_argument("--chunk-bytes", default="64MB", help="the size of one shard (default 64MB)")
    parser.add_argument("--target", default="target", help="CSV: the target column")
    parser.add_argument("--features", nargs="*", help="CSV: the feature columns (default: all but the target)")
    parser.add_argument("--task", choices=("classification", "regression"), default="classification",
                        help="CSV and Hugging Face: a class per distinct target, or a number")
    parser.add_argument("--image-column", default="image", help="Hugging Face: the image column")
    parser.add_argument("--label-column", default="label", help="Hugging Face: the label column")
    parser.add_argument("--data-files", nargs="*", help="hf:PATH: the files load_dataset reads")
    return parser


def _read_source(args: argparse.Namespace) -> tuple[Splits, dict[str, Any]]:
    src = str(args.src)
    if src.startswith("hf:") or (Path(src) / "dataset_info.json").is_file() or (Path(src) / "dataset_dict.json").is_file():
        return _hugging_face(src, args)
    path = Path(src)
    if path.is_dir():
        return _image_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _csv(path, args.target, args.features, args.task)
    raise UserError(f"SRC {path.resolve()} is neither an image folder, a .csv file nor a saved Hugging Face dataset")


def _image_folder(root: Path) -> tuple[Splits, dict[str, Any]]:
    train, val, test, class_names = read_folders(root)
    splits: Splits = {name: (len(folder.samples), _files(folder.samples))
                      for name, folder in (("train", train), ("val", val), ("test", test)) if folder is not None}
    return splits, {"input": "image", "image_mode": "RGB", "class_names": class_names, "task": "multiclass"}


def _files(samples: list[tuple[str, int]]) -> Iterator[Sample]:
    for file, label in samples:
        yield {"image": Path(file).read_bytes(), "label": label}


def _csv(path: Path, target: str, features: list[str] | None, task: str) -> tuple[Splits, dict[str, Any]]:
    rows = read_csv_rows(path, [target, *(features or [])], "make-shards")
    names = features or [column for column in rows[0] if column != target]
    class_names = sorted({row[target] for row in rows}) if task == "classification" else []
    index = {name: i for i, name in enumerate(class_names)}
    try:
        samples = [{"features": np.array([float(row[name]) for name in names], dtype=np.float32),
                    "label": index[row[target]] if class_names else float(row[target])} for row in rows]
    except ValueError as err:
        raise UserError(f"{path}: {err}; feature columns (and a regression target) must hold numbers") from None
    return ({"train": (len(samples), samples)},
            {"input": "features", "class_names": class_names, "task": "multiclass" if class_names else "regression"})


def _hugging_face(src: str, args: argparse.Namespace) -> tuple[Splits, dict[str, Any]]:
    library = hf_datasets()
    try:
        loaded = (library.load_dataset(src.removeprefix("hf:"), data_files=args.data_files) if src.startswith("hf:")
                  else library.load_from_disk(src))
    except Exception as err:  # the library's many error types
        raise UserError(f"Hugging Face dataset {src} could not be loaded: {str(err).strip().splitlines()[0]}") from None
    tables = loaded if isinstance(loaded, library.DatasetDict) else {"train": loaded}
    names = {"train": "train", "validation": "val", "val": "val", "test": "test"}
    if "train" not in tables:
        raise UserError(f"Hugging Face dataset {src} has no train split (its splits: {', '.join(tables)})")
    roles = {"image": args.image_column, "label": args.label_column}
    check_columns(tables["train"], roles, src)
    task, class_names = label_kind(tables["train"], args.label_column)
    splits: Splits = {}
    for split, table in tables.items():
        if split in names:
            rows = HFRows(table, roles)
            splits[names[split]] = (len(rows), (_encoded(*rows[i]) for i in range(len(rows))))
    return splits, {"input": "image", "image_mode": None, "class_names": class_names, "task": task}


def _encoded(image: Any, label: Any) -> Sample:
    buffer = io.BytesIO()
    image.save(buffer, format=image.format or "PNG")
    return {"image": buffer.getvalue(), "label": label}


def _write(splits: Splits, info: dict[str, Any], out: Path, chunk_bytes: str) -> None:
    """Every split's samples through LitData's writer, behind one progress bar; `info` last."""
    columns = (TextColumn("writing shards: {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            for split, (count, samples) in splits.items():
                task = progress.add_task(split, total=count)
                writer = shard_writer(out / split, chunk_bytes)
                for index, sample in enumerate(samples):
                    writer[index] = sample
                    progress.advance(task)
                finish(writer)
        write_info(out, {**info, "splits": sorted(splits)})
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written set that looks complete
        raise
