"""`dataset=hf`: a Hugging Face `datasets` dataset (the `hf` extra), from the Hub or from local files.

`load_dataset` keeps the data in Arrow files that every process memory-maps, so data larger than
memory (but on disk) trains with flat memory. The splits are map-style, so the toolkit's
samplers apply as to any other dataset: (seed, epoch) order, exact mid-epoch resume, DDP shards.
Images stay encoded in the Arrow files and are decoded in the DataLoader workers, then the
configured transforms run there; `cache=true` decodes them once into the image cache instead
(datasets/image_cache.py), as image folders do. `columns` names which columns are the inputs
(`image`, `features` or `text`) and the target (`label`); class names come from the label
column's `ClassLabel` feature. With local files and `HF_DATASETS_OFFLINE=1` the Hub is never
contacted (the library's own switch).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from decltrain.datasets.base import DataSplits, TransformedSubset, carve_splits, loader_settings
from decltrain.datasets.hf_stream import streamed_splits
from decltrain.datasets.hf_rows import INPUT_ROLES, HFRows, check_columns, label_kind, load_splits
from decltrain.datasets.image_cache import cached_images, default_cache_dir
from decltrain.datasets.images import image_splits, required_pipelines
from decltrain.datasets.text_csv import TextEncoder, build_vocabulary, pad_collate

DEFAULT_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def build(path: str, name: str | None = None, data_files: Any = None, data_dir: str | None = None,
          revision: str | None = None, hf_cache_dir: str | None = None, splits: Mapping[str, str | None] | None = None,
          columns: Mapping[str, Any] | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1,
          val_split_seed: int = 0, mean: list[float] | None = None, std: list[float] | None = None,
          train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, image_mode: str | None = None,
          image_size: int = 224, cache: bool = False, cache_dir: str | None = None, cache_size: int | None = None,
          max_length: int = 256, min_freq: int = 1, max_vocab_size: int = 20000, streaming: bool = False,
          samples_per_epoch: int | None = None, shuffle_buffer: int = 1000, eval_samples: int = 1000,
          **loader: Any) -> DataSplits:
    """Loads `path` (a Hub name, or a builder: parquet, arrow, csv, json, imagefolder, text) and its splits.

    `splits` maps the toolkit's train/val/test to the dataset's split names; a val or test split
    the data lacks (or mapped to null) is carved from train by `val_fraction` / `test_fraction`
    (fixed by `val_split_seed`). `columns` holds one input role (`image`, `features`: a list of
    numeric columns, or `text`) and `label`. `streaming` reads the training split as a stream
    (datasets/hf_stream.py: `samples_per_epoch`, `shuffle_buffer`, `eval_samples`).
    """
    roles = dict(columns or {"image": "image", "label": "label"})
    loaded = load_splits(path, name=name, data_files=data_files, data_dir=data_dir, revision=revision,
                         cache_dir=hf_cache_dir, splits={**DEFAULT_SPLITS, **(splits or {})}, streaming=streaming)
    check_columns(loaded["train"], roles, path)
    (role,) = [role for role in INPUT_ROLES if role in roles]
    label = f"hf:{path}" + (f"/{name}" if name else "")
    if streaming:
        return streamed_splits(loaded, roles, label=label, image_mode=image_mode, samples_per_epoch=samples_per_epoch,
                               shuffle_buffer=shuffle_buffer, eval_samples=eval_samples, mean=mean, std=std,
                               train_transforms=train_transforms, eval_transforms=eval_transforms, loader=loader)
    task, class_names = label_kind(loaded["train"], roles["label"])
    train, val, test = (None if table is None else HFRows(table, roles, image_mode, f"{label} {split}")
                        for split, table in loaded.items())
    assert train is not None  # load_splits insists on a train split
    if role == "image":
        size = math.ceil(image_size * 1.15) if cache_size is None else cache_size
        decode = partial(cached_images, size=size, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                         workers=loader.get("num_workers", 0)) if cache else None
        train_pipeline, eval_pipeline = required_pipelines(train_transforms, eval_transforms, mean, std, "dataset=hf")
        return image_splits(train, val, test, class_names=class_names, train_transform=train_pipeline,
                            eval_transform=eval_pipeline, val_fraction=val_fraction, val_split_seed=val_split_seed,
                            name=label, loader=loader_settings(**loader), decode=decode, test_fraction=test_fraction,
                            task=task)
    train_part, val_part, test_part = carve_splits(train, val, test, val_fraction, test_fraction, val_split_seed)
    encode: Callable[[Any], Any] | None = None
    vocab_size = None
    if role == "text":
        texts = [str(text) for text in train.table.select(train_part.indices)[roles["text"]]]
        vocabulary = build_vocabulary(texts, min_freq, max_vocab_size)
        encode, vocab_size = TextEncoder(vocabulary, max_length), len(vocabulary)
        train_part, val_part, test_part = (TransformedSubset(part.base, part.indices, encode)
                                           for part in (train_part, val_part, test_part))
    settings = loader_settings(**loader, default_collate_fn=pad_collate if role == "text" else None)
    sample, _ = test_part[0]
    return DataSplits(train=train_part, val=val_part, test=test_part, num_classes=len(class_names) or 1,
                      input_shape=(max_length,) if role == "text" else tuple(sample.shape), loader=settings,
                      class_names=class_names, task=task, name=label, eval_transform=encode, vocab_size=vocab_size)

