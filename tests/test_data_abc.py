"""Folk-rnn-style ABC tokens (Sturm et al. 2016): grammar, normalisation, round trips."""

import re

import pytest

from seqgen.config import DataConfig
from seqgen.data.abc_tokens import join_abc, normalize_field, normalize_key, tokenize_abc
from seqgen.data.folk import load_tunes


@pytest.fixture(scope="module")
def tunes():
    out = []
    for c in DataConfig().collections:
        t, _ = load_tunes([c])
        out.extend(t[::4])
    return out


def test_hand_tokenized_tune():
    text = (
        "X:3\nT:Title\nM: 6/8\nL:1/8\nK:A Minor % comment\n"
        '|: (3ABc [D2F2][FA]2 {d}c2 ^c\'2 =F/2 z3 B,3/2 A>B|1 "Am"!trill!d4 :|2 e-e |] [1 a :: b ||'
    )
    assert tokenize_abc(text) == [
        "M:6/8", "L:1/8", "K:Amin",
        "|:", "(3", "A", "B", "c", "[D2F2]", "[FA]2", "{d}", "c2", "^c'2", "=F/2", "z3",
        "B,3/2", "A", ">", "B", "|1", '"Am"', "!trill!", "d4", ":|2", "e", "-", "e", "|]",
        "[1", "a", "::", "b", "||",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "value,key",
    [
        ("D", "Dmaj"),
        (" G", "Gmaj"),
        ("Em", "Emin"),
        ("A Minor", "Amin"),
        ("AMix", "Amix"),
        ("E Dorian", "Edor"),
        ("F#m", "F#min"),
        ("Bb", "Bbmaj"),
        ("G clef=treble", "Gmaj"),
        ("Hp", "Hp"),
    ],
)
def test_key_normalisation(value, key):
    assert normalize_key(value) == key
    assert normalize_key(key) == key  # idempotent, so tokens survive a re-tokenization


def test_meter_and_length_fields():
    assert normalize_field("M", " C|") == "M:C|"
    assert normalize_field("M", "6/8") == "M:6/8"
    assert normalize_field("L", " 1/16 ") == "L:1/16"


def test_round_trip_on_real_tunes(tunes):
    assert len(tunes) > 1000
    for t in tunes:
        toks = tokenize_abc(t)
        assert toks and toks[-1] != ""
        assert tokenize_abc(join_abc(toks)) == toks


_STRAY = re.compile(r'![^!\s]+!|\+[^+\s]+\+|"[^"]*"|\{[^}]*\}|\[K:[^\]]*\]|[!+"{]')


def _expected_body(line: str) -> str:
    # Keep complete decorations/annotations/graces; drop stray markers and [K:] (normalised).
    def keep(m: re.Match) -> str:
        tok = m.group(0)
        return "" if len(tok) == 1 or tok.startswith("[K:") else tok

    kept = _STRAY.sub(keep, line)
    return re.sub(r"[\s\\]", "", kept)


def test_no_character_of_the_body_is_lost(tunes):
    # Body tokens concatenated give back the body without blanks and line continuations.
    for t in tunes:
        body = [ln for ln in t.splitlines() if not re.match(r"^[MLK]:", ln)]
        toks = [tok for tok in tokenize_abc("\n".join(body)) if not tok.startswith("[K:")]
        expected = "".join(_expected_body(ln) for ln in body)
        assert "".join(toks).replace(" ", "") == expected, t


def test_join_is_readable_abc_with_fields_on_their_own_lines():
    text = join_abc(["M:6/8", "K:Dmaj", "|:", "A2", "B", ":|", "K:Gmaj", "c"])
    assert text == "M:6/8\nK:Dmaj\n|: A2 B :|\nK:Gmaj\nc"


def test_join_keeps_the_music(tunes):
    music21 = pytest.importorskip("music21")

    def notes(text):
        score = music21.converter.parse("X:1\n" + text, format="abc")
        return [(str(n.pitches), float(n.quarterLength)) for n in score.flatten().notesAndRests]

    for t in tunes[:3]:
        original = notes(t)
        assert original and notes(join_abc(tokenize_abc(t))) == original
