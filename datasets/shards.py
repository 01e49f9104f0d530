"""`dataset=shards`: samples in LitData shards (the `shards` extra), from a folder or object storage.

`make-shards SRC OUT` (datasets/make_shards.py) writes `OUT/train/`, optional `OUT/val/` and
`OUT/test/` (each LitData's `index.json` and its chunk files) and `OUT/info/`, a one-sample LitData
dataset describing them (input kind, class names), so the description travels through the same
store as the shards. `path` is `OUT` on local disk or a URL (`s3://`, `gs://`, `https://`, ...)
that LitData reads: chunks are fetched when first read, into `cache_dir`, and evicted beyond
`max_cache_size`.

The splits are map-style: sample `i` is read by LitData's random access, and the toolkit's
sampler chooses the order from (seed, epoch), pads the ranks to equal counts and resumes
mid-epoch exactly (trainer/engine/data.py), as for every other dataset. Images are stored encoded
(the source files' bytes) and decoded in the loader workers, then the configured transforms run.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from decltrain.datasets.base import DataSplits, carve_splits, loader_settings
from decltrain.datasets.images import image_splits, required_pipelines
from decltrain.trainer.errors import UserError

SPLITS = ("train", "val", "test")
INFO = "info"
INSTALL = "pip install -e '.[shards]' (the `shards` extra: LitData)"


def build(path: str, cache_dir: str | None = None, max_cache_size: str = "50GB", val_fraction: float = 0.1,
          test_fraction: float = 0.1, val_split_seed: int = 0, mean: list[float] | None = None,
          std: list[float] | None = None, train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, **loader: Any) -> DataSplits:
    """The shards under `path`; a split without shards is carved from train (as `dataset=hf` does)."""
    options = {"cache_dir": cache_dir, "max_cache_size": max_cache_size}
    info = read_info(path, options)
    train, val, test = (ShardSamples(path, split, info, options) if split == "train" or split in info["splits"]
                        else None for split in SPLITS)
    assert train is not None
    name = f"shards:{path.rstrip('/').rsplit('/', 1)[-1]}"
    class_names = [str(class_name) for class_name in info["class_names"]]
    task = info["task"]
    if info["input"] == "image":
        train_pipeline, eval_pipeline = required_pipelines(train_transforms, eval_transforms, mean, std,
                                                           "dataset=shards")
        return image_splits(train, val, test, class_names=class_names, train_transform=train_pipeline,
                            eval_transform=eval_pipeline, val_fraction=val_fraction, val_split_seed=val_split_seed,
                            name=name, loader=loader_settings(**loader), test_fraction=test_fraction, task=task)
    parts = carve_splits(train, val, test, val_fraction, test_fraction, val_split_seed)
    sample, _ = parts[2][0]
    return DataSplits(train=parts[0], val=parts[1], test=parts[2], num_classes=len(class_names) or 1,
                      input_shape=tuple(sample.shape), loader=loader_settings(**loader), class_names=class_names,
                      task=task, name=name)


def _litdata() -> Any:
    try:
        import litdata
    except ImportError:
        raise UserError(f"dataset=shards needs LitData: {INSTALL}") from None
    return litdata


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _open(path: str, split: str, options: dict[str, Any]) -> Any:
    """LitData's dataset of `path/split`, after checking a local folder's index and chunk files."""
    url = f"{path.rstrip('/')}/{split}"
    if _is_local(path):
        check_local_split(Path(url.removeprefix("file://")))
    try:
        return _litdata().StreamingDataset(url, **{k: v for k, v in options.items() if v is not None})
    except UserError:
        raise
    except Exception as err:  # LitData raises FileNotFoundError, ValueError, botocore errors, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"shards {url} could not be opened: {reason}; check dataset.path "
                        "(a folder or URL written by make-shards)") from None


def check_local_split(folder: Path) -> None:
    """A readable index and every chunk it lists, at the size it records: a missing or cut file is one line."""
    index = folder / "index.json"
    if not index.is_file():
        raise UserError(f"shard folder {folder.resolve()} has no index.json; make it with `make-shards SRC OUT` "
                        "and set dataset.path=OUT")
    try:
        chunks = json.loads(index.read_text())["chunks"]
    except (ValueError, KeyError) as err:
        raise UserError(f"shard index {index.resolve()} is corrupt ({err}); write the shards again with "
                        "make-shards") from None
    for chunk in chunks:
        file = folder / chunk["filename"]
        size = file.stat().st_size if file.is_file() else None
        if size != chunk["chunk_bytes"]:
            found = "is missing" if size is None else f"has {size} bytes, not the {chunk['chunk_bytes']} its index records"
            raise UserError(f"shard {file.resolve()} {found} (corrupt or cut short); write the shards again "
                            "with make-shards")


def read_info(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """The description make-shards wrote (input kind, class names, task, the splits it holds)."""
    if _is_local(path) and not Path(path.removeprefix("file://")).is_dir():
        raise UserError(f"shard folder {Path(path).resolve()} does not exist; make it with `make-shards SRC OUT` "
                        "and set dataset.path=OUT")
    info: dict[str, Any] = json.loads(_open(path, INFO, options)[0]["json"])
    return info


class ShardSamples(Dataset):
    """Sample `i` of the shards of one split as (input, target): a PIL image or a float tensor.

    LitData's dataset is opened in each process on first use (a loader worker opens its own).
    """

    def __init__(self, path: str, split: str, info: dict[str, Any], options: dict[str, Any]) -> None:
        self.path, self.split, self.options = path, split, options
        self.kind, self.image_mode = info["input"], info.get("image_mode")
        self._shards: Any = _open(path, split, options)
        self.count = sum(end - start for start, end in self._shards.region_of_interest)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if self._shards is None:
            self._shards = _open(self.path, self.split, self.options)
        item = self._shards[int(index)]
        if self.kind == "image":
            image = Image.open(io.BytesIO(item["image"]))
            return (image.convert(self.image_mode) if self.image_mode else image), item["label"]
        return torch.as_tensor(item["features"], dtype=torch.float32), item["label"]


def write_info(out: Path, info: dict[str, Any]) -> None:
    """`out/info/`: the one-sample dataset `read_info` reads."""
    writer = _litdata().streaming.writer.BinaryWriter(str(out / INFO), chunk_size=1)
    writer[0] = {"json": json.dumps(info)}
    writer.done()
    writer.merge()


def shard_writer(folder: Path, chunk_bytes: str) -> Any:
    """LitData's writer of one split's chunks and index."""
    os.makedirs(folder, exist_ok=True)
    return _litdata().streaming.writer.BinaryWriter(str(folder), chunk_bytes=chunk_bytes)


def finish(writer: Any) -> None:
    writer.done()
    writer.merge()

