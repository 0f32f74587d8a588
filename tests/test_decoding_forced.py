"""Forced words (`decoding/forced.py`, `decoder=beam decoder.force=[...]`): every output meets
every set, the best is the brute-force optimum over the sequences that meet them, no set is
plain beam bit for bit, the KMP automaton finds overlapping matches, and the mistakes are one
line before any work; on an LSTM, on the Transformer and through the Python API and the run."""

from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import DecodeRequest, beam, decode, forced
from seqgen.decoding.common import prepare
from seqgen.decoding.forced import _kmp_tables, freeze
from seqgen.decoding.registry import validate_decoder
from seqgen.errors import UserError
from seqgen.tokens import EOS_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    log_softmax64,
    lstm_carry,
    lstm_params,
    lstm_step,
    markov_step,
    markov_table,
    to_numpy,
)


def contains(seq, phrase) -> bool:
    n = len(phrase)
    return any(tuple(seq[i : i + n]) == tuple(phrase) for i in range(len(seq) - n + 1))


def meets(seq, force) -> bool:
    """The definition: every set has a phrase occurring contiguously in the continuation."""
    return all(any(contains(seq, p) for p in s) for s in freeze(force))


def brute_force(table_lp, prompt, max_len, force, symbols=(4, 5, 6)):
    """Every continuation over `symbols` that meets every set (EOS-ended within the budget or
    cut at it) with its log-prob, best first."""
    budget = max_len - len(prompt)
    out = []
    for n in range(budget + 1):
        for seq in itertools.product(symbols, repeat=n):
            if not meets(seq, force):
                continue
            prev, total = (prompt[-1] if prompt else 1), 0.0
            for tok in seq:
                total += table_lp[prev, tok]
                prev = tok
            ended = n < budget
            out.append((total + (table_lp[prev, EOS_ID] if ended else 0.0), seq, ended))
    return sorted(out, key=lambda c: -c[0])


# a plain phrase; a disjunctive set beside one; overlapping phrases (456 meets both)
FORCES = [[[4, 5]], [[6, 4], [[5, 5, 5], [4]]], [[4, 5], [5, 6]]]


# the fast subset keeps the first set; the others (disjunctive, two phrases) in the full suite
@pytest.mark.parametrize(
    "force", [FORCES[0], *(pytest.param(f, marks=pytest.mark.slow) for f in FORCES[1:])]
)
def test_best_is_the_brute_force_optimum_and_every_output_meets_every_set(force):
    """A beam wide enough (K = 16 on 3 symbols): the best output is the best of all sequences
    that meet every set; every returned row meets them and scores its own log-prob."""
    v, max_len = 7, 5
    table = markov_table(v, 7)
    lp = log_softmax64(table)
    prompts, plens = np.array([[4, 5], [6, 0], [0, 0]], np.int32), np.array([2, 1, 0], np.int32)
    cfg = {"name": "beam", "beam_size": 16, "force": force}
    args = (markov_step, jnp.asarray(table), jnp.zeros(3), prompts, plens)
    out = to_numpy(beam(DecodeRequest(*args, max_len=max_len, vocab_size=v, cfg=cfg)))
    for i, plen in enumerate(plens):
        prompt = prompts[i, :plen].tolist()
        cands = brute_force(lp, prompt, max_len, force)
        np.testing.assert_allclose(out.scores[i, 0], cands[0][0], rtol=1e-5)
        assert tuple(out.tokens[i, 0, plen : out.lengths[i, 0]]) == cands[0][1]
        score_of = {(seq, ended): s for s, seq, ended in cands}
        for k in np.flatnonzero(np.isfinite(out.scores[i])):
            seq = tuple(out.tokens[i, k, plen : out.lengths[i, k]].tolist())
            assert meets(seq, force)
            if out.scores[i, k] > -1e6:  # not through the masked PAD / BOS / UNK
                want = score_of[(seq, bool(out.ended[i, k]))]
                np.testing.assert_allclose(out.scores[i, k], want, rtol=1e-5)


def test_lstm_outputs_meet_every_set_and_no_set_is_plain_beam_bit_for_bit():
    """On an LSTM (its carry gathered per step), prompts of 3, 1, 0 tokens, K = 4: every
    returned row meets a disjunctive set and two overlapping phrases, ended rows included;
    the forced program with no set returns plain beam's every output bit for bit."""
    v, max_len = 9, 12
    params = lstm_params(v, eos_bias=3.0)
    force = [[[7, 8], [6, 6]], [4, 5], [5, 4]]
    req = DecodeRequest(lstm_step, params, lstm_carry(3), PROMPTS, PROMPT_LENGTHS,
                        max_len=max_len, vocab_size=v,
                        cfg={"name": "beam", "beam_size": 4, "force": force})  # fmt: skip
    out = to_numpy(beam(req))
    assert out.ended.any()
    for i, plen in enumerate(PROMPT_LENGTHS):
        assert np.isfinite(out.scores[i, 0])
        for k in np.flatnonzero(np.isfinite(out.scores[i])):
            assert meets(out.tokens[i, k, plen : out.lengths[i, k]].tolist(), force)
    cfg = {"name": "beam", "beam_size": 4, "length_penalty": "average", "min_length": 2}
    plain = dataclasses.replace(req, cfg=cfg)
    want = to_numpy(beam(plain))
    got = to_numpy(forced.run(plain, prepare(plain, keyed=False), ()))
    for f in dataclasses.fields(want):
        a = getattr(want, f.name)
        if a is not None:
            np.testing.assert_array_equal(getattr(got, f.name), a, err_msg=f.name)


def test_the_automaton_finds_overlapping_matches():
    """The KMP tables the program runs: after each token, a phrase's state is the longest
    suffix of the sequence that is a prefix of it, and it reaches the phrase's length exactly
    where the phrase occurs: `aab` in `aaab`, `abab` twice in `ababab` (a matcher that restarts
    from 0 on a mismatch misses the first)."""
    phrases = ((4, 4, 5), (4, 5, 4, 5), (5,))
    tabs = _kmp_tables(tuple((p,) for p in phrases), 7)
    for n in range(1, 8):
        for seq in itertools.product((4, 5), repeat=n):
            for i, p in enumerate(phrases):
                state, seen = 0, False
                for t, tok in enumerate(seq):
                    state = int(tabs["delta"][i, state, tok])
                    ends = [
                        m for m in range(min(len(p), t + 1) + 1) if seq[t + 1 - m : t + 1] == p[:m]
                    ]
                    longest = max(ends)
                    assert state == longest  # also right after a complete match
                    seen |= state == len(p)
                assert seen == contains(seq, p)


def test_mistakes_are_one_line_before_any_work():
    """Refused before any compile: a bad entry, force with a decoder that does not read it
    (the line names beam), a set too long for the continuation, force beside a constraint."""
    from seqgen.decoding.constraint import make_constraint

    table = jnp.asarray(markov_table(9, 0))

    def run(cfg, **kw):
        req = dict(max_len=4, vocab_size=9, cfg={"name": "beam", **cfg}, **kw)
        return decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, **req)

    with pytest.raises(UserError, match=r"decoder\.force=\[9\]; allowed: .*< 9"):
        run({"force": [[9]]})
    with pytest.raises(UserError, match=r"decoder\.force is not supported by decoder "
                       r"diverse_beam; allowed: beam"):  # fmt: skip
        run({"name": "diverse_beam", "force": [[4]]})
    with pytest.raises(UserError, match=r"allowed: beam"):
        validate_decoder({"name": "sample", "force": ["ab"]}, "compare[1]")
    with pytest.raises(UserError, match=r"\[\[4, 5\], \[5, 6\]\] is 2 tokens, more than the 1 "):
        run({"force": [[4], [[4, 5], [5, 6]]]})  # the 3-token prompt leaves 1
    with pytest.raises(UserError, match="decoder.force=\\[\\] with a constraint"):
        run({"force": [[4]]}, constraint=make_constraint(np.zeros((1, 9)), [True], 0))
    with pytest.raises(UserError, match="is text; decode\\(\\) takes token ids"):
        run({"force": ["ab"]})


@pytest.mark.slow  # several compiles: the full suite runs it
def test_transformer_best_is_the_brute_force_optimum():
    """On the Transformer (its KV cache gathered per step): a disjunctive set, K = 16 on its
    3 symbols; the best output is the best sequence that meets the set (its forward pass)."""
    from tests.test_models_transformer import MAX_LEN, PLENS, _brute_force, _model, _run
    from tests.test_models_transformer import PROMPTS as T_PROMPTS

    model = _model(positions="rope", num_layers=1)
    force = [[[4, 3], [5, 5]]]
    out = _run(model, {"name": "beam", "beam_size": 16, "force": force})
    for i, plen in enumerate(PLENS):
        prompt = T_PROMPTS[i, :plen].tolist()
        cands = [c for c in _brute_force(model, prompt, MAX_LEN) if meets(c[1], force)]
        np.testing.assert_allclose(out.scores[i, 0], cands[0][0], rtol=1e-5, atol=1e-5)
        assert out.tokens[i, 0, plen : out.lengths[i, 0]].tolist() == cands[0][1]
        for k in np.flatnonzero(np.isfinite(out.scores[i])):
            assert meets(out.tokens[i, k, plen : out.lengths[i, k]].tolist(), force)


def test_run_and_python_api_take_text_phrases(tmp_path, cache_dir):
    """`decoder=beam decoder.force=[fb,[ea,bc]]` as the command composes it (texts, a
    disjunctive set), and `Model.generate(decoder="beam", force=[...])`: every continuation
    meets both sets; an unknown symbol and a phrase longer than max_len are one line."""
    import json

    import seqgen
    from tests.conftest import TINY

    force = ["decoder=beam", "decoder.beam_size=3", "decoder.force=[fb,[ea,bc]]"]
    seqgen.run([*TINY, "model=oracle", *force, "decode.prompts=[a,af]"], out_dir=tmp_path)
    rows = [json.loads(r) for r in (tmp_path / "samples.jsonl").read_text().splitlines()]
    model = seqgen.load(tmp_path)
    out = model.generate(["a", "af"], decoder="beam", beam_size=3, force=["fb", ["ea", "bc"]])
    texts = [r["text"][len(r["prompt"]) :] for r in rows] + list(out.continuations)
    assert len(texts) == 4 and list(map(int, out.token_ids[0])) == rows[0]["token_ids"]
    for text in texts:
        assert "fb" in text and ("ea" in text or "bc" in text)
    with pytest.raises(UserError, match="decoder.force: 'fz' has 'z', not in the"):
        model.generate("ab", decoder="beam", force=["fz"])
    with pytest.raises(UserError, match="'abcdefabcdefabcdefab' is 20 tokens, more than the 16"):
        seqgen.run([*TINY, "model=oracle", "decoder=beam", "decoder.force=[abcdefabcdefabcdefab]"])


def test_a_forced_beam_is_not_held_to_the_mode():
    """`search/beam_error` compares mode-search decoders with exact search's mode; a forced
    beam searches only the sequences with its phrases, so it is left out (plain beam is not)."""
    from seqgen.decoding.registry import searches_mode

    assert searches_mode({"name": "beam"}) and searches_mode({"name": "beam", "force": []})
    assert not searches_mode({"name": "beam", "force": [[4]]})


@pytest.mark.slow  # several compiles: the full suite runs it
def test_every_loop_variant_gives_the_same_forced_outputs():
    """`decode.loop` scan, masked and while: the forced search's outputs bit for bit (the
    constraint state is frozen with the rest of a done row)."""
    v = 7
    table = jnp.asarray(markov_table(v, 3))
    cfg = {"name": "beam", "beam_size": 3, "force": [[[4, 5], [6]], [5, 5]]}
    prompts, plens = np.array([[4, 5], [6, 0], [0, 0]]), np.array([2, 1, 0])
    args = (markov_step, table, jnp.zeros(3), prompts, plens)
    outs = [
        to_numpy(decode(*args, max_len=8, vocab_size=v, cfg=cfg, loop=loop))
        for loop in ("scan", "masked", "while")
    ]
    assert np.isfinite(outs[0].scores[:, 0]).all()
    for out in outs[1:]:
        for f in dataclasses.fields(out):
            if getattr(out, f.name) is not None:
                np.testing.assert_array_equal(getattr(out, f.name), getattr(outs[0], f.name))
