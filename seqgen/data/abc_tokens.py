"""Folk-rnn-style tokenization of ABC notation (level "abc").

Follows the vocabulary idea of folk-rnn (Sturm, Santos, Ben-Tal and Korshunova, 2016,
"Music transcription modelling and composition using deep learning", CSMC): a tune is a
sequence of musically meaningful tokens rather than characters. Unlike folk-rnn, a note
keeps its duration (``A2`` is one token, not ``A`` ``2``) and keys are not transposed.

Grammar (tokens are found left to right; the first rule that matches wins)::

    field     := ("M:" meter | "L:" length | "K:" key)   at a line start or after blanks
                 -> one token with inner blanks removed; keys are normalised to
                    tonic + mode, e.g. "K: D" -> "K:Dmaj", "K:A Minor" -> "K:Amin",
                    "K:Edor", "K:Gmix"; unparseable keys keep their text ("K:Hp").
    other field lines (X:, T:, R:, w:, V:, ... any "A-Za-z:" line)    -> skipped
    inline    := "[" letter ":" text "]"            -> one token ("[K:Gmaj]", "[P:A]")
    annot     := '"' text '"'                       -> one token (chord symbol/annotation)
    deco      := "!" name "!" | "+" name "+"        -> one token ("!trill!")
    grace     := "{" text "}"                       -> one token ("{d}", "{/g}")
    chord     := "[" (note ["-"])+ "]" duration     -> one token ("[FA]2", "[D2F2]")
    bar       := "[|" | ":"* "|" ["]" | "|"] ":"* [digit] | "::" | "[" digit
                 -> one token: "|", "||", "|]", "[|", "|:", ":|", "::", "|1", ":|2", "[1"
    tuplet    := "(" digit [":" [digit] [":" [digit]]]  -> one token ("(3", "(3:2:3")
    note      := [accidental] letter octave* duration  -> one token ("^c'2", "=F/2", "B,3/2")
                 accidental := "^" | "^^" | "_" | "__" | "="; letter := A-G | a-g;
                 octave := "," | "'"; duration := digits ["/"+ digits]
    rest      := ("z" | "x" | "Z") duration         -> one token ("z3", "Z4")
    broken    := "<"+ | ">"+                        -> one token
    any other non-blank character                   -> its own token ("(", ")", "-", ".", "~", "T")

Skipped: blanks, newlines, ``%`` comments, the ``\\`` line continuation, backquotes (beaming
spacers), and unmatched ``"``, ``{``, ``!``, ``+`` (old line-break / broken markup).
`join_abc` puts field tokens on their own line and joins the rest with single spaces, so
the text stays readable (and parseable) ABC, and ``tokenize(join(tokenize(x))) ==
tokenize(x)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_MODES = {
    "maj": "maj",
    "major": "maj",
    "ion": "maj",
    "ionian": "maj",
    "m": "min",
    "min": "min",
    "minor": "min",
    "aeo": "min",
    "aeolian": "min",
    "dor": "dor",
    "dorian": "dor",
    "mix": "mix",
    "mixolydian": "mix",
    "lyd": "lyd",
    "lydian": "lyd",
    "phr": "phr",
    "phrygian": "phr",
    "loc": "loc",
    "locrian": "loc",
}
_MODE_ALT = "|".join(sorted(_MODES, key=len, reverse=True))
_KEY_RE = re.compile(
    rf"(?P<tonic>[A-G][#b]?)(?:[ \t]*(?P<mode>{_MODE_ALT}))?(?![A-Za-z#])", re.IGNORECASE
)
_METER_RE = re.compile(r"C\|?|\d+(?:\+\d+)*/\d+|none")
_LENGTH_RE = re.compile(r"\d+/\d+")

_NOTE = r"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*"
_DUR = r"\d*(?:/+\d*)?"

_TOKEN_RE = re.compile(
    "|".join(
        [
            rf"(?P<field>(?<!\S)(?:K:[ \t]*(?:[A-G][#b]?(?:[ \t]*(?i:{_MODE_ALT}))?(?![A-Za-z#])"
            r"|[^\s|\]]+)|M:[ \t]*(?:C\|?|\d+(?:\+\d+)*/\d+|[^\s|\]]+)"
            r"|L:[ \t]*(?:\d+/\d+|[^\s|\]]+)))",
            r"(?P<inline>\[[A-Za-z]:[^\]\n]*\])",
            r'(?P<annot>"[^"\n]*")',
            r"(?P<deco>![^!\s]+!|\+[^+\s]+\+)",
            r"(?P<grace>\{[^}\n]*\})",
            rf"(?P<chord>\[(?:[.~]?(?:{_NOTE}|[zx]){_DUR}-?)+\]{_DUR})",
            r"(?P<bar>\[\||:*\|[\]|]?:*\d?|::+|\[\d)",
            r"(?P<tuplet>\(\d(?::\d?(?::\d?)?)?)",
            rf"(?P<note>{_NOTE}{_DUR})",
            rf"(?P<rest>[zxZ]{_DUR})",
            r"(?P<broken><+|>+)",
            r"(?P<skip>[\s`\\]+|[\"{!+])",
            r"(?P<other>.)",
        ]
    )
)
_FIELD_LINE_RE = re.compile(r"^[ \t]*([A-Za-z+]):")


def normalize_key(value: str) -> str:
    """``"D"`` -> ``"Dmaj"``, ``"A Minor"`` -> ``"Amin"``, ``"Ador"`` -> ``"Ador"``.

    Anything after the key (clef=..., explicit accidentals) is dropped; a key that is not
    tonic + mode (``"Hp"``, ``"none"``) keeps its first word.
    """
    value = value.strip()
    m = _KEY_RE.match(value)
    if m is None:
        return value.split()[0] if value else value
    tonic = m.group("tonic")
    tonic = tonic[0].upper() + tonic[1:]
    mode = _MODES[(m.group("mode") or "maj").lower()]
    return f"{tonic}{mode}"


def normalize_field(letter: str, value: str) -> str:
    """One token for an M:, L: or K: field: ``("K", " A Minor")`` -> ``"K:Amin"``."""
    letter = letter.upper()
    if letter == "K":
        return f"K:{normalize_key(value)}"
    value = value.strip()
    pattern = _METER_RE if letter == "M" else _LENGTH_RE
    m = pattern.match(value)
    text = m.group(0) if m else (value.split()[0] if value else "")
    return f"{letter}:{text}"


def _strip_comment(line: str) -> str:
    return line.split("%", 1)[0]


def tokenize_abc(text: str) -> list[str]:
    """Folk-rnn-style tokens of an ABC tune (or of several lines of ABC); see module doc."""
    tokens: list[str] = []
    for line in text.splitlines():
        line = _strip_comment(line)
        field = _FIELD_LINE_RE.match(line)
        if field and field.group(1) not in "KLM":
            continue  # metadata (X:, T:, R:, ...), voices and lyrics are not modelled
        for m in _TOKEN_RE.finditer(line):
            kind = m.lastgroup
            tok = m.group(0)
            if kind == "skip":
                continue
            if kind == "field":
                tok = normalize_field(tok[0], tok[2:])
            elif kind == "inline" and tok[1] in "KLMklm":
                tok = f"[{normalize_field(tok[1], tok[3:-1])}]"
            tokens.append(tok)
    return tokens


def is_field_token(token: str) -> bool:
    return len(token) > 2 and token[0] in "KLM" and token[1] == ":"


def join_abc(tokens: Sequence[str]) -> str:
    """Readable ABC: field tokens (M:, L:, K:) on their own lines, other tokens joined by
    single spaces."""
    lines: list[str] = []
    current: list[str] = []
    for tok in tokens:
        if is_field_token(tok):
            if current:
                lines.append(" ".join(current))
                current = []
            lines.append(tok)
        else:
            current.append(tok)
    if current:
        lines.append(" ".join(current))
    return "\n".join(lines)
