"""Choosing the device and making runs repeatable."""
from __future__ import annotations

import os
import random
from typing import Any, cast

import numpy as np
import torch

from decltrain.trainer.errors import UserError


def resolve_device(accelerator: str) -> torch.device:
    """`auto` takes CUDA when a device is visible; asking for CUDA without one is an error."""
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.accelerator=cuda but no CUDA device is visible; "
                        "use trainer.accelerator=auto or trainer.accelerator=cpu")
    return torch.device(accelerator)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Deterministic kernels when asked; cuDNN autotuning only when asked (it is non-deterministic)."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic


NO_DETERMINISTIC_KERNEL = " does not have a deterministic implementation"


def explain_nondeterministic(error: BaseException) -> UserError | None:
    """torch's refusal of an op under `trainer.deterministic=true` (e.g. bilinear upsampling's backward
    on CUDA, at the end of torchvision's segmentation models) as one line naming the op and the fix;
    None for any other error."""
    text = str(error)
    if not isinstance(error, RuntimeError) or NO_DETERMINISTIC_KERNEL not in text:
        return None
    op = text.split(NO_DETERMINISTIC_KERNEL)[0].strip()
    return UserError(f"trainer.deterministic=true, but the model uses {op}, which has no deterministic "
                     "implementation on this device; set trainer.deterministic=false")


def rng_state() -> dict:
    """Every random generator the run draws from, as plain tensors and containers."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    state = {
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    # This process's own CUDA device only: under DDP each rank draws on its device alone, and a
    # checkpoint must load where fewer devices are visible. A process that never touched CUDA
    # has no stream there to continue (and asking would start a CUDA context).
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def load_rng_state(state: dict) -> None:
    """Restores what `rng_state` saved; a CUDA state is skipped where no CUDA device is visible."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # checkpoints before per-process states: every visible device's
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)  # onto this process's current device
