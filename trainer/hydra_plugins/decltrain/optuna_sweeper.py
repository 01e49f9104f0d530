"""The sweeper: one Optuna trial per job, asked for, launched and told its result in turn; under
`hydra/launcher=parallel`, `n_jobs` trials at a time, asked for together, launched as one batch
(the launcher runs them at once) and each told its result.

The study lives in an SQLite file in the sweep folder (`optuna.db`), so running the same command
again with `hydra.sweep.dir=<that folder>` continues an interrupted search: a trial the
interruption left running is recorded as failed and its parameters run again. Several workers
(the same command in several shells or jobs, with `hydra.sweeper.storage` one shared database)
search one study together: each running trial has a heartbeat, and a trial whose worker is gone
is failed and run again by another (docs/search.md). Each job reports
its monitored metric after every validation (callbacks/optuna_pruning.py); a job the pruner
stopped is told to the study as pruned. At the end the best trial is printed and written to
`<sweep folder>/optuna_results.yaml` with one record per trial (`Trial records` below).

No `from __future__ import annotations`: Hydra loads plugin modules outside `sys.modules`,
where dataclasses cannot resolve string annotations.
"""

import contextlib
import dataclasses
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer.runs import optuna_trial, sweep_summary
from decltrain.trainer.commands.launch import quote_override
from hydra_plugins.decltrain import search_space

log = logging.getLogger("decltrain")
STUDY_FILE = "optuna.db"
RESULTS_FILE = "optuna_results.yaml"
_RUN_DIR = "run_dir"  # trial user attribute: the job's run folder
_INTERRUPTED = "interrupted_trials"  # study user attribute: trials a stopped search left running
_WAIT_S = 2  # how often a worker with nothing left to ask looks at the other workers' trials
_DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.decltrain.optuna_sweeper.OptunaSweeper"
    n_trials: int = 20              # trials that ran to an end (completed, pruned or failed)
    direction: str = "maximize"     # minimize | maximize (min | max: a callback's mode)
    study_name: str = "search"
    storage: Optional[str] = None   # null: sqlite:///<sweep folder>/optuna.db
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})
    params: dict[str, str] = field(default_factory=dict)  # key: Hydra sweep syntax (search_space.py)
    # Seconds between the heartbeats of a running trial: another worker on the same study fails and
    # re-runs a trial whose heartbeat is older than grace_period (null: twice the interval).
    heartbeat_interval: int = 60
    grace_period: Optional[int] = None


ConfigStore.instance().store(group="hydra/sweeper", name="decltrain_optuna", node=OptunaSweeperConf,
                             provider="decltrain")


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials: int, direction: str, study_name: str, storage: Optional[str], sampler: Any,
                 pruner: Any, params: dict[str, str], heartbeat_interval: int = 60,
                 grace_period: Optional[int] = None) -> None:
        if direction not in _DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use minimize or maximize")
        self.n_trials = n_trials
        self.direction = _DIRECTIONS[direction]
        self.study_name = study_name
        self.storage = storage
        # Hydra instantiated them already (`_target_` nodes inside the sweeper's config).
        self.sampler = sampler
        self.pruner = pruner
        self.params = dict(params or {})
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        # One per trial run by this call, for the sweep summary (trainer/runs/sweep_summary.py).
        self.records: list[sweep_summary.JobRecord] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[sweep_summary.JobRecord]:
        import optuna
        from optuna.trial import TrialState

        assert self.config is not None and self.hydra_context is not None and self.launcher is not None  # setup()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = search_space.split([f"{key}={value}" for key, value in self.params.items()] + arguments,
                                          parser)
        storage = self.storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"
        # Heartbeats are "experimental" and, Optuna warns, meant for Study.optimize: this loop beats itself.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        database = optuna_trial.storage(storage, heartbeat_interval=self.heartbeat_interval,
                                        grace_period=self.grace_period, **_retried_when_stale())
        study = optuna.create_study(study_name=self.study_name, storage=database, direction=self.direction,
                                    sampler=self.sampler, pruner=self.pruner, load_if_exists=True)
        pruner_config = OmegaConf.to_container(self.config.hydra.sweeper.pruner, resolve=True)
        assert isinstance(pruner_config, dict)  # a `_target_` node
        log.info("Optuna study %r in %s: %d of %d trials done; searching %s", self.study_name, storage,
                 _trials_done(study), self.n_trials, ", ".join(space) or "nothing")
        while True:
            optuna.storages.fail_stale_trials(study)  # trials of a worker gone: failed, their parameters queued again
            done, running = _trials_done(study), len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if done >= self.n_trials:
                break
            if done + running >= self.n_trials:  # the last trials run in other workers: wait for them
                time.sleep(min(self.heartbeat_interval, _WAIT_S))
                continue
            trials = [study.ask(space) for _ in range(min(_trials_at_once(self.launcher), self.n_trials - done - running))]
            chosen = {trial.number: [search_space.as_override(key, value) for key, value in trial.params.items()]
                      for trial in trials}
            env = {trial.number: optuna_trial.environment(storage, self.study_name, trial._trial_id, pruner_config)
                   for trial in trials}
            pending = list(trials)  # asked and not yet told: given back if the search stops
            # A failed job fails its trial (train raises in a sweep: Hydra records it); a stop
            # signal (exit 128 + signal) ends the search here, its trials left running to run again.
            try:
                with _beating(database, [trial._trial_id for trial in trials], self.heartbeat_interval), \
                        _given_back_if_stopped(study, pending):
                    for group in _numbered_runs(trials):
                        batch = [[*fixed, *chosen[trial.number], *_env_set(env[trial.number])] for trial in group]
                        self.validate_batch_is_legal(batch)
                        for trial, result in zip(group, self.launcher.launch(batch, initial_job_idx=group[0].number)):
                            self._told(study, trial, chosen[trial.number], result)
                            pending.remove(trial)
            except (SystemExit, KeyboardInterrupt):  # the summary of the trials so far, the stopped ones marked
                stopped = sweep_summary.interrupted(
                    sweep_dir, [(trial.number, [*fixed, *chosen[trial.number]]) for trial in pending])
                sweep_summary.report([*self.records, *(dataclasses.replace(r, overrides=chosen[r.number]) for r in stopped)],
                                     sweep_dir)
                raise
        self._report(study, sweep_dir)
        sweep_summary.report(self.records, sweep_dir)
        return self.records

    def _told(self, study: Any, trial: Any, chosen: list[str], result: JobReturn) -> None:
        """Tells the study how the trial's job ended and keeps its record for the sweep summary."""
        record = dataclasses.replace(sweep_summary.JobRecord.of(result), overrides=chosen)
        trial.set_user_attr(_RUN_DIR, record.folder)  # also for trials of an earlier, continued search
        state, value = _tell(study, trial, result)
        self.records.append(dataclasses.replace(record, status=_SUMMARY_STATUS[state], value=value))
        log.info("trial %d %s%s", trial.number, state, f": {value:.6g}" if value is not None else "")

    def _report(self, study: Any, sweep_dir: Path) -> None:
        """Prints the best trial and writes it, with the records of every trial, to the sweep folder."""
        from optuna.trial import TrialState

        finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
        interrupted = set(study.user_attrs.get(_INTERRUPTED, []))
        results: dict[str, Any] = {"study": self.study_name, "direction": self.direction,
                                   "trials": [_record(t) for t in study.trials
                                              if t.number not in interrupted]}
        if finished:
            best = study.best_trial
            results["best"] = {"number": best.number, "value": best.value, "params": best.params,
                               "run_dir": best.user_attrs.get(_RUN_DIR)}
            log.info("best trial %d: value %.6g with %s (run folder %s)", best.number, best.value,
                     " ".join(search_space.as_override(k, v) for k, v in best.params.items()),
                     results["best"]["run_dir"])
        else:
            log.warning("no trial completed: there is no best value")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        log.info("search results: %s", sweep_dir / RESULTS_FILE)


def _trials_done(study: Any) -> int:
    """Trials that ran to an end; a trial interrupted (by a stop, or its worker's end) and run again does not count."""
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.trials if t.state in ended and t.number not in _interrupted(study))


def _interrupted(study: Any) -> set[int]:
    """Trials whose parameters run again: stopped in this worker, or failed for a stale heartbeat."""
    retried = {number for t in study.get_trials(deepcopy=False) for number in t.system_attrs.get("retry_history", [])}
    return set(study.user_attrs.get(_INTERRUPTED, [])) | retried


def _trials_at_once(launcher: Any) -> int:
    """How many trials the search asks for and launches together: `hydra.launcher.n_jobs` under
    `hydra/launcher=parallel`, else one (each launch of the basic launcher runs its jobs in turn)."""
    return max(1, int(getattr(launcher, "n_jobs", 1)))


def _env_set(env: dict[str, str]) -> list[str]:
    """Overrides that set the job's environment variables (Hydra's `hydra.job.env_set`)."""
    return [f"+hydra.job.env_set.{name}={quote_override(value)}" for name, value in env.items()]


def _numbered_runs(trials: list[Any]) -> list[list[Any]]:
    """The trials in runs of consecutive numbers. A launch numbers its jobs (and their run folders,
    `<number>_<experiment>`) from its first job on, so each launch takes one run; numbers have a gap
    only where another worker on the same study asked for a trial in between."""
    runs: list[list[Any]] = []
    for trial in trials:
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def _retried_when_stale() -> dict[str, Any]:
    """RDBStorage's argument that queues a stale trial's parameters again (its name changed in Optuna 5)."""
    import optuna

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:
        return {"heartbeat_stale_trial_callback": retry()}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback()}


@contextlib.contextmanager
def _beating(storage: Any, trial_ids: list[int], interval: int) -> Iterator[None]:
    """Records the trials' heartbeats every `interval` seconds while their jobs run, so other workers on the
    study leave them alone; a trial whose heartbeat stops (its worker was killed) is failed and run again."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _given_back_if_stopped(study: Any, trials: list[Any]) -> Iterator[None]:
    """A search stopped during its trials (Ctrl-C, SIGTERM: the jobs exit) fails those in `trials`
    (the list as it is then: the trials not yet told) and queues their parameters again, so the
    same command continues the search with them."""
    from optuna.trial import TrialState

    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        study.set_user_attr(_INTERRUPTED, [*study.user_attrs.get(_INTERRUPTED, []), *(t.number for t in trials)])
        for trial in trials:
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, skip_if_exists=False)
            log.warning("trial %d was interrupted; a continued search runs its parameters again", trial.number)
        raise


def _tell(study: Any, trial: Any, result: JobReturn) -> tuple[str, float | None]:
    """Tells the study how the trial ended: pruned (its job said so), completed with the job's
    value (the monitored validation metric), or failed."""
    from optuna.trial import TrialState

    # Read afresh: the job wrote to the study through its own connection.
    now = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if now.user_attrs.get(optuna_trial.PRUNED_AT) is not None:
        frozen = study.tell(trial, state=TrialState.PRUNED)
        return "pruned", frozen.value
    value = result.return_value if result.status == JobStatus.COMPLETED else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        if result.status == JobStatus.FAILED:
            log.error("trial %d failed: %s", trial.number, result._return_value)
        study.tell(trial, state=TrialState.FAIL)
        return "failed", None
    study.tell(trial, float(value))
    return "completed", float(value)


_SUMMARY_STATUS = {"completed": "done", "pruned": "pruned", "failed": "failed"}


def _record(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            "params": trial.params, "intermediate": dict(trial.intermediate_values),
            "run_dir": trial.user_attrs.get(_RUN_DIR)}
