"""How a training job finds the Optuna trial it runs for.

The search (hydra_plugins/decltrain/optuna_sweeper.py) sets four environment variables for each
job through `hydra.job.env_set`, so they reach the job whatever launcher runs it and show in the
job's `.hydra/hydra.yaml`. No torch or Optuna import at module level: the sweeper plugin imports
this module on every `train` start.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

STORAGE = "DECLTRAIN_OPTUNA_STORAGE"
STUDY = "DECLTRAIN_OPTUNA_STUDY"
TRIAL_ID = "DECLTRAIN_OPTUNA_TRIAL_ID"
# The pruner's config as JSON: a study loaded from storage gets Optuna's default pruner, not the
# search's, so the job builds the search's own.
PRUNER = "DECLTRAIN_OPTUNA_PRUNER"
# The user attribute a pruned job leaves on its trial; the sweeper then records it as pruned.
PRUNED_AT = "pruned_at_epoch"
SQLITE_WAIT_S = 60
_CREATE_ATTEMPTS = 5


def environment(storage: str, study_name: str, trial_id: int, pruner: Mapping[Any, Any]) -> dict[str, str]:
    return {STORAGE: storage, STUDY: study_name, TRIAL_ID: str(trial_id), PRUNER: json.dumps(pruner)}


def current() -> optuna.Trial | None:
    """The `optuna.Trial` this job runs for, or None outside a search."""
    if TRIAL_ID not in os.environ:
        return None
    import optuna
    from hydra.utils import instantiate

    study = optuna.load_study(study_name=os.environ[STUDY], storage=storage(os.environ[STORAGE]),
                              pruner=instantiate(json.loads(os.environ[PRUNER])))
    return optuna.trial.Trial(study, int(os.environ[TRIAL_ID]))


def storage(url: str, **heartbeat: Any) -> optuna.storages.BaseStorage:
    """The study's database at `url`; several processes share an SQLite file, so each waits for the
    others' writes (up to a minute) instead of failing on a locked database. `heartbeat`: RDBStorage's
    heartbeat_interval, grace_period and heartbeat_stale_trial_callback."""
    import optuna
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": SQLITE_WAIT_S}} if url.startswith("sqlite") else None
    for _ in range(_CREATE_ATTEMPTS - 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except sqlalchemy.exc.SQLAlchemyError:  # workers started together on a new database: another makes its tables
            time.sleep(1)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)
