"""Validity of generated folk tunes in ABC notation, checked with music21.

Input is decoded ABC text (one tune per string: `M:`, `L:`, `K:` headers and a body), not
token ids, because validity is a property of the notation. Parsing is slow (~5-50 ms a
tune), so the metrics run on a seeded random subset (default 200 tunes).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence

import numpy as np

ABC_SUBSET = 200


def _with_x_header(text: str) -> str:
    # music21 needs a reference number to start a tune; a generated tune has none
    lines = text.strip("\n").splitlines()
    if any(line.startswith("X:") for line in lines):
        return text
    return "X:1\n" + text.strip("\n") + "\n"


def parse_abc(text: str):
    """The music21 Score for one tune, or None when it does not parse.

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


def abc_rates(
    texts: Sequence[str], *, subset: int = ABC_SUBSET, seed: int = 0
) -> tuple[float, float]:
    """(`abc/parse_rate`, `abc/bar_ok_rate`) on a seeded random subset of the tunes.

    - subset: min(len(texts), subset) tunes drawn without replacement by
      `np.random.default_rng(seed)`;
    - abc/parse_rate = (# tunes that `parse_abc`) / (# tunes in the subset);
    - abc/bar_ok_rate = (# parsed tunes with a meter whose bars are all OK, see `bars_ok`)
      / (# parsed tunes with a meter); NaN when no parsed tune has a meter.
    """
    if len(texts) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(texts), size=min(len(texts), subset), replace=False))
    parsed = ok = checkable = 0
    for i in chosen:
        score = parse_abc(texts[int(i)])
        if score is None:
            continue
        parsed += 1
        verdict = bars_ok(score)
        if verdict is not None:
            checkable += 1
            ok += int(verdict)
    return parsed / chosen.size, ok / checkable if checkable else math.nan
