"""Held-out openings (make_prompts) and the human row, for every corpus kind."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf

from seqgen.data.corpus import load_corpus
from seqgen.data.folk import header_length, load_tunes
from seqgen.evaluate import make_prompts
from seqgen.tokens import EOS_ID


def _cfg(**decode):
    d = {"max_len": 64, "prompts": "heldout", "num_prompts": 100, "prompt_len": 16,
         "num_samples": 1, **decode}  # fmt: skip
    return OmegaConf.create({"decode": d, "data": {"unknown": "error"}})


@pytest.mark.parametrize("level", ["char", "abc"])
def test_folk_openings_are_the_header_plus_music_of_distinct_tunes(level):
    corpus = load_corpus({"name": "folk", "level": level, "max_sequences": 300}, seed=0)
    cfg = _cfg(max_len=128, prompt_len=8)
    pr = make_prompts(cfg, corpus)
    tunes = {tuple(s.tolist()) for s in corpus.test}
    # brute force: the distinct (header + 8)-token prefixes of test tunes that leave music
    heads = [header_length(corpus.vocab.decode_symbols(s), level) for s in corpus.test]
    want = {s[: h + 8].tobytes() for s, h in zip(corpus.test, heads) if h + 8 < min(len(s), 128)}
    assert 0 < len(want) <= 100 and {p.tobytes() for p in pr.prompts} == want
    assert len(pr.prompts) == len({p.tobytes() for p in pr.prompts})  # distinct prompts
    for p, hp, c in zip(pr.prompts, pr.human_prompts, pr.human):
        symbols = corpus.vocab.decode_symbols(p)
        head = header_length(symbols, level)
        text = "".join(symbols) if level == "char" else " ".join(symbols)
        assert len(p) - head == 8  # the whole header, then 8 tokens of music
        last = symbols[head - 1] if level == "abc" else text[:head].split("\n")[-2]
        fields = symbols[:head] if level == "abc" else text[:head].split("\n")[:-1]
        assert last.startswith("K:") and all(f[:2] in ("M:", "L:", "K:") for f in fields)
        # the human row continues the same tune, cut at the generations' budget
        assert np.array_equal(p, hp)
        full = tuple(np.concatenate([p, c]).tolist())
        assert any(t[: len(full)] == full for t in tunes)
        assert len(p) + len(c) <= 128


def test_header_length_of_a_char_tune():
    tune = load_tunes(["miscFolk"], max_tunes=1)[0][0]
    head = header_length(list(tune), "char")
    assert tune[:head].rstrip("\n").split("\n")[-1].startswith("K:")
    assert tune[head - 1] == "\n" and not tune[head:].startswith(("M:", "L:", "K:"))


def test_too_few_openings_warn_once_with_how_many_and_why(caplog):
    corpus = load_corpus({"name": "synthetic", "num_train": 300}, seed=0)
    long = sum(len(s) > 16 for s in corpus.test)
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        pr = make_prompts(_cfg(), corpus)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(pr.prompts) < 100
    assert f"only {len(pr.prompts)} distinct" in warnings[0] and "longer than" in warnings[0]
    assert len(pr.prompts) <= long
    # a one-token prompt has at most one distinct value per symbol: duplicates are dropped
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        one = make_prompts(_cfg(prompt_len=1), corpus)
    assert len(one.prompts) == len({int(p[0]) for p in one.prompts}) <= 6
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


TEXT = "".join(f"Speaker {i}:\nline {i} of the play, spoken aloud.\n" for i in range(300))


@pytest.mark.parametrize("line_eos", [False, True])
def test_text_openings_start_at_line_starts_and_the_human_row_is_the_text_after(tmp_path, line_eos):
    f = tmp_path / "play.txt"
    f.write_text(TEXT)
    corpus = load_corpus(
        {"name": "text", "path": str(f), "window": 400, "line_eos": line_eos, "test_fraction": 0.3},
        seed=0,
    )
    cfg = _cfg(max_len=60, prompt_len=12, num_prompts=20)
    pr = make_prompts(cfg, corpus)
    assert len(pr.prompts) == 20
    spans = []
    for p, hp, c, ended in zip(pr.prompts, pr.human_prompts, pr.human, pr.human_ended):
        assert np.array_equal(p, hp) and EOS_ID not in p and EOS_ID not in c
        prompt = corpus.vocab.decode(p)
        cont = corpus.vocab.decode(c)
        # the prompt starts a line, and the human continuation is exactly what follows it
        start = TEXT.find("\n" + prompt + cont) + 1
        assert start > 0 or TEXT.startswith(prompt + cont)
        if line_eos:  # the continuation runs to the end of the prompt's line, then EOS
            assert ended and TEXT[start + len(prompt + cont)] == "\n"
            assert "\n" not in prompt + cont
        else:  # as long as the generations may be: max_len minus the prompt
            assert not ended and len(c) == 60 - 12
        spans.append(corpus.vocab.decode(np.concatenate([p, c])))
    assert len(set(spans)) == len(spans)  # no two openings share their text
