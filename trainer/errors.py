"""The one exception type for problems the user can fix (config, data, checkpoint files)."""


def first_line(error: BaseException) -> str:
    """An error as one line for a message: its first line, or its type's name when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class UserError(Exception):
    """Printed as a single line naming what is wrong and how to fix it; `train` exits with 2."""


class Preempted(Exception):
    """Raised at an optimizer-step boundary after SIGTERM, SIGINT or USR2; the checkpoint is written on the way out."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite (with `trainer.nonfinite_loss=stop`)."""


class WorkersFailed(Exception):
    """A worker process of a multi-process run failed; `train` exits with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)
