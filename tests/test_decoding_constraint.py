"""Automaton constraints: outputs obey the automaton (checked by `re` and by music21's bar
check), beam search over the constrained set equals brute force, the removed mass is the
hand-computed one, and mistakes are one UserError."""

from __future__ import annotations

import itertools
import math
import re

import jax
import numpy as np
import pytest
from conftest import compose

from seqgen.config import validate_config
from seqgen.decoding import decode
from seqgen.decoding.regex import regex_constraint
from seqgen.errors import UserError
from seqgen.metrics import Generations, compute
from seqgen.tokens import BOS_ID, EOS_ID, SPECIAL_TOKENS

SYMS = [*SPECIAL_TOKENS, "a", "b", "1"]
V = len(SYMS)
W = np.asarray(jax.random.normal(jax.random.key(0), (V, V)), np.float32) * 2.0


def bigram(params, carry, tok):
    return carry, params[tok]


def text(out, b, n):
    return "".join(SYMS[t] for t in np.asarray(out.tokens[b, n, : int(out.lengths[b, n])]))


def run(name, constraint, max_len=8, prompts=None, plen=None, **knobs):
    cfg = {"name": name, "beam_size": 4, **knobs}
    return decode(
        bigram,
        W,
        np.zeros((2, 1)),
        prompts,
        plen,
        cfg=cfg,
        max_len=max_len,
        num_samples=16,
        key=3,
        vocab_size=V,
        constraint=constraint,
    )


PATTERN = "(ab|ba1*)+"  # what may follow a or b depends on the history: a state to gather


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, knobs",
    [
        ("sample", {"top_p": 0.9}),
        ("greedy", {}),
        ("beam", {}),
        ("stochastic_beam", {}),
        ("diverse_beam", {"num_groups": 2, "diversity_penalty": 1.0}),
    ],
)
def test_regex_outputs_match(name, knobs):
    con = regex_constraint(PATTERN, SYMS)
    prompts = np.array([[4, 0], [5, 4]])  # "a", "ba": forced through the automaton
    out = run(name, con, prompts=prompts, plen=np.array([1, 2]), **knobs)
    prefix = re.compile(r"((ab|ba1*)*(a|b|ba1*))?")  # the valid prefixes, written by hand
    ended = 0
    for b in range(2):
        for n in range(out.tokens.shape[1]):
            if not np.isfinite(out.scores[b, n]):
                continue
            s = text(out, b, n)
            assert s.startswith(("a", "ba")[b])
            if out.ended[b, n]:
                ended += 1
                assert re.fullmatch(PATTERN, s), (name, s)
            else:
                assert prefix.fullmatch(s) or re.fullmatch(PATTERN, s), (name, s)
    assert ended > 0 or name == "greedy"  # this model's greedy path loops (b a 1 1 ...)


def test_beam_equals_brute_force_over_the_constrained_set():
    pattern, max_len = "a(b|1)*a", 5
    con = regex_constraint(pattern, SYMS)
    out = run("beam", con, max_len=max_len, beam_size=16)
    logp = np.asarray(jax.nn.log_softmax(W, axis=-1), np.float64)

    def score(s, eos):
        ids = [BOS_ID] + [SYMS.index(c) for c in s] + ([EOS_ID] if eos else [])
        return sum(logp[x, y] for x, y in zip(ids, ids[1:]))

    cands = []  # EOS takes a position: ended sequences have < max_len tokens, cut ones max_len
    for n in range(1, max_len + 1):
        for s in map("".join, itertools.product("ab1", repeat=n)):
            if n < max_len and re.fullmatch(pattern, s):
                cands.append(score(s, True))
            elif n == max_len and any(re.fullmatch(pattern, s + t) for t in ("", "a")):
                cands.append(score(s, False))  # cut, still a prefix of the language
    best = np.sort(cands)[::-1][:16]
    got = np.asarray(out.scores[0])
    np.testing.assert_allclose(got[np.isfinite(got)], best, rtol=1e-5)
    for n in range(16):
        assert re.fullmatch(pattern, text(out, 0, n)) or not out.ended[0, n]


def test_removed_mass_is_the_hand_computed_one():
    con = regex_constraint("1[ab]", SYMS)  # first token must be 1, then a or b, then EOS
    out = run("sample", con, max_len=4)
    p = np.exp(np.asarray(jax.nn.log_softmax(W, axis=-1), np.float64))
    second = SYMS.index(text(out, 0, 0)[1])
    expect = [math.log(p[BOS_ID, 6]), math.log(p[6, 4] + p[6, 5]), math.log(p[second, EOS_ID])]
    np.testing.assert_allclose(np.asarray(out.constraint_logmass[0, 0, :3]), expect, rtol=1e-5)
    assert np.all(np.asarray(out.constraint_logmass[0, 0, 3:]) == 0)
    # 1 - .5 * .8 = .6 and 0 removed; per step (.5 + .2) / 2 and 0
    m = compute(Generations([[5], []], constraint_logmass=[np.log([0.5, 0.8]), np.log([1.0])]))
    assert m["constraint/mass_removed"] == pytest.approx(((1 - 0.4) + 0) / 2)
    assert m["constraint/step_mass_removed"] == pytest.approx(((0.5 + 0.2) / 2 + 0) / 2)


def test_constraint_mistakes_are_user_errors():
    con = regex_constraint("ab", SYMS)
    with pytest.raises(UserError, match="prompt 1 is rejected.*position 0"):
        run("sample", con, prompts=np.array([[4], [5]]))
    with pytest.raises(UserError, match="exact is not supported"):
        run("exact", con)
    with pytest.raises(UserError, match="cannot be compiled"):
        regex_constraint("(a", SYMS)
    with pytest.raises(UserError, match="accepts no sequence"):
        regex_constraint("c", SYMS)
    with pytest.raises(UserError, match="constraint.pattern"):
        validate_config(compose(["constraint=regex"]))
    with pytest.raises(UserError, match="data.level=abc"):
        validate_config(compose(["constraint=meter"]))


@pytest.mark.slow
def test_meter_tunes_sampled_from_a_random_model_keep_time():
    from seqgen.data.abc_tokens import join_abc
    from seqgen.data.corpus import load_corpus
    from seqgen.data.meter import duration, meter_constraint
    from seqgen.metrics.abc import bars_ok, parse_abc

    assert duration("", "", "") == 1 and duration("3", "/", "") == pytest.approx(1.5)
    assert duration("", "//", "") == pytest.approx(0.25) and duration("3", "/", "4") == 0.75
    corpus = load_corpus({"name": "folk", "level": "abc", "max_sequences": 40}, seed=0)
    syms = corpus.vocab.symbols
    prompts = []
    for seq in corpus.train[:3]:
        k = next(j for j, t in enumerate(seq) if syms[int(t)].startswith("K:"))
        prompts.append(seq[: k + 1])
    con = meter_constraint(syms, prompts)
    v = len(syms)
    w = np.asarray(jax.random.normal(jax.random.key(1), (v, v)), np.float32)
    width = max(len(p) for p in prompts)
    arr = np.zeros((3, width), np.int32)
    for i, p in enumerate(prompts):
        arr[i, : len(p)] = p
    out = decode(
        bigram,
        w,
        np.zeros((3, 1)),
        arr,
        np.array([len(p) for p in prompts]),
        cfg={"name": "sample", "min_length": 40},
        max_len=100,
        num_samples=6,
        key=0,
        vocab_size=v,
        constraint=con,
    )
    checked = 0
    for b in range(3):
        for n in range(6):
            toks = np.asarray(out.tokens[b, n, : int(out.lengths[b, n])])
            score = parse_abc(join_abc([syms[int(t)] for t in toks]))
            if score is not None and bars_ok(score) is not None:
                checked += 1
                assert bars_ok(score), join_abc([syms[int(t)] for t in toks])
    assert checked >= 9


@pytest.mark.slow
def test_the_pipeline_decodes_under_the_constraint_and_reports_the_mass(cache_dir, tmp_path):
    import json

    from conftest import TINY

    from seqgen.experiment import run_experiment

    overrides = [
        *TINY,
        "compare=[{name:sample},{name:beam,beam_size:3}]",
        "constraint=regex",
        "constraint.pattern='(ab|c)+'",
    ]
    res = run_experiment(compose(overrides), out_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {r["decoder"] for r in rows} == {"sample", "beam(beam_size=3)"}
    for r in rows:  # ended ones match; the rest were cut at max_len inside the language
        assert re.fullmatch("(ab|c)*a?", r["text"]), r["text"]
    assert any(re.fullmatch("(ab|c)+", r["text"]) for r in rows)
    for result in res["results"][:2]:
        removed = result["metrics"]["constraint/mass_removed"]
        assert 0 < removed <= 1
        assert 0 < result["metrics"]["constraint/step_mass_removed"] <= removed
