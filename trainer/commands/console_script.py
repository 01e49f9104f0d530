"""What every console script shares: exit codes, the user's folder on `sys.path`, Hydra registrations.

Importing this module does nothing but define them (and imports no torch): each console script
calls what it needs when it starts, so importing `evaluate` does not register `train`'s schema.
"""
from __future__ import annotations

import os
import sys

USER_ERROR_EXIT_CODE = 2


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
