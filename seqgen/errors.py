"""User-facing errors: one clear line, no traceback (the entry point catches them)."""


class UserError(ValueError):
    """A user's mistake: a bad override, an empty corpus, an unknown token, a bad knob.

    The message is a single line naming what was wrong and what is allowed. `seqgen.run`
    prints it as `error: <message>` and exits with status 2 without a traceback.
    """


class TrainingInterrupted(BaseException):
    """SIGINT or SIGTERM stopped training between two steps (after saving a checkpoint).

    A `BaseException`, like `KeyboardInterrupt`, so that no `except Exception` (a multirun's
    per-job handler) swallows it and the process stops. `seqgen.run` prints the message as one
    line and exits with `exit_code`, 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, message: str, step: int, signum: int):
        super().__init__(message)
        self.step = step
        self.exit_code = 128 + int(signum)
