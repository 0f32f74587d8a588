"""Validity of generated folk tunes in ABC notation, checked with music21.

Input is decoded ABC text (one tune per string: `M:`, `L:`, `K:` headers and a body), not
token ids, because validity is a property of the notation. Parsing is slow (~5-50 ms a
tune), so the metrics run on a seeded random subset (default 200 tunes); and music21 can take
minutes on one odd generated tune (`bestTimeSignature` on an unbalanced tuplet), so every tune
gets `ABC_TIMEOUT_S` seconds (`metrics.abc_timeout_s`) and one that runs out counts as not parsed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import io
import logging
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from seqgen.progress import still_running

ABC_SUBSET = 200
ABC_TIMEOUT_S = 30.0  # ~1000x a typical tune: only a pathological one (or a loaded CPU) hits it
HEARTBEAT_S = 20.0  # a log line at least this often while a long ABC check runs

log = logging.getLogger("seqgen")
T = TypeVar("T")


class TuneTimeout(BaseException):
    """Raised inside a music21 call that ran past its deadline. A BaseException, so music21's
    own `except Exception` handlers do not swallow it."""


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    # CPython delivers it at the thread's next bytecode; None clears a pending one
    obj = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), obj)


def _quiet_about_timeouts(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that drops a `TuneTimeout` that landed where Python cannot
    raise (a `__del__`, a weakref callback) instead of printing a traceback; the watchdog fires
    again a second later."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, TuneTimeout):
            previous(unraisable)

    hook.quiets_timeouts = True  # type: ignore[attr-defined]
    return hook


def call_with_deadline(fn: Callable[[], T], seconds: float) -> tuple[T | None, bool]:
    """`(fn(), False)`, or `(None, True)` when `fn` ran past `seconds` (then it is stopped).

    A watchdog thread raises `TuneTimeout` in the calling thread (any thread, the main one or a
    worker's) at the deadline and again every second until `fn` has left (a bare `except:` in
    the callee cannot keep it running); the watchdog ends before this returns, and a pending
    exception that arrived too late is cleared, so nothing outlives the call. Pure-Python work
    only: a long C call is interrupted when it returns to Python. The garbage collector is off
    meanwhile, so the exception cannot land in a collection callback (JAX has one) and be lost.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        return fn(), False
    caller = threading.get_ident()
    lock = threading.Lock()
    left = threading.Event()
    fired = [False]

    def watch() -> None:
        wait = seconds
        while not left.wait(wait):
            with lock:
                if left.is_set():
                    return
                fired[0] = True
                _async_raise(caller, TuneTimeout)
            wait = 1.0

    if not getattr(sys.unraisablehook, "quiets_timeouts", False):
        sys.unraisablehook = _quiet_about_timeouts(sys.unraisablehook)
    watchdog = threading.Thread(target=watch, name="seqgen-abc-deadline", daemon=True)
    collecting = gc.isenabled()
    try:
        try:
            gc.disable()
            watchdog.start()
            result = fn()
        finally:
            with lock:
                left.set()
                if fired[0]:
                    _async_raise(caller, None)
            watchdog.join()
            if collecting:
                gc.enable()
    except TuneTimeout:
        return None, True
    return (None, True) if fired[0] else (result, False)


def _with_x_header(text: str) -> str:
    # music21 needs a reference number to start a tune; a generated tune has none
    lines = text.strip("\n").splitlines()
    if any(line.startswith("X:") for line in lines):
        return text
    return "X:1\n" + text.strip("\n") + "\n"


@functools.lru_cache(maxsize=ABC_SUBSET)
def parse_abc(text: str):
    """The music21 Score for one tune, or None when it does not parse. Memoized for the last
    `ABC_SUBSET` texts: the bar checks and the key checks read the same subset's scores, so
    each tune is parsed once (half the default run's metric time); the checks only read them.

    "Parses" = `music21.converter.parse(text, format="abc")` (after adding a dummy `X:1`
    header when the text has no `X:` line) raises no exception AND the result contains at
    least one note or rest (an empty body is not a tune). For several tunes in one text
    (an Opus) the first is used.
    """
    from music21 import converter, stream  # slow import, only when ABC metrics are asked for

    try:
        # music21 writes its ABC warnings straight to stderr, one line per odd note
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            score = converter.parse(_with_x_header(text), format="abc")
            if isinstance(score, stream.Opus):
                scores = list(score.scores)
                score = scores[0] if scores else None
            if score is None or not score.recurse().notesAndRests:
                return None
            return score
    except Exception:  # any music21 failure means "does not parse"
        return None


def _is_section_barline(barline) -> bool:
    # anything but a plain single barline ends a section: repeats, double, final, heavy...
    return barline is not None and (
        "Repeat" in type(barline).__name__ or barline.type not in ("regular", "normal")
    )


def bars_ok(score) -> bool | None:
    """True when every full bar of every part lasts what the meter says; None if no meter.

    The meter is the `M:` header (and any inline `[M:..]` change) as music21 reads it; a tune
    without a meter (no `M:` or `M:none`) cannot be checked and gives None. Not full bars,
    hence ignored: the first and last bar of each part, and the bars on either side of a
    section boundary -- a barline other than a plain `|` (repeat `:|` / `|:`, double `||`,
    final `|]`): folk tunes close each section with a short bar that complements the next
    section's pickup (anacrusis). Every other bar must satisfy duration == barDuration
    exactly (music21 quarter lengths, exact fractions for tuplets). A tune with no bar left
    to check is OK.
    """
    parts = list(score.parts) if score.parts else [score]
    if not any(p.recurse().getElementsByClass("TimeSignature") for p in parts):
        return None
    for part in parts:
        measures = list(part.getElementsByClass("Measure"))
        # boundary[k]: a section boundary between bar k and bar k + 1
        boundary = [
            _is_section_barline(m.rightBarline)
            or (k + 1 < len(measures) and _is_section_barline(measures[k + 1].leftBarline))
            for k, m in enumerate(measures)
        ]
        for k in range(1, len(measures) - 1):
            if boundary[k] or boundary[k - 1]:
                continue
            m = measures[k]
            if m.duration.quarterLength != m.barDuration.quarterLength:
                return False
    return True


def check_tune(text: str) -> tuple[bool, bool | None]:
    """(parses, bars OK or None without a meter) of one tune: `parse_abc`, then `bars_ok`."""
    score = parse_abc(text)
    return (False, None) if score is None else (True, bars_ok(score))


def abc_rates(
    texts: Sequence[str],
    *,
    subset: int = ABC_SUBSET,
    seed: int = 0,
    timeout_s: float = ABC_TIMEOUT_S,
    what: str = "ABC checks",
) -> tuple[float, float]:
    """(`abc/parse_rate`, `abc/bar_ok_rate`) on a seeded random subset of the tunes.

    - subset: min(len(texts), subset) tunes drawn without replacement by
      `np.random.default_rng(seed)`;
    - abc/parse_rate = (# tunes that `parse_abc` within `timeout_s` seconds, parse and bar
      check together) / (# tunes in the subset); a tune that runs out counts as not parsed;
    - abc/bar_ok_rate = (# parsed tunes with a meter whose bars are all OK, see `bars_ok`)
      / (# parsed tunes with a meter); NaN when no parsed tune has a meter.
    The log gets one line with the time taken and how many tunes ran out (`what` names them),
    and a line every `HEARTBEAT_S` seconds while it runs.
    """
    if len(texts) == 0:
        return math.nan, math.nan
    verdicts = _on_subset(texts, check_tune, subset, seed, timeout_s, what)
    parsed = [v for v in verdicts if v is not None and v[0]]
    checkable = [v[1] for v in parsed if v[1] is not None]
    ok = sum(map(int, checkable))
    return len(parsed) / len(verdicts), ok / len(checkable) if checkable else math.nan


def _on_subset(
    texts: Sequence[str],
    check: Callable[[str], T],
    subset: int = ABC_SUBSET,
    seed: int = 0,
    timeout_s: float = ABC_TIMEOUT_S,
    what: str = "ABC checks",
) -> list[T | None]:
    """`check(text)` of each tune of the seeded random subset (min(len(texts), subset) tunes
    drawn without replacement by `np.random.default_rng(seed)`, in index order); None for a
    tune that ran past `timeout_s` seconds. One log line with the time taken and how many ran
    out (`what` names them), and a line every `HEARTBEAT_S` seconds while it runs."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(texts), size=min(len(texts), subset), replace=False))
    out: list[T | None] = []
    timed_out, t0 = 0, time.perf_counter()
    with still_running(what, lambda: f"{len(out)}/{chosen.size} tunes", every=HEARTBEAT_S):
        for i in chosen:
            verdict, late = call_with_deadline(lambda t=texts[int(i)]: check(t), timeout_s)
            timed_out += late
            out.append(verdict)
    late = f"; {timed_out} ran past {timeout_s:g} s and count as unparsed" if timed_out else ""
    log.info("%s: %d tunes in %.1f s%s", what, chosen.size, time.perf_counter() - t0, late)
    return out


def key_notes(score) -> tuple[int, int] | None:
    """(notes in the key's scale, notes) of one parsed tune; None when it has no key.

    The key is the tune's first `K:` field as music21 reads it (a `key.Key`, its mode included:
    K:Ador is A dorian); its scale is the diatonic pitch-class set of that key signature (the
    7 pitch classes of the major scale with the same sharps or flats: the church modes share
    their relative major's set, a minor key is natural minor). Each note counts once, each
    chord's pitches once each, at the pitch class it sounds (key signature and accidentals
    applied by music21's ABC reader); grace notes count, rests do not (`recurse().notes`).
    """
    from music21 import key as m21key

    keys = list(score.recurse().getElementsByClass(m21key.KeySignature))
    if not keys:
        return None
    scale = m21key.KeySignature(keys[0].sharps).getScale("major")
    allowed = {p.pitchClass for p in scale.getPitches("C4", "B4")}
    pcs = [p.pitchClass for n in score.recurse().notes for p in n.pitches]
    return sum(pc in allowed for pc in pcs), len(pcs)


def _tune_key_notes(text: str) -> tuple[int, int] | None:
    score = parse_abc(text)
    return None if score is None else key_notes(score)


def key_rates(texts: Sequence[str], **subset: Any) -> tuple[float, float]:
    """(`abc/in_key_rate`, `abc/in_key_notes`): how well tunes keep the key their `K:` header
    declares. seqgen's own definition (no published metric is followed), a pitch-class count
    against the key's scale (`key_notes`), on the seeded subset `abc_rates` checks (`subset`:
    its keywords `subset`, `seed`, `timeout_s`, `what`, with its defaults):

    - abc/in_key_rate = (# parsed tunes with a key and at least one note, every note in the
      key's scale) / (# parsed tunes with a key and at least one note);
    - abc/in_key_notes = (sum over those tunes of notes in the scale) / (sum of their notes),
      pooled over the notes;
    NaN when no parsed tune has a key and a note. Tunes that do not parse (or run past
    `timeout_s`) are left out, as `abc/bar_ok_rate` leaves them out.
    """
    if len(texts) == 0:
        return math.nan, math.nan
    counts = [c for c in _on_subset(texts, _tune_key_notes, **subset) if c]
    counts = [c for c in counts if c[1] > 0]
    if not counts:
        return math.nan, math.nan
    in_key = sum(c[0] == c[1] for c in counts) / len(counts)
    return in_key, sum(c[0] for c in counts) / sum(c[1] for c in counts)
