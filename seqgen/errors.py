"""User-facing errors: one clear line, no traceback (the entry point catches them)."""


class UserError(ValueError):
    """A user's mistake: a bad override, an empty corpus, an unknown token, a bad knob.

    The message is a single line naming what was wrong and what is allowed. `seqgen.run`
    prints it as `error: <message>` and exits with status 2 without a traceback.
    """
