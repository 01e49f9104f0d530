"""A decode-once cache for image folders (FFCV's idea inside our config).

The first run decodes every image of a folder once into one uint8 array file
`<cache_dir>/<folder>-<size>-<key>.npy` of shape (N, size, size, 3), pixels last as in the
decoded image: each image read as RGB like `ImageFolder` does, then exactly the PIL path's first
steps, `ToImage`, `Resize(size)` (shorter side, antialiased) and `CenterCrop(size)`. Decoding runs
in `workers` DataLoader processes behind a progress bar. The key hashes the file list with every
file's byte size and mtime, the stored size and the format version: an added, removed or changed
file gives a new key, hence a rebuild, and the stale array of the same folder is deleted once the
new one is complete.

Later epochs and runs map the array (never read into RAM as a whole) and gather batches by index:
`CachedImages` is an `InMemory` dataset, so the Trainer batches it like the in-memory path and
the configured transforms run per batch on the training device, starting from channels-last
pixels (the layout torch's vectorized uint8 resize wants). Training on the CPU with
`num_workers`, the workers gather and transform whole batches (trainer/engine/data.py), each
seeded by its position in the epoch; otherwise the training process does, drawing from the
global RNG. Either way the draws are those checkpoints restore, so resume stays exact.

An unreadable image is named in a warning and left out; the names are stored beside the array,
so every later run warns again until the file is fixed or removed (which changes the key).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as TF

from decltrain.datasets.in_memory import InMemory
from decltrain.trainer.console import console
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")

# Bump when the stored pixels would change for the same files (another resize, another layout).
FORMAT_VERSION = 2
CHUNK = 64  # images per decoding batch: small enough for a smooth progress bar
# Shown at most this many unreadable files by name; the rest are counted.
NAMED = 5


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/decltrain/images`, else `~/.cache/decltrain/images`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "decltrain" / "images"


class CachedImages(InMemory):
    """Rows `rows` of the uint8 (N, H, W, C) array file `path`, as batches on the device `target`.

    The array stays on the host, memory-mapped by each process on first use (so a loader worker
    started by spawn maps the file instead of receiving a copy): `batch` gathers the rows there
    (from the page cache, no decoding), moves them to `target` and transforms them there.
    Indices therefore live on the CPU (`device`), whatever the training device; `to` only
    changes `target`.
    """

    batch_in_workers = True  # a batch's gather and augmentation outweigh a worker's round trip

    def __init__(self, path: Path, rows: torch.Tensor, targets: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 target: torch.device = torch.device("cpu")) -> None:
        super().__init__(rows, targets, transform)
        self.path = path
        self.target = target
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_array": None}

    def augmented_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        pixels = torch.from_numpy(self._array[self.inputs[indices].numpy()]).permute(0, 3, 1, 2)
        targets = self.targets[indices].to(self.target, non_blocking=True)
        return self.augment(pixels.to(self.target, non_blocking=True)), targets

    def subset(self, indices: Sequence[int],
               transform: Callable[[torch.Tensor], torch.Tensor] | None) -> CachedImages:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return CachedImages(self.path, self.inputs[index], self.targets[index], transform, self.target)

    def to(self, device: torch.device) -> CachedImages:
        return CachedImages(self.path, self.inputs, self.targets, self.transform, device)


class ImageSource(Protocol):
    """What the cache decodes: images by row with their labels, a stable `name` and a `key` that
    changes whenever an image would (the cache file is `<name>-<size>-<key>.npy`); `where` names
    the images for the user."""

    name: str
    where: str
    key: str
    targets: Sequence[int]

    def __len__(self) -> int: ...
    def image(self, row: int) -> Image.Image: ...
    def describe(self, row: int) -> str: ...


class FolderImages:
    """An `ImageFolder` as an `ImageSource`: its files, read as RGB as `ImageFolder` reads them."""

    def __init__(self, folder: ImageFolder) -> None:
        self.files = [Path(path) for path, _ in folder.samples]
        root = Path(folder.root).resolve()
        self.name = f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
        self.where = str(root)
        self.key = _content_key(Path(folder.root), self.files)
        self.targets = folder.targets

    def __len__(self) -> int:
        return len(self.files)

    def image(self, row: int) -> Image.Image:
        with Image.open(self.files[row]) as image:
            return image.convert("RGB")

    def describe(self, row: int) -> str:
        return str(self.files[row])


def cached_folder(folder: ImageFolder, size: int, cache_dir: Path, workers: int) -> CachedImages:
    """The images of `folder` from its cache in `cache_dir`, built first when missing or stale."""
    return cached_images(FolderImages(folder), size, cache_dir, workers)


def cached_images(source: ImageSource, size: int, cache_dir: Path, workers: int) -> CachedImages:
    """The images of `source` from its cache in `cache_dir`, built first when missing or stale."""
    stem = f"{source.name}-{size}"
    array_path = cache_dir / f"{stem}-{hashlib.sha256(f'{FORMAT_VERSION} {size} {source.key}'.encode()).hexdigest()[:16]}.npy"
    index_path = array_path.with_suffix(".json")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir / f"{stem}.lock"):  # concurrent runs and DDP ranks build it once
            if not index_path.is_file():
                _build(source, size, array_path, index_path, workers)
                for stale in cache_dir.glob(f"{stem}-*"):
                    if stale not in (array_path, index_path):
                        stale.unlink(missing_ok=True)
    except OSError as err:
        raise UserError(f"image cache {cache_dir}: {err.strerror or err}; set dataset.cache_dir to a writable "
                        "folder, or dataset.cache=false") from None
    unreadable: dict[str, str] = json.loads(index_path.read_text())["unreadable"]
    if unreadable:
        named = "; ".join(f"{path} ({error})" for path, error in list(unreadable.items())[:NAMED])
        more = f" and {len(unreadable) - NAMED} more" if len(unreadable) > NAMED else ""
        log.warning("skipping %d unreadable image(s) of %s: %s%s", len(unreadable), source.where, named, more)
    keep = [row for row in range(len(source)) if source.describe(row) not in unreadable]
    if not keep:
        raise UserError(f"images of {source.where}: none of its {len(source)} images could be read")
    # class indices (int64), or one 0/1 float per label for multi-label images (datasets/labelled_images.py)
    targets = torch.as_tensor([source.targets[row] for row in keep])
    return CachedImages(array_path, torch.as_tensor(keep), targets)


def _content_key(root: Path, files: list[Path]) -> str:
    """Names, byte sizes and mtimes of `files` (paths under `root`, as ImageFolder lists them)."""
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Decode(Dataset):
    """Image `i` of `source` as the stored uint8 (size, size, 3) tensor, and "" or why it is unreadable."""

    def __init__(self, source: ImageSource, size: int) -> None:
        self.source = source
        self.size = size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            image = self.source.image(index)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return torch.zeros(self.size, self.size, 3, dtype=torch.uint8), f"{type(err).__name__}: {err}"
        image = TF.center_crop(TF.resize(TF.to_image(image), [self.size], antialias=True), [self.size])
        return image.as_subclass(torch.Tensor).permute(1, 2, 0), ""


def _build(source: ImageSource, size: int, array_path: Path, index_path: Path, workers: int) -> None:
    """Decodes `source` into a temporary array, then renames it and writes the index (last: the marker)."""
    started = time.perf_counter()
    partial = array_path.with_name(f"{array_path.name}.{os.getpid()}.partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(source), size, size, 3))
    unreadable: dict[str, str] = {}
    loader = DataLoader(_Decode(source, size), batch_size=CHUNK, num_workers=workers)
    columns = (TextColumn("caching images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("decode", total=len(source))
            start = 0
            for images, errors in loader:
                array[start:start + len(images)] = images.numpy()
                unreadable.update({source.describe(start + i): error for i, error in enumerate(errors) if error})
                start += len(images)
                progress.advance(task, len(images))
        array.flush()
        del array
        os.replace(partial, array_path)
    finally:
        partial.unlink(missing_ok=True)
    index = index_path.with_name(f"{index_path.name}.{os.getpid()}.partial")
    index.write_text(json.dumps({"files": len(source), "size": size, "unreadable": unreadable}))
    os.replace(index, index_path)
    log.info("cached %d images (%d x %d) in %.1f s: %s", len(source), size, size, time.perf_counter() - started,
             array_path)
