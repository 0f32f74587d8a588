"""Corpora for training and evaluation: `load_corpus(data_cfg, seed)` dispatches on
``data_cfg.name`` ("folk", "text", "synthetic") and returns token-id splits plus a vocabulary.

Two kinds of corpus. Folk tunes and DPFSA strings are *sequences*: each one is a training
example ending in EOS. Text is a *stream* (`Corpus.stream`): each split is a list of
contiguous token runs, trained and scored as windows with next-token targets and no EOS
(`seqgen.data.batching`); with ``data.line_eos=true`` every newline is the end-of-sentence
token EOS in the stream (the PTB convention: one EOS per line, the last line included).

The vocabulary is built from the training split only; valid/test symbols it lacks map to
UNK and are counted (`meta["oov_tokens"]`, `meta["oov_types"]`, logged). `data.min_count`
and `data.max_vocab` send rare training symbols to UNK too; `data.max_vocab` counts types as
`meta["num_types"]` does (the distinct token ids that occur in the training split, EOS and
UNK included where they occur; PTB: 10,000). At the `whitespace` level the corpus's own
unknown marker (`data.unk_token`, default ``<unk>``) is UNK.

Splits: a text corpus may come pre-split (`data.train_path`, `data.valid_path`,
`data.test_path`); a split without a file is carved out of the training file (or
`data.path` / `data.preset`) as before: the file is cut into blocks of about `data.window`
tokens that end at line ends, and a seeded permutation assigns blocks to the missing splits
(consecutive blocks of one split join into one run). Sequence corpora split their
sequences by a seeded permutation. The same seed and config give the same corpus, and
`fingerprint` identifies it.

The config may be a DictConfig, a dataclass, a SimpleNamespace or a dict; missing fields
take the schema's defaults (`seqgen.config.DataConfig`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from seqgen.config import DataConfig
from seqgen.data import folk, text
from seqgen.data.synthetic import DPFSA
from seqgen.data.vocab import Vocab, tokenize
from seqgen.errors import UserError
from seqgen.settings import setting
from seqgen.tokens import EOS_ID, SPECIAL_TOKENS, UNK_ID

log = logging.getLogger("seqgen")

# A field a partial config (a test's dict, a script's namespace) leaves out takes the schema's
# default (`seqgen.config.DataConfig`).
DEFAULTS: dict[str, Any] = asdict(DataConfig())
FOLK_LEVELS = ("char", "abc")
TEXT_LEVELS = ("char", "word", "whitespace")
SPLITS = ("train", "valid", "test")
_NEWLINE = "\n"


@dataclass
class Corpus:
    """Token-id splits (int32 arrays without BOS/EOS) and their vocabulary.

    `stream`: False for a sequence corpus (each array one EOS-terminated sequence), True for
    a text stream (each array a contiguous run of the text; EOS occurs inside only where
    `line_eos` made newlines EOS). `oracle` is the true distribution when known (the
    synthetic `DPFSA`), else None.
    """

    name: str
    vocab: Vocab
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    oracle: DPFSA | None = None
    meta: dict = field(default_factory=dict)
    stream: bool = False
    line_eos: bool = False

    @property
    def has_eos(self) -> bool:
        """Whether EOS is a target: always for sequences, for streams only with line_eos."""
        return not self.stream or self.line_eos


def _get(cfg: Any, key: str) -> Any:
    return setting(cfg, key, DEFAULTS.get(key))


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


def _vocab_limits(cfg: Any) -> tuple[int, int | None]:
    """(data.min_count, data.max_vocab), checked before any file is read."""
    min_count, max_vocab = int(_get(cfg, "min_count")), _get(cfg, "max_vocab")
    if min_count < 1:
        raise UserError(f"data.min_count={min_count} is not allowed; allowed: >= 1")
    if max_vocab is not None and int(max_vocab) < 2:
        raise UserError(f"data.max_vocab={max_vocab} is not allowed; allowed: null or >= 2")
    return min_count, None if max_vocab is None else int(max_vocab)


def _encode_splits(
    splits: dict[str, list[list[str]]],
    level: str,
    limits: tuple[int, int | None],
    *,
    stream: bool = False,
    eos_symbol: str | None = None,
) -> tuple[Vocab, dict[str, list[np.ndarray]], dict]:
    """The training split's vocabulary and every split encoded with it, plus the counts.

    Sequences (`stream=False`) count one EOS target per sequence; in a stream `eos_symbol`
    (line_eos: the newline) is encoded as EOS and is not a vocabulary symbol. The UNK marker
    (`SPECIAL_TOKENS[UNK_ID]`) is UNK. Counts: `num_tokens` (targets per split),
    `num_types`, `unk_tokens`, and `oov_tokens` / `oov_types` (symbols missing from the
    training vocabulary, the corpus's own UNK marker not counted).
    """
    has_eos = not stream or eos_symbol is not None
    unk_symbol = SPECIAL_TOKENS[UNK_ID]
    counts: Counter[str] = Counter()
    for toks in splits["train"]:
        counts.update(toks)
    counts.pop(eos_symbol, None)
    min_count, max_vocab = limits
    frequent = [t for t, c in counts.items() if c >= min_count and t not in SPECIAL_TOKENS]
    max_symbols = None
    if max_vocab is not None:
        # max_vocab counts types as num_types does: EOS and UNK included when they occur
        has_unk = unk_symbol in counts or len(frequent) < len(counts)
        if len(frequent) + has_eos + has_unk > max_vocab:
            max_symbols = max_vocab - has_eos - 1
            if max_symbols < 1:
                raise UserError(
                    f"data.max_vocab={max_vocab} leaves no room for a symbol beside EOS and "
                    "UNK; allowed: a larger value or null"
                )
    vocab = Vocab.from_counts(counts, level, min_count, max_symbols)
    encoded: dict[str, list[np.ndarray]] = {}
    meta: dict = {"num_tokens": {}, "unk_tokens": {}, "oov_tokens": {}, "oov_types": {}}
    for split, lists in splits.items():
        oov: Counter[str] = Counter()
        out = []
        for toks in lists:
            ids = [EOS_ID if t == eos_symbol else vocab.id_of(t) for t in toks]
            oov.update(t for t, i in zip(toks, ids) if i == UNK_ID and t != unk_symbol)
            out.append(np.asarray(ids, dtype=np.int32))
        encoded[split] = out
        meta["num_tokens"][split] = int(sum(len(x) + (not stream) for x in out))
        meta["unk_tokens"][split] = int(sum(int((x == UNK_ID).sum()) for x in out))
        meta["oov_tokens"][split] = int(sum(oov.values()))
        meta["oov_types"][split] = len(oov)
    train_ids = np.concatenate(encoded["train"] + [np.zeros(0, np.int32)])
    meta["num_types"] = len(np.unique(train_ids)) + (not stream)  # sequences: + EOS
    return vocab, encoded, meta


def _log_unseen(name: str, meta: dict) -> None:
    held = [s for s in ("valid", "test") if meta["oov_tokens"].get(s)]
    if held:
        log.info(
            "data: %s: %s not in the training vocabulary, counted as <unk>",
            name,
            ", ".join(
                f"{meta['oov_tokens'][s]} {s} tokens ({meta['oov_types'][s]} types)" for s in held
            ),
        )


def load_folk(cfg: Any, seed: int) -> Corpus:
    """ABC tunes of music21's corpus, one tune per sequence, char or abc tokens."""
    level = _check_level("folk", str(_get(cfg, "level")), FOLK_LEVELS)
    limits = _vocab_limits(cfg)
    collections = _get(cfg, "collections")
    if isinstance(collections, str):  # "oneills1850" or "oneills1850,miscFolk"
        collections = [c.strip() for c in collections.split(",") if c.strip()]
    collections = [str(c) for c in collections]
    tunes, stats = folk.load_tunes(collections, max_tunes=_max_sequences(cfg))
    idx = split_indices(
        len(tunes), float(_get(cfg, "valid_fraction")), float(_get(cfg, "test_fraction")), seed
    )
    syms = {s: [tokenize(tunes[i], level) for i in ix] for s, ix in zip(SPLITS, idx)}
    vocab, enc, counts = _encode_splits(syms, level, limits)
    _log_unseen("folk", counts)
    seqs = enc["train"] + enc["valid"] + enc["test"]
    bounds = np.cumsum([0] + [len(enc[s]) for s in SPLITS])
    splits = tuple(np.arange(bounds[i], bounds[i + 1]) for i in range(3))
    return _finish("folk", vocab, seqs, cfg, seed, {"source": stats, **counts}, splits=splits)


def load_text(cfg: Any, seed: int) -> Corpus:
    """A text stream: pre-split files, or splits carved from one file (see the module doc)."""
    level = _check_level("text", str(_get(cfg, "level")), TEXT_LEVELS)
    limits = _vocab_limits(cfg)
    line_eos = bool(_get(cfg, "line_eos"))
    window = int(_get(cfg, "window"))
    path, preset, train_path = (_get(cfg, k) for k in ("path", "preset", "train_path"))
    if train_path is not None and path is not None:
        raise UserError(
            f"data.train_path={train_path} and data.path={path} both name the training text; "
            "allowed: one of them"
        )
    key = "data.train_path" if train_path is not None else "data.path"
    path = train_path if train_path is not None else path
    body, source = text.resolve_text_source(
        None if path is None else str(path),
        None if preset is None else str(preset),
        _get(cfg, "cache_dir"),
        key=key,
    )
    bodies = {"train": body}
    for split in ("valid", "test"):
        split_path = _get(cfg, f"{split}_path")
        if split_path is not None:
            bodies[split] = text.read_text_file(str(split_path), key=f"data.{split}_path")
            source[f"{split}_path"] = str(split_path)
    cap = _max_sequences(cfg)
    blocks = {}
    for split, b in bodies.items():
        symbols = _stream_symbols(b, level, line_eos, str(_get(cfg, "unk_token")))
        if not symbols:
            where = source["path"] if split == "train" else source[f"{split}_path"]
            raise UserError(
                f"the {split} text {where} has no {level} tokens; pass a file with text in it"
            )
        blocks[split] = text.line_blocks(symbols, window)[:cap]
    missing = [s for s in ("valid", "test") if s not in bodies]
    runs: dict[str, list[list[str]]] = {s: [_join(blocks[s])] for s in bodies}
    if missing:
        fractions = [float(_get(cfg, f"{s}_fraction")) if s in missing else 0.0 for s in SPLITS[1:]]
        idx = dict(zip(SPLITS, split_indices(len(blocks["train"]), *fractions, seed)))
        runs["train"] = _consecutive_runs(blocks["train"], idx["train"])
        for s in missing:
            runs[s] = _consecutive_runs(blocks["train"], idx[s])
    vocab, enc, counts = _encode_splits(
        runs, level, limits, stream=True, eos_symbol=_NEWLINE if line_eos else None
    )
    _log_unseen("text", counts)
    source["window"] = window
    meta = dict(
        {"source": source, **counts},
        level=level,
        line_eos=line_eos,
        vocab_size=len(vocab),
        carved=missing,
    )
    meta.update({f"num_{s}": len(enc[s]) for s in SPLITS})
    log.info(
        "data: text stream, %d types, %d/%d/%d train/valid/test tokens%s",
        counts["num_types"],
        *(counts["num_tokens"][s] for s in SPLITS),
        " (one EOS per line)" if line_eos else "",
    )
    return Corpus(
        "text", vocab, enc["train"], enc["valid"], enc["test"], None, meta, True, line_eos
    )


def _stream_symbols(body: str, level: str, line_eos: bool, unk_token: str) -> list[str]:
    """Symbols of one text file; whitespace level: `unk_token` becomes the UNK marker;
    line_eos: the last line ends with a newline too (one EOS per line)."""
    symbols = tokenize(body, level)
    if level == "whitespace":
        unk = SPECIAL_TOKENS[UNK_ID]
        symbols = [unk if s == unk_token else s for s in symbols]
    if line_eos and symbols and symbols[-1] != _NEWLINE:
        symbols.append(_NEWLINE)
    return symbols


def _join(blocks: list[list[str]]) -> list[str]:
    return [s for b in blocks for s in b]


def _consecutive_runs(blocks: list[list[str]], idx: np.ndarray) -> list[list[str]]:
    """The blocks at sorted indices `idx`, consecutive ones joined into one run."""
    runs: list[list[str]] = []
    prev = None
    for i in map(int, idx):
        if prev is not None and i == prev + 1:
            runs[-1].extend(blocks[i])
        else:
            runs.append(list(blocks[i]))
        prev = i
    return runs


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

_SPLIT_KEYS = ("valid_fraction", "test_fraction", "max_sequences", "unknown")
_VOCAB_KEYS = ("level", "min_count", "max_vocab")
# The `data.*` keys each loader reads: another key set away from its default is refused
# (`seqgen.config.check_data`), since the corpus would silently ignore it.
KEYS_READ: dict[str, tuple[str, ...]] = {
    "folk": ("collections", *_VOCAB_KEYS, *_SPLIT_KEYS),
    "text": (
        *("path", "preset", "train_path", "valid_path", "test_path", "cache_dir"),
        *_VOCAB_KEYS,
        *("line_eos", "unk_token", "window"),
        *_SPLIT_KEYS,
    ),
    "synthetic": ("num_states", "alphabet_size", "num_train", "stop_prob", *_SPLIT_KEYS),
}


def load_corpus(data_cfg: Any, seed: int) -> Corpus:
    """The corpus named by ``data_cfg.name`` ("folk" by default), split by `seed`."""
    name = str(_get(data_cfg, "name"))
    if name not in LOADERS:
        raise UserError(f"data={name} is not a corpus; allowed: {', '.join(LOADERS)}")
    return LOADERS[name](data_cfg, int(seed))


def fingerprint(corpus: Corpus) -> str:
    """sha256 of the vocabulary and the three splits (hex): a model cache key."""
    h = hashlib.sha256()
    head = {"name": corpus.name, "level": corpus.vocab.level, "symbols": corpus.vocab.symbols}
    if corpus.stream:  # windows without EOS; the model is built without an EOS output
        head.update(stream=True, line_eos=corpus.line_eos)
    h.update(json.dumps(head, ensure_ascii=False).encode())
    for split in (corpus.train, corpus.valid, corpus.test):
        lengths = np.asarray([len(s) for s in split], dtype=np.int64)
        h.update(b"|split|" + lengths.tobytes())
        for s in split:
            h.update(np.asarray(s, dtype=np.int32).tobytes())
    return h.hexdigest()
