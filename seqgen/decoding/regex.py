"""`constraint=regex`: a regular expression compiled to a token-level automaton.

The pattern is parsed and determinized by `interegular` (Python `re` syntax without
backreferences or lookarounds); a token's transition runs the character DFA over the
characters of its symbol, so a sequence is accepted iff the concatenation of its symbols
fully matches the pattern (`re.fullmatch`). That is the decoded text for character-level
vocabularies (`data.level=char`), where every symbol is one character. PAD, BOS and UNK are
forbidden; EOS is allowed exactly where the text so far matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqgen.decoding.constraint import Constraint, make_constraint
from seqgen.errors import UserError
from seqgen.tokens import NUM_SPECIAL


def compile_pattern(pattern: str):  # noqa: ANN201 - an interegular FSM
    """The pattern's minimal character DFA, or one UserError naming the pattern."""
    import interegular

    try:
        return interegular.parse_pattern(pattern).to_fsm()
    except Exception as exc:  # interegular raises several types for unsupported syntax
        raise UserError(
            f"constraint.pattern={pattern!r} cannot be compiled ({exc}); allowed: a Python "
            "regular expression without backreferences or lookarounds"
        ) from None


def regex_constraint(pattern: str, symbols: Sequence[str]) -> Constraint:
    """The automaton accepting the token sequences whose text fully matches `pattern`.

    symbols: the vocabulary (index = token id; the first NUM_SPECIAL are the specials).
    States are the pattern DFA's states (after trimming the dead ones).
    """
    from interegular.fsm import anything_else

    fsm = compile_pattern(pattern)
    states = sorted(fsm.states)
    index = {s: i for i, s in enumerate(states)}
    mapping = fsm.alphabet._symbol_mapping  # char -> symbol class (the public __getitem__)
    other = mapping.get(anything_else)

    def step(state: int, ch: str) -> int | None:
        sym = mapping.get(ch, other)
        return fsm.map.get(state, {}).get(sym)

    table = np.full((len(states), len(symbols)), -1, np.int64)
    for s in states:
        for v in range(NUM_SPECIAL, len(symbols)):
            cur = s
            for ch in symbols[v]:
                cur = step(cur, ch)
                if cur is None:
                    break
            if cur is not None and symbols[v]:
                table[index[s], v] = index[cur]
    accept = np.array([s in fsm.finals for s in states], bool)
    return make_constraint(table, accept, index[fsm.initial])


def shortest_match(pattern: str) -> int | None:
    """The length in characters of the shortest string that fully matches `pattern`, or None
    when no string does (breadth-first over the pattern's DFA): known from the config alone,
    so a budget too short for any match is refused before any work."""
    fsm = compile_pattern(pattern)
    seen, frontier, length = {fsm.initial}, [fsm.initial], 0
    while frontier:
        if any(s in fsm.finals for s in frontier):
            return length
        nxt = []
        for s in frontier:
            for t in fsm.map.get(s, {}).values():
                if t not in seen:
                    seen.add(t)
                    nxt.append(t)
        frontier, length = nxt, length + 1
    return None
