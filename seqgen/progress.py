"""Progress of a long loop (training), shown the same way everywhere.

On a terminal, a rich bar with the step, loss, tokens/s, elapsed time and ETA; log lines written
while it runs (validation, warnings) are printed above it, not glued onto it. Elsewhere (a log
file, a cluster job) a plain line at every tenth of the run and at least every `EVERY_S`
seconds, with the same numbers. Always: a line when the first step starts compiling, and a
last line with the totals, also with `progress=false` (only the bar and the lines between are
off then).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("seqgen")

EVERY_S = 30.0  # a plain line at least this often, so no phase is silent for a minute


@contextlib.contextmanager
def still_running(
    what: str, status: Callable[[], str] | None = None, every: float = EVERY_S
) -> Iterator[None]:
    """While the block runs (one long call: a compile, a jitted decode, music21), a line
    `what: still running after N s (status())` every `every` seconds from a watcher thread,
    which ends with the block."""
    done = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            extra = f" ({status()})" if status is not None else ""
            log.info("%s: still running after %.0f s%s", what, time.perf_counter() - t0, extra)

    watcher = threading.Thread(target=beat, name="seqgen-still-running", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def clock(seconds: float) -> str:
    """`h:mm:ss` (or `m:ss` under an hour) for a duration in seconds."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """`what` from step `start` to `total`: `compiled()` after the first step (its compile),
    `update(step, loss, tokens_per_s)` at each log step, `close()` at the end."""

    def __init__(self, what: str, total: int, start: int = 0, *, enabled: bool = True):
        self.what, self.total, self.start = what, total, start
        self.t0 = time.perf_counter()
        self.t_steps, self.step_steps = self.t0, start  # ETA: the rate after the compile
        self.step, self.loss, self.tps = start, None, None
        self.lines = enabled and not sys.stdout.isatty()
        self.next_line, self.t_line = start + max(1, total // 10), self.t0
        self.bar = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        log.info("%s: compiling the first step (%d of %d steps to go)", what, total - start, total)
        self._compiling = still_running(f"{what}: compiling")
        self._compiling.__enter__()
        if enabled and sys.stdout.isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn(f"[bold]{self.what}[/] {{task.fields[phase]}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        before = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        self.bar.start()  # on a terminal, rich now redirects sys.stdout/stderr above the bar
        self.task = self.bar.add_task(
            self.what, total=self.total, completed=self.start, phase="compiling", loss="-", tps="-"
        )
        # Log handlers hold the stream they were made with; point those on the terminal at
        # rich's redirect, so a log line is printed above the bar instead of glued onto it.
        after = (sys.stdout, sys.stderr) * 2
        redirect = {id(old): new for old, new in zip(before, after) if new is not old}
        for logger in (logging.getLogger(), log):
            for h in logger.handlers:
                if type(h) is logging.StreamHandler and id(h.stream) in redirect:
                    self._handlers.append((h, h.stream))
                    h.setStream(redirect[id(h.stream)])

    def eta(self) -> float | None:
        """Seconds left at the rate of the steps since the compile; None before two points."""
        done = self.step - self.step_steps
        if done <= 0:
            return None
        return (self.total - self.step) * (time.perf_counter() - self.t_steps) / done

    def compiled(self, step: int) -> None:
        """The first step (and its compile) is done: time the rate from here."""
        self._end_compiling()
        self.t_steps, self.step_steps, self.step = time.perf_counter(), step, step
        log.info("%s: compiled and ran the first step in %.1f s", self.what, self.t_steps - self.t0)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, phase="")

    def update(self, step: int, loss: float | None = None, tps: float | None = None) -> None:
        now = time.perf_counter()
        self.step = step
        self.loss = loss if loss is not None else self.loss
        self.tps = tps if tps is not None else self.tps
        due = step >= self.next_line or now - self.t_line >= EVERY_S or step == self.total
        if self.lines and due:
            self.next_line, self.t_line = step + max(1, self.total // 10), now
            log.info("%s", self.line())
        if self.bar is not None:
            fields = {}
            if loss is not None:
                fields["loss"] = f"{loss:.4f}"
            if tps is not None:
                fields["tps"] = f"{tps:,.0f}"
            self.bar.update(self.task, completed=step, **fields)

    def line(self) -> str:
        """`train step 50/250 (20%): loss 2.1234, 23,456 tok/s, elapsed 0:13, ETA 0:52`."""
        parts = [f"{self.what} step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%)"]
        stats = [f"loss {self.loss:.4f}"] if self.loss is not None else []
        stats += [f"{self.tps:,.0f} tok/s"] if self.tps is not None else []
        stats.append(f"elapsed {clock(time.perf_counter() - self.t0)}")
        eta = self.eta()
        stats += [f"ETA {clock(eta)}"] if eta is not None and self.step < self.total else []
        return parts[0] + ": " + ", ".join(stats)

    def _end_compiling(self) -> None:
        if self._compiling is not None:
            self._compiling.__exit__(None, None, None)
            self._compiling = None

    def close(self) -> None:
        self._end_compiling()
        if self.bar is not None:
            self.bar.stop()
            for h, stream in self._handlers:
                h.setStream(stream)
            self._handlers.clear()
            self.bar = None
        if not self.lines or self.step != self.total:  # the plain lines already said it
            log.info("%s", self.line())
