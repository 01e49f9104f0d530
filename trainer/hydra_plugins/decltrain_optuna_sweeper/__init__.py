"""A Hydra sweeper that runs an Optuna study with pruning (`hydra/sweeper=decltrain_optuna`).

hydra-optuna-sweeper (1.3.0, the latest) pins optuna<3 and runs every trial to its end; this
one is written on Optuna's ask-and-tell API of current Optuna (4, 5) and lets each trial report
after every validation (callbacks/optuna_pruning.py) so the pruner stops the bad ones early.
Installed as `hydra_plugins.decltrain_optuna_sweeper`, where Hydra looks for plugins.
"""
