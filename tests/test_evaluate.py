"""Held-out openings (make_prompts) and the human row, for every corpus kind."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from seqgen.data.corpus import load_corpus
from seqgen.data.folk import header_length, load_tunes
from seqgen.driver import _kept_per_prompt, decoder_key, generations, sample_records
from seqgen.evaluate import human_row
from seqgen.prompts import Prompts, make_prompts
from seqgen.scoring import LoadedModel
from seqgen.tokens import EOS_ID


def _cfg(**decode):
    d = {"max_len": 64, "prompts": "heldout", "num_prompts": 100, "prompt_len": 16,
         "num_samples": 1, **decode}  # fmt: skip
    return OmegaConf.create({"decode": d, "data": {"unknown": "error"}})


@pytest.mark.parametrize("level", ["char", "abc"])
def test_folk_openings_are_the_header_plus_music_of_distinct_tunes(level):
    corpus = load_corpus({"name": "folk", "level": level, "max_sequences": 300}, seed=0)
    cfg = _cfg(max_len=128, prompt_len=8)
    pr = make_prompts(cfg.decode, corpus)
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
        pr = make_prompts(_cfg().decode, corpus)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(pr.prompts) < 100
    assert f"only {len(pr.prompts)} distinct" in warnings[0] and "longer than" in warnings[0]
    assert len(pr.prompts) <= long
    # a one-token prompt has at most one distinct value per symbol: duplicates are dropped
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        one = make_prompts(_cfg(prompt_len=1).decode, corpus)
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
    pr = make_prompts(cfg.decode, corpus)
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


# ---------------------------------------------------------------- generations, records, human row


class _Vocab:
    """Ids 4.. are the letters a, b, c, ...; decode joins them."""

    def decode(self, ids):
        return "".join(chr(ord("a") + int(i) - 4) for i in ids)


def _decode_output():
    """B = 2 prompts ([5] and none), N = 2 rows each, T = 4; hand-made log-probs."""
    tokens = np.array([[[5, 6, 7, 0], [5, 4, 0, 0]], [[6, 0, 0, 0], [7, 7, 7, 7]]], np.int32)
    lengths = np.array([[3, 2], [1, 4]], np.int32)
    lp = np.where(tokens > 0, -1.0, 0.0).astype(np.float32)
    lp[:, :, 0] = np.array([[0.0, 0.0], [-1.0, -1.0]])  # row 0's prompt position: 0
    return {
        "tokens": tokens,
        "lengths": lengths,
        "ended": np.array([[True, False], [True, False]]),
        "logprobs": lp,
        "tempered_logprobs": lp / 2,
        "eos_logprob": np.array([[-2.0, 0.0], [-3.0, 0.0]], np.float32),
        "eos_tempered_logprob": np.array([[-1.0, 0.0], [-1.5, 0.0]], np.float32),
        "scores": np.array([[-4.0, -1.0], [-4.5, -4.0]], np.float32),
    }


def test_generations_cut_each_continuation_and_keep_the_best_of_an_nbest_list():
    cfg = OmegaConf.create({"decode": {"prompts": "none", "max_len": 5}})
    prompts = [np.array([5], np.int32), np.zeros(0, np.int32)]
    corpus = type("C", (), {"vocab": _Vocab()})()
    sample = OmegaConf.create({"name": "sample"})
    gen, rec, texts = generations(cfg.decode, sample, corpus, prompts, _decode_output())
    assert [s.tolist() for s in gen.sequences] == [[6, 7], [4], [6], [7, 7, 7, 7]]
    assert [p.tolist() for p in gen.prompts] == [[5], [5], [], []]
    assert texts == ["bcd", "ba", "c", "dddd"]
    assert rec["prompt_index"] == [0, 0, 1, 1] and rec["sample_index"] == [0, 1, 0, 1]
    assert rec["score"] == [-4.0, -1.0, -4.5, -4.0]
    assert gen.best_sequences is None  # samples are not an n-best list
    rows = sample_records("s", gen, rec, texts, _Vocab())
    # sum of the continuation's log-probs, plus EOS's where it ended
    assert [r["logprob"] for r in rows] == [-4.0, -1.0, -4.0, -4.0]
    assert [r["prompt"] for r in rows] == ["b", "b", "", ""]

    beam = OmegaConf.create({"name": "beam"})
    gen, rec, texts = generations(cfg.decode, beam, corpus, prompts, _decode_output())
    assert [s.tolist() for s in gen.sequences] == [[6, 7], [6]]  # the best of each prompt
    assert [s.tolist() for s in gen.best_sequences] == [[6, 7], [6]]
    assert gen.eos_tempered_logprobs.tolist() == [-1.0, -1.5]
    assert rec["sample_index"] == [0, 0] and texts == ["bcd", "c"]


def test_kept_per_prompt_follows_the_decoder_kind():
    with_prompts = OmegaConf.create({"prompts": "heldout"})
    no_prompts = OmegaConf.create({"prompts": "none"})
    kept = lambda cfg, name: _kept_per_prompt(cfg, OmegaConf.create({"name": name}), 5)  # noqa: E731
    assert kept(no_prompts, "beam") == 1 and kept(no_prompts, "greedy") == 1
    assert kept(no_prompts, "sample") == 5 and kept(with_prompts, "sample") == 5
    assert kept(no_prompts, "stochastic_beam") == 5  # K distinct samples of one prompt
    assert kept(with_prompts, "stochastic_beam") == 1


def test_decoder_keys_differ_by_index_and_seed():
    """Every (seed, index) pair gets its own stream: a key built from seed + index, seed * index
    or seed ^ index would collide on this grid (e.g. (1, 2) and (2, 1))."""
    grid = [(s, i) for s in range(6) for i in range(6)]
    data = {tuple(np.asarray(jax.random.key_data(decoder_key(s, i))).tolist()) for s, i in grid}
    assert len(data) == len(grid)
    # the documented definition, fold_in(key(seed), index): a run with one `decoder=` uses
    # index 0, so its draws are the first decoder's of a `compare` run with the same seed
    for s, i in [(0, 0), (3, 2), (7, 5)]:
        want = jax.random.fold_in(jax.random.key(s), i)
        np.testing.assert_array_equal(
            jax.random.key_data(decoder_key(s, i)), jax.random.key_data(want)
        )


def test_human_row_under_a_uniform_model_has_perplexity_v():
    """Every token and EOS has log-prob -ln 8 under uniform logits over V = 8: gen/ppl = 8."""
    v = 8
    model = LoadedModel(
        step_fn=_uniform_step,
        params=jnp.zeros(()),
        init_carry=lambda b, max_len=None: jnp.zeros((b,)),
        vocab_size=v,
    )
    pr = Prompts(
        prompts=[np.array([4], np.int32)],
        human=[np.array([5, 6], np.int32), np.array([7], np.int32)],
        human_prompts=[np.array([4], np.int32), np.zeros(0, np.int32)],
        human_ended=[True, False],
    )
    cfg = OmegaConf.create({"decode": {"max_len": 3}})
    corpus = type("C", (), {"vocab": _Vocab()})()
    common = {"seed": 0, "oracle": None, "self_bleu_max": 10, "abc_subset": 10}
    row = human_row(cfg.decode, corpus, model, pr, common)
    m = row["metrics"]
    assert row["decoder"] == {"name": "human", "label": "human"}
    assert m["gen/ppl"] == pytest.approx(v, rel=1e-6) and m["gen/ppl_model"] == m["gen/ppl"]
    assert m["length/mean"] == 1.5 and m["length/eos_rate"] == 0.5


def _uniform_step(params, carry, tokens):
    return carry, jnp.zeros((tokens.shape[0], 8)) + params
