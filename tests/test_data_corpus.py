"""load_corpus: dispatch, config flavours, deterministic splits, fingerprints, errors."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from seqgen.data import text
from seqgen.data.corpus import Corpus, fingerprint, load_corpus, split_indices
from seqgen.data.synthetic import DPFSA
from seqgen.errors import UserError
from seqgen.tokens import NUM_SPECIAL

SYNTH = {"name": "synthetic", "num_states": 5, "alphabet_size": 4, "num_train": 90,
         "stop_prob": 0.2, "valid_fraction": 0.1, "test_fraction": 0.1}  # fmt: skip


def _all(c: Corpus) -> list[np.ndarray]:
    return c.train + c.valid + c.test


def test_config_flavours_give_the_same_corpus():
    @dataclasses.dataclass
    class Cfg:
        name: str = "synthetic"
        num_states: int = 5
        alphabet_size: int = 4
        num_train: int = 90
        stop_prob: float = 0.2
        valid_fraction: float = 0.1
        test_fraction: float = 0.1
        max_sequences: int | None = None

    prints = {
        fingerprint(load_corpus(cfg, seed=3))
        for cfg in (SYNTH, SimpleNamespace(**SYNTH), OmegaConf.create(SYNTH), Cfg())
    }
    assert len(prints) == 1
    struct = OmegaConf.structured(Cfg())  # missing fields (collections, ...) use defaults
    assert fingerprint(load_corpus(struct, seed=3)) in prints


def test_synthetic_corpus_is_the_oracles_samples():
    c = load_corpus(SYNTH, seed=3)
    assert isinstance(c.oracle, DPFSA) and c.name == "synthetic"
    assert len(c.train) == 90 and len(c.valid) == len(c.test) == 11
    assert c.vocab.symbols[NUM_SPECIAL:] == ["a", "b", "c", "d"]
    assert all(s.dtype == np.int32 for s in _all(c))
    assert all(np.isfinite(c.oracle.logprob(s)) for s in _all(c))
    assert c.meta["oracle_entropy"] == pytest.approx(c.oracle.entropy())
    capped = load_corpus(dict(SYNTH, max_sequences=20), seed=3)
    assert [len(capped.train), len(capped.valid), len(capped.test)] == [16, 2, 2]


def test_seed_decides_the_corpus():
    assert fingerprint(load_corpus(SYNTH, 3)) == fingerprint(load_corpus(SYNTH, 3))
    assert fingerprint(load_corpus(SYNTH, 3)) != fingerprint(load_corpus(SYNTH, 4))


def test_split_is_a_seeded_partition():
    tr, va, te = split_indices(100, 0.1, 0.2, seed=0)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    assert np.array_equal(split_indices(100, 0.1, 0.2, seed=0)[1], va)
    assert not np.array_equal(split_indices(100, 0.1, 0.2, seed=1)[1], va)
    assert [len(x) for x in split_indices(3, 0.01, 0.01, 0)] == [1, 1, 1]
    for bad in ((0.5, 0.5), (-0.1, 0.1), (1.0, 0.0)):
        with pytest.raises(UserError, match="allowed"):
            split_indices(10, *bad, seed=0)
    with pytest.raises(UserError, match="too few"):
        split_indices(2, 0.6, 0.3, seed=0)


@pytest.mark.parametrize("level", ["char", "abc"])
def test_folk_corpus(level):
    cfg = {"name": "folk", "level": level, "max_sequences": 40}
    c = load_corpus(cfg, seed=0)
    seqs = _all(c)
    assert len(seqs) == 40 and c.meta["level"] == level == c.vocab.level
    keys = [s.tobytes() for s in seqs]
    assert len(set(keys)) == len(keys)  # splits are disjoint (tunes differ)
    from seqgen.data.folk import load_tunes

    tunes, _ = load_tunes(max_tunes=40)
    decoded = {c.vocab.decode(s) for s in seqs}
    if level == "char":
        assert decoded == set(tunes)
    else:
        assert all(d.startswith(("M:", "L:", "K:")) for d in decoded)
    assert fingerprint(c) != fingerprint(load_corpus(dict(cfg, max_sequences=39), seed=0))


def test_folk_collections_as_a_string():
    c = load_corpus({"name": "folk", "collections": "miscFolk", "max_sequences": 5}, seed=0)
    assert c.meta["source"]["collections"] == ["miscFolk"]


def test_folk_default_is_char_level_of_the_public_collections():
    c = load_corpus(SimpleNamespace(name="folk", max_sequences=5), seed=0)
    assert c.vocab.level == "char"
    assert c.meta["source"]["collections"] == [
        "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk",
    ]  # fmt: skip


def test_text_corpus_windows(tmp_path):
    body = "".join(f"line {i}: the quick brown fox\n" for i in range(50))
    f = tmp_path / "t.txt"
    f.write_text(body, encoding="utf-8")
    c = load_corpus({"name": "text", "path": str(f), "window": 64}, seed=0)
    decoded = sorted(c.vocab.decode(s) for s in _all(c))
    assert decoded == sorted(body[i : i + 64] for i in range(0, len(body), 64))
    w = load_corpus({"name": "text", "path": str(f), "window": 8, "level": "word"}, seed=0)
    assert all(len(s) <= 8 for s in _all(w)) and "fox" in w.vocab
    capped = load_corpus({"name": "text", "path": str(f), "window": 64, "max_sequences": 5}, 0)
    assert len(_all(capped)) == 5


def test_text_preset_via_local_copy(tmp_path, monkeypatch):
    content = "tiny preset text\n" * 20
    f = tmp_path / "input.txt"
    f.write_text(content)
    digest = text.sha256_file(str(f))
    monkeypatch.setitem(text.PRESETS, "fake", text.Preset("http://127.0.0.1:9/x", "input.txt",
                                                          digest, len(content)))  # fmt: skip
    c = load_corpus({"name": "text", "preset": "fake", "path": str(f), "window": 10}, 0)
    assert c.meta["source"]["preset"] == "fake"


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"name": "wiki"}, "data=wiki is not a corpus; allowed: folk, text, synthetic"),
        ({"name": "folk", "collections": ["nope"]}, "unknown folk collection"),
        ({"name": "folk", "collections": []}, "data.collections is empty"),
        ({"name": "folk", "level": "word"}, "data.level=word is not allowed for data=folk"),
        ({"name": "text"}, "data.path=/path/to/file.txt or data.preset"),
        ({"name": "text", "path": "/nonexistent/x.txt"}, "does not exist"),
        ({"name": "text", "preset": "nope"}, "unknown text preset"),
        ({"name": "text", "path": "x", "level": "abc"}, "data.level=abc"),
        ({"name": "synthetic", "stop_prob": 1.5}, "stop_prob"),
        ({"name": "synthetic", "max_sequences": 0}, "max_sequences"),
    ],
)
def test_bad_configs_are_one_line_user_errors(cfg, match):
    with pytest.raises(UserError, match=match) as e:
        load_corpus(cfg, seed=0)
    assert "\n" not in str(e.value)


def test_empty_text_file_is_user_error(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_corpus({"name": "text", "path": str(tmp_path / "e.txt")}, 0)


def test_fingerprint_sees_every_token():
    c = load_corpus(SYNTH, seed=3)
    before = fingerprint(c)
    i = next(i for i, s in enumerate(c.test) if len(s))
    c.test[i] = c.test[i].copy()
    c.test[i][-1] = NUM_SPECIAL + (c.test[i][-1] - NUM_SPECIAL + 1) % 4
    assert fingerprint(c) != before
