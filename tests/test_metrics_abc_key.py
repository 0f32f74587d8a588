"""`abc/in_key_rate` and `abc/in_key_notes` (`seqgen.metrics.abc.key_rates`) on tiny tunes whose
notes are counted by hand against the scale of their K: key."""

from __future__ import annotations

import math

import numpy as np

from seqgen.metrics import Generations, compute
from seqgen.metrics.abc import key_notes, key_rates, parse_abc

# D major = {D, E, F#, G, A, B, C#}: 11 notes (the chord's two count), =c is out: 10 in
D_MAJOR = "M:4/4\nL:1/8\nK:D\nDEFG ABcd|=c2 [DF]2 z4|"
# A dorian has G major's set {G, A, B, C, D, E, F#}: f is F#, ^g is out: 9 of 10
A_DORIAN = "M:4/4\nL:1/8\nK:Ador\nABcd efga|^g2 a6|"
# G minor (two flats, natural minor): B and E are flat by the key; =B and ^F are out: 2 of 4
G_MINOR = "M:3/4\nL:1/8\nK:Gmin\nG2 B2 =B ^F|"
G_MAJOR = "M:4/4\nL:1/8\nK:G\nGABc|"  # all 4 in


def test_key_notes_by_hand():
    assert key_notes(parse_abc(D_MAJOR)) == (10, 11)
    assert key_notes(parse_abc(A_DORIAN)) == (9, 10)
    assert key_notes(parse_abc(G_MINOR)) == (2, 4)
    assert key_notes(parse_abc(G_MAJOR)) == (4, 4)


def test_key_rates_by_hand_and_through_the_metric_table():
    texts = [D_MAJOR, A_DORIAN, G_MINOR, G_MAJOR, "not a tune"]
    rate, notes = key_rates(texts)
    assert rate == 1 / 4  # only G_MAJOR has every note in its key; the unparsed one left out
    assert notes == (10 + 9 + 2 + 4) / (11 + 10 + 4 + 4)
    g = Generations([[5]] * 5, texts=texts, dataset="folk")
    m = compute(g)
    assert (m["abc/in_key_rate"], m["abc/in_key_notes"]) == (rate, notes)
    assert all(math.isnan(x) for x in key_rates(["not a tune"]))
    assert np.isnan(key_rates([])[0])
