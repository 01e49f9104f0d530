"""Starting the worker processes of a multi-process run, and keeping their run folder single.

Two ways in, one engine (torch elastic, what `torchrun` runs):
- `train trainer.strategy=ddp trainer.devices=N`: the `train` process that Hydra started owns
  the run folder; it starts N workers through torch elastic, telling them that folder
  (`hydra.run.dir=...`), and waits. Elastic ends every worker as soon as one fails.
- `torchrun --nproc_per_node=N --no-python train ...`: every rank composes its own config, so the
  ranks above 0 are sent to a throwaway folder before Hydra starts (`isolate_nonzero_rank`) and
  learn rank 0's folder by broadcast once the process group is up (trainer/commands/train_job.py).

No torch import at module level: `train --help` stays fast.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from decltrain.trainer.engine.stop_signals import early_signal
from decltrain.trainer.runs import layout

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.api import SignalException  # torch loads only when launching

log = logging.getLogger("decltrain")

# Hydra overrides that belong to the launching process (its sweep, launcher, folders), never to a worker.
_PARENT_ONLY = ("hydra.mode", "hydra.run.", "hydra.sweep.", "hydra.launcher", "hydra/launcher",
                "hydra.sweeper", "hydra/sweeper", "hydra.job.num", "hydra.job.id", "hydra.output_subdir")


def under_torchrun() -> bool:
    """True inside a worker that torch elastic started (it sets RANK, WORLD_SIZE and friends)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def isolate_nonzero_rank(argv: list[str]) -> Callable[[], None]:
    """Under torchrun, points ranks above 0 at a throwaway folder; returns its clean-up.

    Must run before Hydra parses `argv`: ranks start at slightly different times, so `${now:}`
    differs between them, and only rank 0 may create the run folder and its `.hydra`.
    """
    if not under_torchrun() or os.environ["RANK"] == "0":
        return lambda: None
    scratch = tempfile.mkdtemp(prefix=f"train-rank{os.environ['RANK']}-")
    # Later overrides of the same key win, so these beat any folder given on the command line.
    argv += [f"hydra.run.dir={quote_override(scratch)}", f"hydra.sweep.dir={quote_override(scratch)}",
             "hydra.output_subdir=null"]
    return lambda: shutil.rmtree(scratch, ignore_errors=True)


def should_launch(cfg: DictConfig) -> bool:
    """Several devices asked for, and no torchrun around us: this process must start the workers."""
    return int(cfg.trainer.devices) > 1 and not under_torchrun()


def launch_workers(cfg: DictConfig) -> float | None:
    """Runs `trainer.devices` workers on this machine.

    Raises WorkersFailed naming the first worker that failed, Preempted after a stop signal.
    """
    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from decltrain.trainer.errors import Preempted, UserError, WorkersFailed

    devices = int(cfg.trainer.devices)
    if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) > 1:
        raise UserError("trainer.devices starts workers on this node only; for several nodes run "
                        "`torchrun --nnodes=N --nproc_per_node=G --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT "
                        "--no-python train ...` on each node (see docs/distributed.md)")
    visible = torch.cuda.device_count()
    if cfg.trainer.accelerator != "cpu" and 0 < visible < devices:  # on CPU, workers share the cores
        raise UserError(f"trainer.devices={devices} but only {visible} CUDA devices are visible; "
                        f"lower trainer.devices")
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # As torchrun does: N processes with all cores each would overload the machine.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    log.info("starting %d worker processes (torch elastic); run folder %s", devices, run_dir)
    try:
        with _early_signal_stops_workers(SignalException):
            elastic_launch(config, sys.executable)("-m", "decltrain.trainer.commands.train", *worker_arguments(hydra_cfg))
    except SignalException as stop:
        # Elastic has passed the signal on to the workers and waited for them: they agreed on a
        # step, rank 0 wrote last.ckpt and printed how to resume. The CLI exits or requeues.
        log.warning("stopped by %s", stop.sigval.name)
        raise Preempted(int(stop.sigval)) from None
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise WorkersFailed(f"worker rank {rank} failed (exit code {failure.exitcode}): "
                            f"{_failure_text(failure.message)}", failure.exitcode if failure.exitcode > 0 else 1) from None
    return _monitored_value(run_dir)


@contextlib.contextmanager
def _early_signal_stops_workers(signal_exception: type[SignalException]) -> Iterator[None]:
    """Submitit's early signal (USR2) stops the workers as SIGTERM does, while elastic runs them.

    Elastic turns SIGTERM, SIGINT, SIGHUP and SIGQUIT into a `SignalException`, passes that
    signal to the workers and waits for them; USR2 it leaves alone, so submitit's handler would
    requeue the job at once, before the workers wrote their checkpoint. Raised the same way,
    USR2 reaches the workers (which stop on it like on SIGTERM) and then trainer/runs/requeue.py.
    """
    early = early_signal()

    def stop_workers(signum: int, frame: object) -> None:
        raise signal_exception(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    previous = signal.signal(early, stop_workers)
    try:
        yield
    finally:
        signal.signal(early, previous)


def worker_arguments(hydra_cfg: HydraConf) -> list[str]:
    """The command line of a worker: this job's config and overrides, in this job's folder."""
    assert hydra_cfg.job.config_name is not None  # the console scripts name their config (train.yaml)
    args = ["--config-name", hydra_cfg.job.config_name]
    args += [arg for source in hydra_cfg.runtime.config_sources if source.provider == "command-line"
             for arg in ("--config-dir", source.path)]
    args += list(hydra_cfg.overrides.task)
    args += [o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(_PARENT_ONLY)]
    # The folder exists already, with the .hydra this process wrote: workers only add to it.
    return [*args, f"hydra.run.dir={quote_override(hydra_cfg.runtime.output_dir)}", "hydra.output_subdir=null"]


def recorded(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` reporting its exception to torch elastic, whose failure summary then names it."""
    if not under_torchrun():
        return function
    from torch.distributed.elastic.multiprocessing.errors import record
    return record(function)


def _failure_text(message: Any) -> str:
    """The error message torch elastic read from the worker's error file (a dict or a string)."""
    if isinstance(message, dict):
        message = message.get("message", "")
    first = str(message).strip().splitlines()
    return first[0] if first else "see its output above"


def _monitored_value(run_dir: Path) -> float | None:
    """What the workers' rank 0 returned to its sweeper: the monitored metric, from metrics.json."""
    metrics_file = run_dir / layout.METRICS
    return layout.result(json.loads(metrics_file.read_text())) if metrics_file.is_file() else None


def quote_override(value: str) -> str:
    """A value (a path, a URL) as a quoted Hydra override value, so commas or spaces in it are not syntax."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
