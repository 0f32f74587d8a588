"""Vocabularies for the tokenization levels: characters, words, whitespace tokens, ABC tokens.

`word` splits raw text (punctuation apart, "don't" one word); `whitespace` is for
pre-tokenized corpora (PTB, WikiText): a token is any run of non-blank characters, so "mr."
and "<unk>" stay one token. Both keep each newline as a "\n" token.

Every vocabulary starts with the four reserved symbols of `seqgen.tokens` (PAD, BOS, EOS,
UNK at ids 0..3). A vocabulary is saved as JSON (never pickle) so it can be read by anyone.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from seqgen.errors import UserError
from seqgen.tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS, UNK_ID

LEVELS = ("char", "word", "whitespace", "abc")
UNKNOWN_POLICIES = ("unk", "error")

# A word is a run of word characters (with inner apostrophes: "don't"); every other
# non-space character is its own token; newlines are kept as tokens so that line structure
# (verse, dialogue turns) survives a round trip.
_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]|\n")
_WHITESPACE_RE = re.compile(r"\S+|\n")


def tokenize(text: str, level: str) -> list[str]:
    """Split `text` into the symbols of `level` ("char", "word", "whitespace" or "abc")."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD_RE.findall(text)
    if level == "whitespace":
        return _WHITESPACE_RE.findall(text)
    if level == "abc":
        from seqgen.data.abc_tokens import tokenize_abc

        return tokenize_abc(text)
    raise UserError(f"unknown tokenization level {level!r}; allowed: {', '.join(LEVELS)}")


def detokenize(symbols: Sequence[str], level: str) -> str:
    """Inverse of `tokenize` up to whitespace: `tokenize(detokenize(t)) == t`.

    char: concatenation (exact inverse). word, whitespace: tokens joined by one space, no space
    around newlines. abc: see `seqgen.data.abc_tokens.join_abc`.
    """
    if level == "char":
        return "".join(symbols)
    if level in ("word", "whitespace"):
        return " ".join(symbols).replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n")
    if level == "abc":
        from seqgen.data.abc_tokens import join_abc

        return join_abc(symbols)
    raise UserError(f"unknown tokenization level {level!r}; allowed: {', '.join(LEVELS)}")


class Vocab:
    """A list of symbols; the id of a symbol is its index.

    `symbols` may be given with or without the four specials in front; `Vocab.symbols`
    always starts with them.
    """

    def __init__(self, symbols: Sequence[str], level: str):
        if level not in LEVELS:
            raise UserError(f"unknown tokenization level {level!r}; allowed: {', '.join(LEVELS)}")
        symbols = list(symbols)
        if tuple(symbols[:NUM_SPECIAL]) != SPECIAL_TOKENS:
            symbols = list(SPECIAL_TOKENS) + symbols
        if len(set(symbols)) != len(symbols):
            dup = [s for s, c in Counter(symbols).items() if c > 1]
            raise ValueError(f"duplicate symbols in vocabulary: {dup[:5]!r}")
        self.level = level
        self.symbols: list[str] = symbols
        # Specials are never produced by encoding text: "<eos>" in a file is just characters.
        self._index = {s: i for i, s in enumerate(symbols) if i >= NUM_SPECIAL}

    @classmethod
    def build(cls, texts: Iterable[str], level: str, min_count: int = 1) -> Vocab:
        """Vocabulary of every symbol seen at least `min_count` times.

        Ordered by decreasing count, ties broken by the symbol, so the result does not depend
        on the order of `texts`.
        """
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, level))
        return cls.from_counts(counts, level, min_count)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], level: str, min_count: int = 1, max_symbols: int | None = None
    ) -> Vocab:
        """The symbols counted at least `min_count` times, most frequent first (ties by the
        symbol), at most `max_symbols` of them (the specials are not counted)."""
        kept = [s for s, c in counts.items() if c >= min_count and s not in SPECIAL_TOKENS]
        kept.sort(key=lambda s: (-counts[s], s))
        return cls(kept if max_symbols is None else kept[:max_symbols], level)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab) and self.level == other.level and self.symbols == other.symbols
        )

    def __hash__(self) -> int:
        return hash((self.level, tuple(self.symbols)))

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.level)

    def id_of(self, symbol: str) -> int:
        return self._index.get(symbol, UNK_ID)

    def encode_symbols(
        self, symbols: Iterable[str], *, unknown: str = "unk", what: str = "prompt"
    ) -> list[int]:
        if unknown not in UNKNOWN_POLICIES:
            raise UserError(f"data.unknown={unknown!r} is not allowed; allowed: unk, error")
        ids = []
        for s in symbols:
            i = self._index.get(s)
            if i is None:
                if unknown == "error":
                    # a run's prompts follow its data.unknown; a text to score has no such key
                    fix = " or pass data.unknown=unk to map it to <unk>" if what == "prompt" else ""
                    raise UserError(
                        f"unknown {self.level} symbol {s!r} in the {what} is not in the "
                        f"{len(self)}-symbol training vocabulary; remove it{fix}"
                    )
                i = UNK_ID
            ids.append(i)
        return ids

    def encode(self, text: str, *, unknown: str = "unk", what: str = "prompt") -> list[int]:
        """Token ids of `text`, without BOS/EOS.

        `unknown="unk"` maps symbols missing from the vocabulary to UNK (used for data);
        `unknown="error"` raises a one-line `UserError` naming the symbol and where it was
        (`what`: "prompt", "text", ...).
        """
        return self.encode_symbols(self.tokenize(text), unknown=unknown, what=what)

    def decode_symbols(self, ids: Iterable[int]) -> list[str]:
        """Symbols of `ids`, stopping at the first EOS and dropping PAD and BOS."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            out.append(self.symbols[i] if 0 <= i < len(self.symbols) else SPECIAL_TOKENS[UNK_ID])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` (stops at EOS, drops PAD/BOS; UNK shows as `<unk>`)."""
        return detokenize(self.decode_symbols(ids), self.level)

    def to_json(self) -> dict:
        return {
            "format": "seqgen-vocab",
            "version": 1,
            "level": self.level,
            "symbols": self.symbols,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Vocab:
        if obj.get("format") != "seqgen-vocab":
            raise UserError("not a seqgen vocabulary file (missing format: seqgen-vocab)")
        return cls(obj["symbols"], obj["level"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as UTF-8 JSON."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=0)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))
