"""The toolkit's Hydra plugins: the sweeper of `train -m`, the Optuna sweeper, the parallel and the submitit launchers.

Hydra instantiates sweepers and launchers only from the `hydra_plugins` namespace package, so this
folder installs as `hydra_plugins.decltrain` (pyproject.toml's package-dir mapping).
"""
from __future__ import annotations


def register() -> None:
    """Registers these plugins with Hydra by class (Hydra's documented `Plugins.register`).

    Hydra discovers plugins by listing the folders of `hydra_plugins`; an editable install
    (`pip install -e .`) maps this package through an import hook, which that listing does not see.
    """
    from hydra.core.plugins import Plugins

    # Hydra's first scan re-executes the plugin modules it lists (basic_sweeper among them),
    # rebinding their classes: ours must subclass the classes of after the scan.
    plugins = Plugins.instance()
    from hydra_plugins.decltrain import optuna_sweeper, parallel_launcher, sweeper

    plugins.register(sweeper.Sweeper)
    plugins.register(parallel_launcher.ParallelLauncher)
    plugins.register(optuna_sweeper.OptunaSweeper)  # imports optuna only when a search runs
    try:
        from hydra_plugins.decltrain import submitit_launcher
    except ImportError:  # the slurm extra (hydra-submitit-launcher) is not installed
        return
    for launcher in (submitit_launcher.SlurmLauncher, submitit_launcher.LocalLauncher):
        plugins.register(launcher)
