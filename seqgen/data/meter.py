"""`constraint=meter`: an automaton over the folk-rnn-style ABC vocabulary (`data.level=abc`)
whose tunes have every full bar exactly as long as their `M:` and `L:` say.

It reads the header (`M:` and `L:` in either order, each once, then `K:`: the body starts after
`K:`; without `L:` the ABC default, 1/16 below 3/4 and 1/8 otherwise), then tracks the
position in the bar on a grid of `TICKS` ticks per `L:` unit. A bar lasts M / L units
(`M:C` = 4/4, `M:C|` = 2/2, `M:2+3/8` = 5/8). Body states are (bar length, free, mode, pos):
pos in [0, bar ticks]; free = the current bar is exempt from the full-bar rule (the first
bar -- a pickup -- and the bar after a section barline); mode is plain, "after a note of
duration d" (d in `BROKEN_UNITS`, so a broken rhythm may follow), "pending broken" (the next
note is halved after `>`, x 3/2 after `<`), or "in a triplet with k notes left".
The rules, matched to `seqgen.metrics.abc.bars_ok` (music21's reading):

- a note, rest (`z`, `x`) or chord advances pos by its duration (a chord: its notes' common
  duration times the outer one; a chord whose notes differ is forbidden); pos never passes
  the bar's end;
- `>` after a note of duration d dots it (+ d/2) and halves the next note; `<` halves it
  (- d/2) and dots the next; the next token must be a note; `>>`, `<<` are forbidden;
- `(3` makes the next three notes, rests or chords last 2/3 of their duration each; no
  barline, broken rhythm or EOS inside; other tuplets are forbidden;
- a plain barline `|` needs a full bar (pos = bar ticks), except in a free bar (pickup, or
  after a section), where any non-empty bar may close; a section barline (`||`, `|]`, `[|`,
  and any with a repeat `:`) may close any bar (music21's check skips the bars on either side
  of a section boundary) and makes the next bar free; volta endings (`|1`, `[2`, ...) and
  `Z` multi-bar rests are forbidden;
- zero-duration tokens: annotations (without `< > [ ] | :`), `!..!` decorations, grace notes,
  inline fields other than `[M:..]`/`[L:..]`, slurs, ties and `. ~ T H u v`; body `K:`,
  `M:` and `L:` lines are forbidden (music21 may start a new bar at a `K:` line);
- EOS is allowed in the body outside a triplet or a pending broken rhythm, at any position
  (the checker skips the last bar).

Only the bar lengths of the prompts' headers are built, one body automaton per distinct bar
length M / L (in grid ticks), which keeps the state count to the sum over them of
2 * 9 * (bar ticks + 1) (6/8 with L:1/8: 1,314 states).
Every prompt must carry the header (M:, optionally L:, then K:): folk prompts do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from seqgen.decoding.constraint import Constraint, make_constraint
from seqgen.errors import UserError
from seqgen.tokens import NUM_SPECIAL

TICKS = 12  # grid ticks per L: unit: halves, quarters, eighths of 3/4, triplets of quarters
BROKEN_UNITS = (Fraction(1, 2), Fraction(1), Fraction(2))  # notes a broken rhythm may follow
_DUR = r"(\d*)(/*)(\d*)"
_NOTE_RE = re.compile(rf"^(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*{_DUR}$")
_REST_RE = re.compile(rf"^[zx]{_DUR}$")
_CHORD_RE = re.compile(rf"^\[(.+)\]{_DUR}$")
_CHORD_NOTE_RE = re.compile(rf"[.~]?(?:(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*|[zx]){_DUR}-?")
# annotations without characters music21 reads as music (a quoted ">" becomes a broken
# rhythm); decorations that start with a letter (old "+...+" decorations are chords there)
_ZERO_RE = re.compile(
    r'^(?:![A-Za-z][^!]*!|"[^"<>\[\]|:]*"|\{[^}]*\}|\[[A-KN-Za-kn-z]:[^\]]*\]|[()\-.~THuv])$'
)
_SECTION_RE = re.compile(r"^(?::*\|[\]|]?:*|\[\||::+)$")
# mode indices
PLAIN, HALF, THREE_HALF = 0, 1, 2
TRIP = (3, 4, 5)  # 1, 2, 3 notes left
AFTER0 = 6  # AFTER0 + i: after a note of BROKEN_UNITS[i]
NUM_MODES = AFTER0 + len(BROKEN_UNITS)
OPEN_MODES = (PLAIN, *range(AFTER0, NUM_MODES))  # nothing pending


def duration(num: str, slashes: str, den: str) -> Fraction | None:
    """ABC duration of a note's suffix in L units: "" = 1, "2" = 2, "/2" = "/" = 1/2,
    "//" = 1/4, "3/2" = "3/" = 3/2; None for forms music21 may read otherwise ("//2")."""
    n = int(num) if num else 1
    if not slashes:
        return None if den else Fraction(n)
    if den:
        return Fraction(n, int(den)) if len(slashes) == 1 else None
    return Fraction(n, 2 ** len(slashes))


def meter_value(token: str) -> Fraction | None:
    """The bar length of an `M:` token in whole notes (None: no usable meter)."""
    text = token[2:]
    if text in ("C", "C|"):
        return Fraction(1)
    m = re.fullmatch(r"(\d+(?:\+\d+)*)/(\d+)", text)
    if m is None:
        return None
    return Fraction(sum(int(x) for x in m.group(1).split("+")), int(m.group(2)))


def default_length(meter: Fraction) -> Fraction:
    """ABC 2.1 sec. 3.1.7 (and music21): without `L:`, 1/16 for meters below 3/4, else 1/8."""
    return Fraction(1, 16) if meter < Fraction(3, 4) else Fraction(1, 8)


def length_value(token: str) -> Fraction | None:
    m = re.fullmatch(r"(\d+)/(\d+)", token[2:])
    return Fraction(int(m.group(1)), int(m.group(2))) if m and int(m.group(1)) else None


def _duration_of(sym: str) -> tuple[str, Fraction | None]:
    """("note" | "rest" | "chord" | "", duration in L units or None)."""
    for kind, regex in (("note", _NOTE_RE), ("rest", _REST_RE)):
        m = regex.match(sym)
        if m:
            return kind, duration(*m.groups())
    m = _CHORD_RE.match(sym)
    if m:
        inner = _CHORD_NOTE_RE.findall(m.group(1))
        if not inner or "".join(_CHORD_NOTE_RE.sub("", m.group(1))):
            return "chord", None
        durs = {duration(*g) for g in inner}
        outer = duration(*m.groups()[1:])
        if len(durs) != 1 or None in durs or outer is None:
            return "chord", None
        return "chord", durs.pop() * outer
    return "", None


def header_combos(symbols: Sequence[str], prompts: Sequence[Sequence[int]]) -> list[tuple]:
    """The distinct (meter, length) pairs (as Fractions) of the prompts' headers."""
    combos = []
    for i, prompt in enumerate(prompts):
        toks = [symbols[int(t)] for t in prompt]
        if not any(t.startswith("K:") for t in toks):
            raise UserError(
                f"constraint=meter: prompt {i} has no K: header; allowed: prompts that carry "
                "the tune's header M:, L:, K: (decode.prompts=heldout on data=folk does)"
            )
        head = toks[: next(j for j, t in enumerate(toks) if t.startswith("K:"))]
        ms = [meter_value(t) for t in head if t.startswith("M:")]
        ls = [length_value(t) for t in head if t.startswith("L:")]
        if len(ms) != 1 or len(ls) > 1 or ms[0] is None or None in ls:
            raise UserError(
                f"constraint=meter: prompt {i}'s header {' '.join(head)!r} needs one numeric "
                "M: (or C, C|) and at most one L: before K:; allowed: e.g. M:6/8 L:1/8 K:Gmaj"
            )
        combo = (ms[0], ls[0] if ls else default_length(ms[0]))
        if combo not in combos:
            combos.append(combo)
    return combos


def meter_constraint(symbols: Sequence[str], prompts: Sequence[Sequence[int]]) -> Constraint:
    """The meter automaton for the vocabulary `symbols` and the headers of `prompts` (token id
    sequences); see the module docstring."""
    combos = header_combos(symbols, prompts)
    if not combos:
        raise UserError("constraint=meter needs prompts with a header; allowed: M:, L:, K: ...")
    fulls, combo_index = _bar_lengths(combos)
    v = len(symbols)
    m_toks = [i for i in range(NUM_SPECIAL, v) if symbols[i].startswith("M:")]
    l_toks = [i for i in range(NUM_SPECIAL, v) if symbols[i].startswith("L:")]
    lay = _Layout(len(m_toks), len(l_toks), fulls)
    table = np.full((lay.n_states, v), -1, np.int64)
    accept = np.zeros(lay.n_states, bool)
    _header_moves(table, lay, symbols, m_toks, l_toks, combo_index)
    kinds = [_duration_of(symbols[t]) if t >= NUM_SPECIAL else ("", None) for t in range(v)]
    for c in range(len(fulls)):
        bar = _Bar(table, lay, c)
        for free in (0, 1):
            for mode in OPEN_MODES:
                accept[bar.id(free, mode, bar.pos)] = True
        for tok in range(NUM_SPECIAL, v):
            for free in (0, 1):
                _token_moves(bar, tok, symbols[tok], kinds[tok], free)
    return make_constraint(table, accept, lay.head(-1, -1))


def _bar_lengths(combos: list[tuple]) -> tuple[list[int], dict[tuple, int]]:
    """The distinct bar lengths in grid ticks, and each (meter, length) pair's index into
    them: durations are in L units, so pairs with the same bar length in L units (6/8 with
    L:1/8, 3/4 with L:1/8) share one body automaton."""
    fulls: list[int] = []
    combo_index = {}
    for meter, length in combos:
        full = meter / length * TICKS
        if full.denominator != 1:
            raise UserError(f"constraint=meter: M:{meter} with L:{length} is off the grid")
        if int(full) not in fulls:
            fulls.append(int(full))
        combo_index[(meter, length)] = fulls.index(int(full))
    return fulls, combo_index


class _Layout:
    """The state numbering: the header states (mi, li) first (-1 = not yet seen), then one
    block of body states (free, mode, pos) per bar length."""

    def __init__(self, n_m: int, n_l: int, fulls: list[int]) -> None:
        self.n_l, self.fulls = n_l, fulls
        n_head = (n_m + 1) * (n_l + 1)
        self.offsets = np.cumsum([n_head] + [2 * NUM_MODES * (f + 1) for f in fulls])
        self.n_states = int(self.offsets[-1])

    def head(self, mi: int, li: int) -> int:
        return (mi + 1) * (self.n_l + 1) + (li + 1)

    def body(self, c: int, free: int, mode: int, pos: np.ndarray) -> np.ndarray:
        return self.offsets[c] + (free * NUM_MODES + mode) * (self.fulls[c] + 1) + pos


def _header_moves(
    table: np.ndarray,
    lay: _Layout,
    symbols: Sequence[str],
    m_toks: list[int],
    l_toks: list[int],
    combo_index: dict[tuple, int],
) -> None:
    """The header: each of `M:` and `L:` once, in either order; `K:` after `M:` enters the
    body automaton of the header's bar length (a pair no prompt has stays a dead end)."""
    m_val = {i: meter_value(symbols[i]) for i in m_toks}
    l_val = {i: length_value(symbols[i]) for i in l_toks}
    for mi in range(-1, len(m_toks)):
        for li in range(-1, len(l_toks)):
            s = lay.head(mi, li)
            if mi < 0:
                for j, tok in enumerate(m_toks):
                    if m_val[tok] is not None:
                        table[s, tok] = lay.head(j, li)
            if li < 0:
                for j, tok in enumerate(l_toks):
                    if l_val[tok] is not None:
                        table[s, tok] = lay.head(mi, j)
            if mi >= 0:
                meter = m_val[m_toks[mi]]
                length = l_val[l_toks[li]] if li >= 0 else default_length(meter)
                c = combo_index.get((meter, length))
                if c is not None:
                    for tok in range(NUM_SPECIAL, len(symbols)):
                        if symbols[tok].startswith("K:"):
                            table[s, tok] = lay.body(c, 1, PLAIN, np.array(0))


class _Bar:
    """The body automaton of one bar length: writes its moves into the shared table."""

    def __init__(self, table: np.ndarray, lay: _Layout, c: int) -> None:
        self.table, self.lay, self.c = table, lay, c
        self.full = lay.fulls[c]
        self.pos = np.arange(self.full + 1)

    def id(self, free: int, mode: int, pos: np.ndarray) -> np.ndarray:
        return self.lay.body(self.c, free, mode, pos)

    def put(self, src_free: int, src_mode: int, tok: int, dst: np.ndarray, ok: np.ndarray) -> None:
        """`tok` from state (src_free, src_mode, pos) goes to dst[pos], where ok[pos]."""
        rows = self.id(src_free, src_mode, self.pos)
        self.table[rows[ok], tok] = dst[ok]

    def move(self, free: int, mode: int, tok: int, ticks: int, dst_mode: int) -> None:
        """A duration of `ticks` from every position where it still fits in the bar."""
        new = self.pos + ticks
        dst = self.id(free, dst_mode, np.minimum(new, self.full))
        self.put(free, mode, tok, dst, new <= self.full)


def _token_moves(bar: _Bar, tok: int, sym: str, kind: tuple, free: int) -> None:
    """Every move of token `tok` (symbol `sym`, `_duration_of` kind) from the states with this
    `free` flag (the rules of the module docstring)."""
    pos, full = bar.pos, bar.full
    if kind[0] and kind[1] is not None:
        _duration_moves(bar, tok, kind[0], kind[1], free)
    elif sym in (">", "<"):
        _broken_moves(bar, tok, sym, free)
    elif sym == "(3":
        for mode in OPEN_MODES:
            bar.put(free, mode, tok, bar.id(free, TRIP[2], pos), pos < full)
    elif sym == "|":
        ok = (pos > 0) & ((pos == full) | bool(free))
        for mode in OPEN_MODES:
            bar.put(free, mode, tok, bar.id(0, PLAIN, 0 * pos), ok)
    elif _SECTION_RE.match(sym):
        ok = (pos > 0) | bool(free)
        for mode in OPEN_MODES:
            bar.put(free, mode, tok, bar.id(1, PLAIN, 0 * pos), ok)
    elif _ZERO_RE.match(sym):
        for mode in OPEN_MODES:
            bar.put(free, mode, tok, bar.id(free, PLAIN, pos), pos >= 0)
        for mode in TRIP:
            bar.put(free, mode, tok, bar.id(free, mode, pos), pos >= 0)


def _duration_moves(bar: _Bar, tok: int, kind: str, units: Fraction, free: int) -> None:
    """A note, rest or chord of `units` L units: plainly (a note of a `BROKEN_UNITS` length
    may then take a broken rhythm), halved or dotted after `>` / `<` (notes only), and at 2/3
    inside a triplet."""
    d = units * TICKS
    broken_i = BROKEN_UNITS.index(units) if kind == "note" and units in BROKEN_UNITS else -1
    if d.denominator == 1 and d > 0:
        dst_mode = AFTER0 + broken_i if broken_i >= 0 else PLAIN
        for mode in OPEN_MODES:
            bar.move(free, mode, tok, int(d), dst_mode)
    for mode, factor in ((HALF, Fraction(1, 2)), (THREE_HALF, Fraction(3, 2))):
        d2 = units * factor * TICKS
        if kind == "note" and d2.denominator == 1:
            bar.move(free, mode, tok, int(d2), PLAIN)
    d3 = units * Fraction(2, 3) * TICKS
    if d3.denominator == 1 and d3 > 0:
        for left, mode in enumerate(TRIP, start=1):
            bar.move(free, mode, tok, int(d3), TRIP[left - 2] if left > 1 else PLAIN)


def _broken_moves(bar: _Bar, tok: int, sym: str, free: int) -> None:
    """`>` dots the note of duration u just played (+ u/2) and halves the next; `<` halves it
    (- u/2) and dots the next: only after a note of a `BROKEN_UNITS` length."""
    pos, full = bar.pos, bar.full
    for i, u in enumerate(BROKEN_UNITS):
        half = u * TICKS / 2
        if half.denominator != 1:
            continue
        if sym == ">":
            new, dst_mode = pos + int(half), HALF
        else:
            new, dst_mode = pos - int(half), THREE_HALF
        ok = (new <= full) & (new >= 0)
        bar.put(free, AFTER0 + i, tok, bar.id(free, dst_mode, np.clip(new, 0, full)), ok)
