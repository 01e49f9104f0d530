"""Hugging Face `datasets` tables as (input, target) samples, and loading them with one-line errors."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from decltrain.trainer.errors import UserError

# Which columns feed the model (exactly one of these roles) and which is the target.
INPUT_ROLES = ("image", "features", "text")
TARGET_ROLE = "label"
INSTALL = "pip install -e '.[hf]' (the `hf` extra: Hugging Face datasets)"


def hf_datasets() -> Any:
    """Hugging Face's `datasets` package (never the toolkit's `decltrain.datasets`)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"dataset=hf needs Hugging Face datasets: {INSTALL}") from None
    return datasets


def load_splits(path: str, *, name: str | None, data_files: Any, data_dir: str | None, revision: str | None,
                cache_dir: str | None, splits: Mapping[str, str | None], streaming: bool = False) -> dict[str, Any]:
    """The dataset's tables (or streams) for train, val and test (None for a val/test split the data lacks)."""
    library = hf_datasets()
    files = f" (data_files={data_files})" if data_files else ""
    try:
        loaded = library.load_dataset(path, name, data_files=_plain(data_files), data_dir=data_dir,
                                      revision=revision, cache_dir=cache_dir, streaming=streaming)
    except Exception as err:  # the library raises FileNotFoundError, ConnectionError, ValueError, ... variants
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"Hugging Face dataset {path!r}{files} could not be loaded: {reason}; check "
                        "dataset.path, dataset.name and dataset.data_files (offline, only local files load)") from None
    found = {split: loaded[source] if source in loaded else None for split, source in splits.items()}
    if found["train"] is None:
        raise UserError(f"Hugging Face dataset {path!r}{files} has no split {splits['train']!r} (its splits: "
                        f"{', '.join(loaded)}); set dataset.splits.train")
    return found


def _plain(value: Any) -> Any:
    """Hydra's ListConfig/DictConfig as the list/dict `load_dataset` checks for."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(item) for item in value]
    return value


def check_columns(table: Any, roles: Mapping[str, Any], path: str) -> None:
    """One input role and `label`, each naming columns the table has."""
    inputs = [role for role in INPUT_ROLES if role in roles]
    unknown = [role for role in roles if role not in (*INPUT_ROLES, TARGET_ROLE)]
    if len(inputs) != 1 or TARGET_ROLE not in roles or unknown:
        raise UserError(f"dataset.columns={dict(roles)} must name one input ({', '.join(INPUT_ROLES)}) and the "
                        f"target ({TARGET_ROLE}), e.g. dataset.columns={{image: img, label: label}}")
    if table.column_names is None:  # a stream whose columns its files do not declare: rows tell later
        return
    missing = [column for column in _columns(roles) if column not in table.column_names]
    if missing:
        raise UserError(f"Hugging Face dataset {path!r} has no column {', '.join(map(repr, missing))} (its "
                        f"columns: {', '.join(table.column_names)}); set dataset.columns")


def _columns(roles: Mapping[str, Any]) -> list[str]:
    return [str(column) for value in roles.values()
            for column in (value if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig"
                           else [value])]


def label_kind(table: Any, column: str) -> tuple[str, list[str]]:
    """The task (`multiclass` or `regression`) and the class names of the label column.

    A `ClassLabel` feature gives its names; integer labels 0..k-1 get names "0".."k-1"; floats
    make a regression.
    """
    library = hf_datasets()
    feature = table.features[column]
    if isinstance(feature, library.ClassLabel):
        return "multiclass", [str(name) for name in feature.names]
    dtype = getattr(feature, "dtype", "")
    if dtype.startswith(("int", "uint", "bool")):
        return "multiclass", [str(i) for i in range(int(max(table[column])) + 1)]
    if dtype.startswith("float"):
        return "regression", []
    raise UserError(f"label column {column!r} holds {feature}; a label is a ClassLabel, an integer or a float column")


class RowSample:
    """A row (a dict by column) as (input, target): a PIL image, a float tensor of features, or a string.

    An image may come decoded (a map-style table) or as the stored {"bytes", "path"} (a stream
    read with decoding off, so rows another rank or worker takes are never decoded here).
    """

    def __init__(self, roles: Mapping[str, Any], image_mode: str | None = None) -> None:
        (self.role,) = [role for role in INPUT_ROLES if role in roles]
        self.inputs = _columns({self.role: roles[self.role]})
        self.label = str(roles[TARGET_ROLE])
        self.image_mode = image_mode

    def __call__(self, row: Mapping[str, Any]) -> tuple[Any, Any]:
        if self.role == "features":
            return torch.tensor([float(row[column]) for column in self.inputs]), row[self.label]
        value = row[self.inputs[0]]
        return (self.image(value) if self.role == "image" else value), row[self.label]

    def image(self, value: Any) -> Image.Image:
        if isinstance(value, Mapping):
            value = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        return value.convert(self.image_mode) if self.image_mode and value.mode != self.image_mode else value


class HFRows(Dataset):
    """Row `i` of a table as (input, target) (see `RowSample`); only the named columns are read.

    An image is decoded here, in the loader worker that asks.
    """

    def __init__(self, table: Any, roles: Mapping[str, Any], image_mode: str | None = None, where: str = "") -> None:
        self.where = where  # the dataset, as the user named it
        self.sample = RowSample(roles, image_mode)
        self.table = table.select_columns([*self.sample.inputs, self.sample.label])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.sample(self.table[int(index)])

    # What the image cache (datasets/image_cache.py `ImageSource`) reads.
    @property
    def name(self) -> str:
        return f"hf-{self.key[:8]}"

    @property
    def key(self) -> str:
        """The Arrow files behind the table (their names hold the library's fingerprint), sizes and times."""
        digest = hashlib.sha256(f"{self.sample.inputs} {self.sample.image_mode} {len(self)}".encode())
        for entry in self.table.cache_files:
            stat = os.stat(entry["filename"])
            digest.update(f"{entry['filename']}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    @property
    def targets(self) -> list[int]:
        return [int(label) for label in self.table[self.sample.label]]

    def image(self, row: int) -> Image.Image:
        return self.sample.image(self.table[int(row)][self.sample.inputs[0]])

    def describe(self, row: int) -> str:
        return f"row {row}"
