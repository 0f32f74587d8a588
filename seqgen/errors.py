"""User-facing errors: one clear line, no traceback (the entry point catches them)."""

from __future__ import annotations

import errno


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


# A full disk, an exhausted quota, a read-only file system: the machine's state, not a bug.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_error_message(exc: BaseException) -> str | None:
    """One line for an exception caused (anywhere in its chain: orbax and JAX wrap them) by a
    full disk, an exhausted quota or a read-only file system; None for any other."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            where = f" writing {e.filename}" if e.filename else ""
            return (
                f"{e.strerror or 'no space left'}{where}; the files written before it are "
                "kept; allowed: free space, or a cache_dir / hydra.run.dir / out= elsewhere"
            )
        e = e.__cause__ or e.__context__
    return None
