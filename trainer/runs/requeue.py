"""Cluster jobs that outlive their time limit: checkpoint on submitit's signal, requeue, continue.

How a SLURM job of `train -m hydra/launcher=slurm` gets through its time limit or a preemption:
1. SLURM signals the job: submitit's early signal (USR2, `signal_delay_s` seconds before the time
   limit; `SUBMITIT_PREEMPT_SIGNAL` names another) or SIGTERM (preemption). During training the
   loop (trainer/engine/loop.py) catches both, finishes the optimizer step and writes `last.ckpt`.
2. `hand_over` then gives the stop to submitit's own handler, which asks the launcher for the job
   to run next (hydra_plugins.decltrain.submitit_launcher: the same job with `resume=auto`), saves it and requeues the
   job (`scontrol requeue`). Time limits count against `max_num_timeout`; preemptions do not.
3. The requeued job runs in the same sweep subfolder and, with `resume=auto`, continues from its
   `last.ckpt`.
Outside submitit, `hand_over` does nothing and `train` exits with 128 + the signal number.
No torch and no submitit import at module level: the `train` console script imports this module.
"""
from __future__ import annotations

import signal

from decltrain.trainer.engine.stop_signals import early_signal


def hand_over(signum: int) -> None:
    """Under submitit, lets its handler requeue the job (it exits the process); else returns.

    Called after the run stopped on `signum` and wrote its checkpoint. A SIGTERM is handed over as
    well: submitit itself ignores SIGTERM, but a preempted job that is not requeued would be lost.
    SIGINT (Ctrl-C, and submitit's `job.cancel()`) means stop: it is not handed over.
    """
    if signum == signal.SIGINT:
        return
    try:
        from submitit.core.job_environment import SignalHandler
    except ImportError:  # the slurm extra is not installed: no submitit job either
        return
    handler = signal.getsignal(early_signal())
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, SignalHandler):
        owner.checkpoint_and_try_requeue(signum)
