"""The folk corpus: ABC tunes shipped inside music21's corpus folder, read as plain text.

No music21 parsing and no network: each ``.abc`` file of the chosen collections is split
into tunes (an ``X:`` line starts a tune; a blank line ends it, as in the ABC standard) and
each tune is reduced to what a folk-rnn-style model learns (Sturm et al. 2016): the ``M:``,
``L:`` and ``K:`` fields and the tune body. Titles, sources, notes and other metadata lines,
``%`` comments and lines holding only inline fields (``[P:A]``) are dropped.

A tune's *header* is its text up to and including the first ``K:`` line (the ``M:`` and ``L:``
lines before it); `header_length` finds it in a tokenized tune, so a held-out opening can be
the whole header plus the first bars of music.

Multi-voice tunes keep their first voice only (a single melody line is what the models
generate). Tunes without a ``K:`` field or without body are skipped and counted.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence

from seqgen.data.abc_tokens import normalize_field
from seqgen.errors import UserError

# The ABC collections bundled with music21 and their license (see corpus/license.txt there).
# The schema's default `data.collections` (config.DataConfig) lists the public-domain ones; a
# non-commercial one is read only when listed explicitly.
COLLECTION_LICENSES = {
    "oneills1850": "public domain",
    "ryansMammoth": "public domain",
    "airdsAirs": "public domain",
    "miscFolk": "public domain",
    "essenFolksong": "non-commercial",
}
KNOWN_COLLECTIONS = tuple(COLLECTION_LICENSES)

_FIELD_RE = re.compile(r"^([A-Za-z+]):(.*)$")
_INLINE_VOICE_RE = re.compile(r"^\[V:\s*([^\]\s]*)[^\]]*\]\s*")
_ONLY_INLINE_RE = re.compile(r"^(?:\[[A-Za-z]:[^\]]*\]\s*)+\\?$")
_SPACES_RE = re.compile(r"[ \t]+")
_HEADER_RE = re.compile(r"(?:[^\n]*\n)*?K:[^\n]*\n?")


def corpus_dir() -> str:
    """music21's bundled corpus folder (music21 is imported only to find it)."""
    import music21

    return os.path.join(os.path.dirname(music21.__file__), "corpus")


def _voice_id(value: str) -> str:
    value = value.strip()
    return value.split()[0] if value else ""


def parse_abc_file(text: str, skipped: Counter | None = None) -> list[str]:
    """Tunes of one ABC file as normalised text (M/L/K lines then body lines).

    `skipped` counts tunes dropped for a reason ("no_key", "empty_body").
    """
    skipped = skipped if skipped is not None else Counter()
    tunes: list[str] = []
    block: list[str] | None = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("X:"):
            if block is not None:
                _finish(block, tunes, skipped)
            block = []
        elif block is not None:
            if raw.strip() == "":
                _finish(block, tunes, skipped)
                block = None
            else:
                block.append(raw)
    return tunes


def _finish(block: list[str], tunes: list[str], skipped: Counter) -> None:
    header: list[str] = []
    body: list[str] = []
    in_body = False
    first_voice: str | None = None
    voice: str | None = None
    for raw in block:
        # Backquotes are ignorable beaming spacers in ABC: noise for a character model.
        line = raw.split("%", 1)[0].replace("`", "").rstrip()
        line = _SPACES_RE.sub(" ", line).lstrip()
        if not line:
            continue
        field = _FIELD_RE.match(line)
        if field:
            letter, value = field.group(1), field.group(2)
            if letter == "V":
                # Header V: lines only declare voices; body ones switch the current voice.
                vid = _voice_id(value)
                first_voice = first_voice if first_voice is not None else vid
                voice = vid if in_body else voice
            elif letter in "MLK" and (voice is None or voice == first_voice):
                (body if in_body else header).append(normalize_field(letter, value))
                in_body = in_body or letter == "K"
            continue
        if not in_body:
            continue  # music before K: is malformed; the tune is judged when K: is missing
        inline_voice = _INLINE_VOICE_RE.match(line)
        if inline_voice:
            voice = inline_voice.group(1)
            first_voice = first_voice if first_voice is not None else voice
            line = line[inline_voice.end() :]
        if not line or _ONLY_INLINE_RE.match(line):
            continue
        if voice is not None and voice != first_voice:
            continue
        body.append(line)
    if not in_body:
        skipped["no_key"] += 1
    elif not any(not _FIELD_RE.match(b) for b in body):
        skipped["empty_body"] += 1
    else:
        tunes.append("\n".join(header + body))


def header_length(symbols: Sequence[str], level: str) -> int:
    """Number of leading tokens forming the tune's header: up to and including the first K:
    field (level "abc": the ``K:...`` token; level "char": the K: line and its newline)."""
    if level == "abc":
        return next((i + 1 for i, s in enumerate(symbols) if s.startswith("K:")), 0)
    m = _HEADER_RE.match("".join(symbols))  # char level: one symbol per character
    return m.end() if m else 0


def collection_files(collection: str, root: str | None = None) -> list[str]:
    """Sorted ``.abc`` files of one collection; UserError for an unknown or empty one."""
    root = root or corpus_dir()
    folder = os.path.join(root, collection)
    if collection not in KNOWN_COLLECTIONS or not os.path.isdir(folder):
        raise UserError(
            f"unknown folk collection {collection!r}; allowed: {', '.join(KNOWN_COLLECTIONS)}"
        )
    files = sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".abc")
    )
    if not files:
        raise UserError(f"folk collection {collection!r} has no .abc files in {folder}")
    return files


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_tunes(
    collections: Sequence[str],
    *,
    root: str | None = None,
    max_tunes: int | None = None,
) -> tuple[list[str], dict]:
    """Tunes of `collections` in a fixed order (collection, file, position) and stats.

    `max_tunes` stops reading once that many tunes are collected.
    """
    if isinstance(collections, str):
        collections = [collections]
    collections = list(collections)
    if not collections:
        raise UserError(
            f"data.collections is empty; allowed: a list of {', '.join(KNOWN_COLLECTIONS)}"
        )
    files = [f for c in collections for f in collection_files(c, root)]
    tunes: list[str] = []
    skipped: Counter = Counter()
    for path in files:
        tunes.extend(parse_abc_file(_read_text(path), skipped))
        if max_tunes is not None and len(tunes) >= max_tunes:
            tunes = tunes[:max_tunes]
            break
    if not tunes:
        raise UserError(
            f"no ABC tunes found in folk collections {collections}; "
            f"allowed collections: {', '.join(KNOWN_COLLECTIONS)}"
        )
    stats = {
        "collections": collections,
        "num_files": len(files),
        "num_tunes": len(tunes),
        "skipped": dict(skipped),
    }
    return tunes, stats
