"""Corpora for training and evaluation: `load_corpus(data_cfg, seed)` dispatches on
``data_cfg.name`` ("folk", "text", "synthetic") and returns token-id splits plus a vocabulary.

The config may be a DictConfig, a dataclass, a SimpleNamespace or a dict; missing fields
take the defaults below. The vocabulary is built from all splits (the data contain no UNK;
prompts may, see `Vocab.encode(..., unknown=...)`). The split is a seeded permutation, so
the same seed and config give the same corpus, and `fingerprint` identifies it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqgen.data import folk, text
from seqgen.data.synthetic import DPFSA
from seqgen.data.vocab import Vocab, tokenize
from seqgen.errors import UserError

DEFAULTS: dict[str, Any] = {
    "collections": list(folk.DEFAULT_COLLECTIONS),
    "path": None,
    "preset": None,
    "level": "char",
    "window": 256,
    "valid_fraction": 0.05,
    "test_fraction": 0.05,
    "max_sequences": None,
    "num_states": 8,
    "alphabet_size": 6,
    "num_train": 5000,
    "stop_prob": 0.1,
    "cache_dir": None,
}
FOLK_LEVELS = ("char", "abc")
TEXT_LEVELS = ("char", "word")


@dataclass
class Corpus:
    """Token-id splits (int32 arrays without BOS/EOS) and their vocabulary.

    `oracle` is the true distribution when known (the synthetic `DPFSA`), else None.
    """

    name: str
    vocab: Vocab
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    oracle: DPFSA | None = None
    meta: dict = field(default_factory=dict)


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """`cfg.key` for a DictConfig/dataclass/namespace (or `cfg[key]` for a dict); `default`
    when missing or None."""
    try:
        value = cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)
    except Exception:  # missing attribute, omegaconf MISSING, ...
        value = None
    return default if value is None else value


def _get(cfg: Any, key: str) -> Any:
    return cfg_get(cfg, key, DEFAULTS.get(key))


def split_indices(
    n: int, valid_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of range(n) into sorted (train, valid, test) index arrays.

    A positive fraction gets at least one item when n >= 3; train is never empty.
    """
    _check_fractions(valid_fraction, test_fraction)
    sizes = []
    for frac in (valid_fraction, test_fraction):
        k = int(round(n * frac))
        sizes.append(1 if frac > 0 and k == 0 and n >= 3 else k)
    n_valid, n_test = sizes
    if n - n_valid - n_test < 1:
        raise UserError(
            f"the corpus has only {n} sequences: too few for a train/valid/test split; "
            "allowed: more data, smaller fractions, or a larger data.max_sequences"
        )
    perm = np.random.default_rng(seed).permutation(n)
    valid = np.sort(perm[:n_valid])
    test = np.sort(perm[n_valid : n_valid + n_test])
    train = np.sort(perm[n_valid + n_test :])
    return train, valid, test


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for key, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise UserError(f"data.{key}={frac} is not allowed; allowed: 0 <= fraction < 1")
    if valid_fraction + test_fraction >= 1.0:
        raise UserError(
            f"data.valid_fraction + data.test_fraction = {valid_fraction + test_fraction} "
            "leaves no training data; allowed: a sum below 1"
        )


def _finish(
    name: str,
    vocab: Vocab,
    seqs: Sequence[np.ndarray],
    cfg: Any,
    seed: int,
    meta: dict,
    oracle: DPFSA | None = None,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Corpus:
    if not seqs:
        raise UserError(f"data={name} produced no sequences; check data.path / collections")
    tr, va, te = splits or split_indices(
        len(seqs), float(_get(cfg, "valid_fraction")), float(_get(cfg, "test_fraction")), seed
    )
    meta = dict(
        meta,
        level=vocab.level,
        vocab_size=len(vocab),
        num_sequences=len(seqs),
        num_train=len(tr),
        num_valid=len(va),
        num_test=len(te),
    )
    return Corpus(
        name,
        vocab,
        [seqs[i] for i in tr],
        [seqs[i] for i in va],
        [seqs[i] for i in te],
        oracle,
        meta,
    )


def _max_sequences(cfg: Any) -> int | None:
    cap = _get(cfg, "max_sequences")
    if cap is not None and int(cap) < 1:
        raise UserError(f"data.max_sequences={cap} is not allowed; allowed: null or >= 1")
    return None if cap is None else int(cap)


def _check_level(name: str, level: str, allowed: Sequence[str]) -> str:
    if level not in allowed:
        raise UserError(
            f"data.level={level} is not allowed for data={name}; allowed: {', '.join(allowed)}"
        )
    return level


def _encode_all(texts: Sequence[str], level: str) -> tuple[Vocab, list[np.ndarray]]:
    token_lists = [tokenize(t, level) for t in texts]
    counts: Counter[str] = Counter()
    for toks in token_lists:
        counts.update(toks)
    vocab = Vocab.from_counts(counts, level)
    seqs = [np.asarray(vocab.encode_symbols(toks), dtype=np.int32) for toks in token_lists]
    return vocab, seqs


def load_folk(cfg: Any, seed: int) -> Corpus:
    """ABC tunes of music21's corpus, one tune per sequence, char or abc tokens."""
    level = _check_level("folk", str(_get(cfg, "level")), FOLK_LEVELS)
    collections = _get(cfg, "collections")
    if isinstance(collections, str):  # "oneills1850" or "oneills1850,miscFolk"
        collections = [c.strip() for c in collections.split(",") if c.strip()]
    collections = [str(c) for c in collections]
    tunes, stats = folk.load_tunes(collections, max_tunes=_max_sequences(cfg))
    vocab, seqs = _encode_all(tunes, level)
    return _finish("folk", vocab, seqs, cfg, seed, {"source": stats})


def load_text(cfg: Any, seed: int) -> Corpus:
    """A UTF-8 file (or preset) cut into windows of `window` tokens."""
    level = _check_level("text", str(_get(cfg, "level")), TEXT_LEVELS)
    path, preset = _get(cfg, "path"), _get(cfg, "preset")
    body, source = text.resolve_text_source(
        None if path is None else str(path),
        None if preset is None else str(preset),
        _get(cfg, "cache_dir"),
    )
    symbols = tokenize(body, level)
    if not symbols:
        raise UserError(
            f"data.path={source['path']} has no {level} tokens; pass a file with text in it"
        )
    chunks = text.windows(symbols, int(_get(cfg, "window")))
    cap = _max_sequences(cfg)
    chunks = chunks[:cap] if cap else chunks
    used = [s for c in chunks for s in c]
    vocab = Vocab.from_counts(Counter(used), level)
    seqs = [np.asarray(vocab.encode_symbols(c), dtype=np.int32) for c in chunks]
    source["window"] = int(_get(cfg, "window"))
    return _finish("text", vocab, seqs, cfg, seed, {"source": source})


def load_synthetic(cfg: Any, seed: int) -> Corpus:
    """Samples of a random DPFSA (seeded by `seed`), which is the corpus' `oracle`."""
    try:
        dpfsa = DPFSA.random(
            int(_get(cfg, "num_states")),
            int(_get(cfg, "alphabet_size")),
            seed,
            stop_prob=float(_get(cfg, "stop_prob")),
        )
    except ValueError as e:
        raise UserError(
            f"bad synthetic data config: {e}; allowed: num_states >= 1, "
            "alphabet_size >= 1, 0 < stop_prob < 1"
        ) from None
    num_train = int(_get(cfg, "num_train"))
    if num_train < 1:
        raise UserError(f"data.num_train={num_train} is not allowed; allowed: >= 1")
    # Samples are i.i.d., so the split is by position: exactly num_train training strings
    # and held-out sets in the ratio of the fractions (max_sequences caps the total).
    vf, tf = float(_get(cfg, "valid_fraction")), float(_get(cfg, "test_fraction"))
    _check_fractions(vf, tf)
    n_valid = int(round(num_train * vf / (1.0 - vf - tf)))
    n_test = int(round(num_train * tf / (1.0 - vf - tf)))
    cap = _max_sequences(cfg)
    if cap and num_train + n_valid + n_test > cap:
        n_valid, n_test = int(round(cap * vf)), int(round(cap * tf))
        num_train = cap - n_valid - n_test
        if num_train < 1:
            raise UserError(f"data.max_sequences={cap} leaves no training strings; allowed: more")
    total = num_train + n_valid + n_test
    seqs = dpfsa.sample(total, seed=seed + 1_000_003)
    idx = np.arange(total)
    splits = (idx[:num_train], idx[num_train : num_train + n_valid], idx[num_train + n_valid :])
    names = dpfsa.symbol_names()
    vocab = Vocab(names, "char" if dpfsa.alphabet_size <= 26 else "word")
    meta = {
        "source": {
            "num_states": dpfsa.num_states,
            "alphabet_size": dpfsa.alphabet_size,
            "stop_prob": float(_get(cfg, "stop_prob")),
        },
        "oracle_entropy": dpfsa.entropy(),
        "oracle_entropy_rate": dpfsa.entropy_rate(),
        "oracle_expected_length": dpfsa.expected_length(),
    }
    return _finish("synthetic", vocab, seqs, cfg, seed, meta, oracle=dpfsa, splits=splits)


LOADERS: dict[str, Callable[[Any, int], Corpus]] = {
    "folk": load_folk,
    "text": load_text,
    "synthetic": load_synthetic,
}


def load_corpus(data_cfg: Any, seed: int) -> Corpus:
    """The corpus named by ``data_cfg.name`` ("folk" by default), split by `seed`."""
    name = str(cfg_get(data_cfg, "name", "folk"))
    if name not in LOADERS:
        raise UserError(f"data={name} is not a corpus; allowed: {', '.join(LOADERS)}")
    return LOADERS[name](data_cfg, int(seed))


def fingerprint(corpus: Corpus) -> str:
    """sha256 of the vocabulary and the three splits (hex): a model cache key."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"name": corpus.name, "level": corpus.vocab.level, "symbols": corpus.vocab.symbols},
            ensure_ascii=False,
        ).encode()
    )
    for split in (corpus.train, corpus.valid, corpus.test):
        lengths = np.asarray([len(s) for s in split], dtype=np.int64)
        h.update(b"|split|" + lengths.tobytes())
        for s in split:
            h.update(np.asarray(s, dtype=np.int32).tobytes())
    return h.hexdigest()
