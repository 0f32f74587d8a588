"""load_corpus: dispatch, config flavours, deterministic splits, fingerprints, errors."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from seqgen.config import DataConfig
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

    tunes, _ = load_tunes(DataConfig().collections, max_tunes=40)
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


def test_text_corpus_is_a_stream_split_into_line_aligned_runs(tmp_path):
    body = "".join(f"line {i}: the quick brown fox\n" for i in range(50))
    f = tmp_path / "t.txt"
    f.write_text(body, encoding="utf-8")
    c = load_corpus({"name": "text", "path": str(f), "window": 64}, seed=0)
    assert c.stream and not c.has_eos and not c.line_eos
    runs = [c.vocab.decode(s) for s in _all(c)]
    # every run is a contiguous piece of the text that starts at a line start, and the runs
    # of the three splits together are the whole text, each token exactly once
    assert all(r and (body.startswith(r) or f"\n{r}" in body) for r in runs)
    assert sum(len(s) for s in _all(c)) == len(body) == sum(c.meta["num_tokens"].values())
    assert sorted("".join(runs)) == sorted(body)
    assert c.meta["num_types"] == len(set(body)) and len(c.test) >= 1
    w = load_corpus({"name": "text", "path": str(f), "window": 8, "level": "word"}, seed=0)
    assert "fox" in w.vocab and w.vocab.level == "word"
    capped = load_corpus({"name": "text", "path": str(f), "window": 64, "max_sequences": 5}, 0)
    assert sum(len(s) for s in _all(capped)) < len(body)
    # a stream is not the sequence corpus it used to be: the model cache keys differ
    eos = load_corpus({"name": "text", "path": str(f), "window": 64, "line_eos": True}, 0)
    assert eos.has_eos and fingerprint(eos) != fingerprint(c)


def test_text_vocabulary_comes_from_the_training_split_only(tmp_path):
    (tmp_path / "tr.txt").write_text("abab\nba\n")
    (tmp_path / "te.txt").write_text("abz\nzq\n")
    c = load_corpus(
        {"name": "text", "train_path": str(tmp_path / "tr.txt"),
         "test_path": str(tmp_path / "te.txt"), "window": 2, "valid_fraction": 0.4}, 0
    )  # fmt: skip
    assert c.vocab.symbols[NUM_SPECIAL:] == ["a", "b", "\n"]
    assert c.vocab.decode(c.test[0]) == "ab<unk>\n<unk><unk>\n"
    assert c.meta["oov_tokens"]["test"] == 3 and c.meta["oov_types"]["test"] == 2
    assert c.meta["unk_tokens"]["test"] == 3 and c.meta["carved"] == ["valid"]
    # the valid split was carved out of the training file; test is the test file
    assert sum(len(s) for s in c.train + c.valid) == len("abab\nba\n")
    assert len(c.valid) >= 1


# Mikolov's PTB (ptb.{train,valid,test}.txt): one sentence per line, tokens separated by
# spaces, lines starting with a space, rare words already replaced by "<unk>". Its standard
# figures -- 10,000 types including the end-of-sentence token, 929,589 / 73,760 / 82,430
# train / valid / test tokens with one end-of-sentence token per line -- are what these
# conventions give: num_types counts <unk> as one type and EOS as one, num_tokens counts the
# words plus one EOS per line, and "mr." stays one token. Here the same counting on a corpus
# small enough to count by hand.
PTB_LIKE = {
    "train": " mr. smith said <unk> is n't here \n the cat sat on the mat \n",
    "valid": " the dog sat \n mr. <unk> said \n",
    "test": " a cat said",  # no final newline: its line still ends with EOS
}


def _ptb_like(tmp_path, **extra):
    paths = {}
    for split, body in PTB_LIKE.items():
        (tmp_path / f"ptb.{split}.txt").write_text(body)
        paths[f"{split}_path"] = str(tmp_path / f"ptb.{split}.txt")
    return load_corpus(
        {"name": "text", "level": "whitespace", "line_eos": True, **paths, **extra}, 0
    )


def test_pre_split_ptb_counting_conventions(tmp_path):
    from seqgen.data.batching import eval_batches, num_target_tokens
    from seqgen.tokens import EOS_ID, UNK_ID

    c = _ptb_like(tmp_path)
    assert c.stream and c.has_eos and c.meta["carved"] == []
    # words + one EOS per line: 7 + 1 + 6 + 1, 3 + 1 + 3 + 1, 3 + 1
    assert c.meta["num_tokens"] == {"train": 15, "valid": 8, "test": 4}
    # 11 words, <unk> and EOS; the vocabulary adds PAD and BOS, never predicted
    assert c.meta["num_types"] == 13 and len(c.vocab) == 13 + 2
    assert "mr." in c.vocab and "<unk>" not in c.vocab and "\n" not in c.vocab
    train = c.train[0]
    assert (train == EOS_ID).sum() == 2 and train[-1] == EOS_ID
    assert train[3] == UNK_ID  # the corpus's own <unk> is UNK
    assert c.vocab.decode(train[:8]) == "mr. smith said <unk> is n't here"
    # "dog" (valid) and "a" (test) are unseen: UNK, counted; PTB's own <unk> is not unseen
    assert c.meta["oov_tokens"] == {"train": 0, "valid": 1, "test": 1}
    assert c.meta["unk_tokens"] == {"train": 1, "valid": 2, "test": 1}
    # evaluation perplexity is per stream token: exactly these counts are its denominators
    for split in ("valid", "test"):
        seqs = getattr(c, split)
        n = c.meta["num_tokens"][split]
        assert num_target_tokens(seqs, stream=True) == n
        assert sum(b.mask.sum() for b in eval_batches(seqs, 2, 3, stream=True)) == n


def test_vocabulary_size_limits_count_eos_and_unk(tmp_path):
    capped = _ptb_like(tmp_path, max_vocab=10)  # 8 most frequent words + <unk> + EOS
    assert capped.meta["num_types"] == 10 and len(capped.vocab) == 10 + 2
    assert "the" in capped.vocab  # the most frequent word (twice) is kept
    rare = _ptb_like(tmp_path, min_count=2)  # only "the" occurs twice
    assert rare.vocab.symbols[NUM_SPECIAL:] == ["the"] and rare.meta["num_types"] == 3
    marker = "UNK"
    (tmp_path / "m.txt").write_text("a UNK b\nb <unk>\n")
    own = load_corpus({"name": "text", "level": "whitespace", "unk_token": marker,
                       "path": str(tmp_path / "m.txt"), "window": 100,
                       "valid_fraction": 0, "test_fraction": 0}, 0)  # fmt: skip
    assert "UNK" not in own.vocab and "<unk>" not in own.vocab  # both read as UNK
    with pytest.raises(UserError, match="max_vocab"):
        _ptb_like(tmp_path, max_vocab=2)


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
        ({"name": "text"}, "data.path=/path/to/file.txt, data.train_path=... or data.preset"),
        ({"name": "text", "path": "a", "train_path": "b"}, "allowed: one of them"),
        ({"name": "text", "path": "x", "level": "whitespace", "min_count": 0}, "min_count"),
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
