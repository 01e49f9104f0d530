"""`hydra/launcher=parallel`: the jobs of a sweep, `n_jobs` at a time on this machine, each on its own devices.

Built on Python's `concurrent.futures.ProcessPoolExecutor` rather than Hydra's joblib or Ray
launchers: each of the pool's `n_jobs` worker processes takes one slot when it starts (its own GPUs
through `CUDA_VISIBLE_DEVICES`, or on a CPU machine its share of the cores through the process's CPU
affinity and `OMP_NUM_THREADS`) and keeps it for every job it runs, so two running jobs never
share a device. Joblib's workers have no such per-worker start-up hook, Ray starts a cluster of
its own for each sweep, and a process pool needs no extra package. Jobs run as Hydra's basic
launcher runs them (`run_job`, in the job's own folder), so the sweep summary, a failed job that
does not end the sweep, and the Optuna search (which launches `n_jobs` trials at a time) keep
their behaviour. Ctrl-C reaches every running job, which stops at its step boundary and writes
its checkpoint; the sweep then ends as a sequential one does. For several machines the SLURM
launcher stays the way.

No `from __future__ import annotations`: Hydra loads plugin modules outside `sys.modules`, where
dataclasses cannot resolve string annotations.
"""
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cloudpickle
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.decltrain.parallel_launcher.ParallelLauncher"
    n_jobs: int = 2  # jobs running at once
    # GPUs each job gets (CUDA_VISIBLE_DEVICES); on a machine without GPUs the cores are shared out instead
    gpus_per_job: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="decltrain_parallel", node=ParallelLauncherConf,
                             provider="decltrain")


def slots(n_jobs: int, gpus_per_job: int, gpus: int, cores: list[int]) -> list[dict[str, Any]]:
    """What each of `n_jobs` workers gets: its GPUs on a GPU machine, else its share of `cores`."""
    if gpus:
        if n_jobs * gpus_per_job > gpus:
            raise UserError(f"hydra.launcher.n_jobs={n_jobs} jobs of {gpus_per_job} GPUs need {n_jobs * gpus_per_job} "
                            f"GPUs, this machine has {gpus}; lower hydra.launcher.n_jobs")
        return [{"gpus": list(range(slot * gpus_per_job, (slot + 1) * gpus_per_job))} for slot in range(n_jobs)]
    share = max(1, len(cores) // n_jobs)
    return [{"cores": [cores[(slot * share + i) % len(cores)] for i in range(share)]} for slot in range(n_jobs)]


def _take_slot(free: "multiprocessing.Queue[dict[str, Any]]") -> None:
    """A pool worker's start: it takes a slot for good, before anything imports torch."""
    slot = free.get()
    if "gpus" in slot:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot["gpus"]))
    else:
        os.sched_setaffinity(0, slot["cores"])
        os.environ["OMP_NUM_THREADS"] = str(len(slot["cores"]))
    # An idle worker ignores Ctrl-C (the pool would break); a running job installs its own handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(job: bytes) -> bytes:
    """One job in a pool worker, as Hydra's basic launcher runs it in its own process.

    `job` is (Hydra's singletons, its context, the task function, the sweep's config, the job's
    overrides and number), pickled with cloudpickle as Hydra's joblib and submitit launchers send
    them: the task function is `@hydra.main`'s wrapped function and OmegaConf's resolvers are
    closures. The worker composes the job's config itself, as Hydra's joblib launcher does, so the
    jobs' compositions run side by side rather than one after another before the first job starts.
    The job's return goes back the same way (its config holds classes of Hydra plugins that Hydra
    loaded twice).
    """
    singleton_state, hydra_context, task_function, sweep_config, overrides, number = cloudpickle.loads(job)
    Singleton.set_state(singleton_state)
    setup_globals()
    config = hydra_context.config_loader.load_sweep_config(sweep_config, overrides)
    with open_dict(config):
        config.hydra.job.id = number
        config.hydra.job.num = number
    return cloudpickle.dumps(run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                                     job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))


class ParallelLauncher(Launcher):
    def __init__(self, n_jobs: int = 2, gpus_per_job: int = 1) -> None:
        if n_jobs < 1 or gpus_per_job < 1:
            raise UserError(f"hydra.launcher.n_jobs={n_jobs} and hydra.launcher.gpus_per_job={gpus_per_job} "
                            "must be at least 1")
        self.n_jobs = n_jobs
        self.gpus_per_job = gpus_per_job
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        # Started by the first launch and kept for the next ones (the Optuna search launches a batch of
        # trials at a time): its workers import torch once, not once per batch. Python shuts it down at exit.
        self.pool: ProcessPoolExecutor | None = None
        self.workers = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None  # setup()
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if self.pool is None:
            self.workers = min(self.n_jobs, len(job_overrides))
            self.pool = _pool(self.workers, self.gpus_per_job)
        log.info("Launching %d jobs, %d at a time", len(job_overrides), min(self.workers, len(job_overrides)))
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        jobs = [cloudpickle.dumps((state, self.hydra_context, self.task_function, self.config, list(overrides), idx))
                for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
        with _first_ctrl_c_left_to_the_jobs():
            try:
                returns = _run_all(self.pool, jobs, self.workers)
            except BaseException:  # a stop, or a worker that died: the sweep ends, and its pool with it
                self.pool.shutdown(cancel_futures=True)
                self.pool = None
                raise
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns


def _pool(workers: int, gpus_per_job: int) -> ProcessPoolExecutor:
    """`workers` processes, each of which takes its slot (GPUs or cores) when it starts."""
    import torch  # only to count the GPUs (no CUDA initialisation)

    context = multiprocessing.get_context("spawn")
    free = context.Queue()
    for slot in slots(workers, gpus_per_job, torch.cuda.device_count(), sorted(os.sched_getaffinity(0))):
        free.put(slot)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_take_slot, initargs=(free,))


def _run_all(pool: ProcessPoolExecutor, jobs: list[bytes], workers: int) -> list[JobReturn]:
    """The jobs' returns, in order. A job is handed to the pool only when a worker is free (the pool
    would otherwise queue some ahead), so a job that ended its process (a stop signal: SystemExit)
    ends the sweep once the running jobs finished, with no job started after it, as in a sequential sweep."""
    running: dict["Future[bytes]", int] = {}
    results: dict[int, JobReturn] = {}
    stop: BaseException | None = None
    upcoming = iter(range(len(jobs)))
    while True:
        while stop is None and len(running) < workers and (index := next(upcoming, None)) is not None:
            running[pool.submit(_run, jobs[index])] = index
        if not running:
            break
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            index = running.pop(future)
            try:
                results[index] = cloudpickle.loads(future.result())
            except SystemExit as exit_request:
                stop = stop or exit_request
    if stop is not None:
        raise stop
    return [results[index] for index in range(len(jobs))]


class _first_ctrl_c_left_to_the_jobs:
    """While jobs run, Ctrl-C is theirs (each stops at a step boundary with its checkpoint); this
    process waits for them instead of dying first. A second Ctrl-C ends the jobs and the sweep."""

    def __enter__(self) -> None:
        self.previous: Callable[..., Any] | int | None = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_ctrl_c)
        self.pressed = 0

    def _on_ctrl_c(self, signum: int, frame: object) -> None:
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)
