"""What every console script shares: exit codes, the user's folder on `sys.path`, Hydra registrations.

Importing this module does nothing but define them (and imports no torch): each console script
calls what it needs when it starts, so importing `evaluate` does not register `train`'s schema.
"""
from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT_CODE = 2
# Hydra flags followed by a separate value token (`-cn NAME`, `-sc install=bash`, `--cfg job`).
FLAGS_WITH_VALUE = frozenset({"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                              "-sc", "--shell-completion", "--info", "--experimental-rerun",
                              "-c", "--cfg", "-p", "--package"})


def importable_working_directory() -> None:
    """Puts the working directory first on `sys.path`, as `python -m` does.

    A console script gets its own folder there instead, so without this `_target_: my_models.Net`
    would not find the user's `my_models.py`. The toolkit's own modules live under `decltrain.`,
    so the user's `models/` or `configs/` folders shadow none of them.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def sleeping_openmp_threads() -> None:
    """OpenMP threads that finished their share sleep instead of spinning (unless the user chose otherwise).

    OpenMP reads this once, when torch loads, so it must be set before anything imports torch.
    With spinning threads a CPU run slows several-fold whenever other processes share the cores;
    sleeping costs microseconds per parallel region on an idle machine.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Imports torch and the rest of a run with the cyclic garbage collector paused, then freezes what they made.

    Importing torch, torchvision and torchmetrics creates about 550,000 objects that live as long as
    the process. CPython (3.11) re-examines all of them in each full collection, and starts one
    whenever that heap has grown by a quarter: about 0.4 s of every start (measured with
    `gc.callbacks`) spent finding the 12,000 objects (under 2 % of the small blocks Python allocated) that the imports
    leave unreachable. `gc.freeze()` moves what exists at the end of the block into a permanent
    generation that collections skip, so the run's own garbage is collected as before, without
    re-scanning the libraries; those few unreachable import leftovers stay, once. It also keeps
    forked DataLoader workers from touching (and so copying) the parent's pages.

    Only where torch is not imported yet, so once per process: the later jobs of an in-process
    sweep must not freeze the garbage of the jobs before them.
    """
    if "torch" in sys.modules:
        yield
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def register_train_config() -> None:
    """What composing configs/train.yaml needs: its typed schema, the `run_dir` resolver of
    `hydra.run.dir`, and the toolkit's sweepers and launchers (also from an editable install)."""
    from omegaconf import OmegaConf

    import hydra_plugins.decltrain
    from decltrain.trainer.commands import schema
    from decltrain.trainer.runs import resume

    schema.register()
    hydra_plugins.decltrain.register()
    OmegaConf.register_new_resolver("run_dir", resume.run_dir, replace=True)
