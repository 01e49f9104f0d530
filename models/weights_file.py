"""Pretrained weights from a local file, for the torchvision models (offline clusters have no downloads)."""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decltrain.trainer.errors import UserError

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def is_weights_file(weights: str) -> bool:
    """Whether `model.weights` names a file rather than a torchvision weights name (`DEFAULT`)."""
    return Path(weights).suffix in WEIGHT_FILE_SUFFIXES or "/" in weights or Path(weights).exists()


def load_weights_file(net: nn.Module, path: Path, heads: Sequence[str], ignored: Sequence[str] = ()) -> None:
    """Loads a state_dict (or this project's checkpoint) into `net`.

    Weights under a `heads` prefix whose shape differs (another number of classes) are skipped
    and keep their fresh values; weights under an `ignored` prefix (e.g. an auxiliary head the
    model was built without) are left out either way.
    """
    if not path.is_file():
        raise UserError(f"model.weights file {path} does not exist; give the path of a saved state_dict "
                        "(torch.save(model.state_dict(), path)) or null for random weights")
    try:
        state = _read_state(path)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"model.weights file {path} is not a readable weights file ({type(err).__name__}); "
                        "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # one of our checkpoints
        state = {key.removeprefix("net."): value for key, value in state["model"].items()}
    own = net.state_dict()

    def in_head(key: str) -> bool:
        return any(key.startswith(head + ".") for head in heads)

    fitting = {key: value for key, value in state.items()
               if not any(key.startswith(prefix + ".") for prefix in ignored)
               and not (in_head(key) and key in own and own[key].shape != value.shape)}
    try:
        missing, unexpected = net.load_state_dict(fitting, strict=False)
    except RuntimeError as err:  # a weight of another shape (a first layer for other channels)
        raise UserError(f"model.weights file {path} does not fit {type(net).__name__}: "
                        f"{str(err).strip().splitlines()[-1].strip()}") from None
    missing = [key for key in missing if not in_head(key)]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UserError(f"model.weights file {path} does not fit {type(net).__name__}: {len(missing)} weights "
                        f"missing, {len(unexpected)} unexpected (e.g. {example}); was it saved from this model?")


def _read_state(path: Path) -> Any:
    """A state_dict file: torch's format, or safetensors (what timm's pretrained weights come as)."""
    if path.suffix != ".safetensors":
        return torch.load(path, map_location="cpu", weights_only=True)
    from safetensors import SafetensorError  # installed with timm (the `timm` extra)
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise OSError(str(err)) from None
