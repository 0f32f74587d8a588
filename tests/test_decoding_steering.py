"""Stopping and steering (`decoding/steering.py`): no output contains a banned sequence or runs
past a stop sequence, a stop ends a row as EOS does, a biased token's frequency moves as
exp(bias) predicts, texts are tokenized with the run's vocabulary, beams refuse the knobs."""

from __future__ import annotations

from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from seqgen.data.vocab import Vocab
from seqgen.decoding import DecodeRequest, decode, sample
from seqgen.decoding.steering import resolve
from seqgen.errors import UserError
from seqgen.tokens import EOS_ID, PAD_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    brute_force_logprob,
    log_softmax64,
    markov_step,
    markov_table,
    to_numpy,
)

V = 9
TABLE = markov_table(V, 3, scale=1.0)


def _run(name: str, n: int = 64, max_len: int = 12, decode_kw: dict | None = None, **knobs):
    """Decode the Markov model from PROMPTS with decoder `name` and its `knobs`."""
    return to_numpy(
        decode(
            markov_step,
            jnp.asarray(TABLE),
            jnp.zeros(3),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=NS(name=name, **knobs),
            max_len=max_len,
            num_samples=n,
            key=5,
            vocab_size=V,
            **(decode_kw or {}),
        )
    )


def _rows(out):
    """(prompt, continuation, row index) of every row."""
    for b in range(out.tokens.shape[0]):
        p = int(out.prompt_lengths[b])
        for i in range(out.tokens.shape[1]):
            yield out.tokens[b, i, :p].tolist(), out.tokens[b, i, p : out.lengths[b, i]].tolist()


def _ends_inside(seq: list[int], pattern: list[int], first: int) -> bool:
    """pattern occurs in seq ending at a position >= first."""
    m = len(pattern)
    return any(seq[j - m + 1 : j + 1] == pattern for j in range(max(first, m - 1), len(seq)))


BANNED = [[6], [4, 5], [5, 7, 4]]


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("sample", {}),
        pytest.param("sample", {"top_k": 4, "temperature": 1.5}, marks=pytest.mark.slow),
        ("greedy", {}),
    ],
)
def test_no_output_contains_a_banned_sequence(name, knobs):
    out = _run(name, bad_words=BANNED, **knobs)
    free = _run(name, **knobs)
    for banned in BANNED:
        # the ban bites: without it, the sequence occurs (greedy: at least the single token)
        seen = any(_ends_inside(p + c, banned, len(p)) for p, c in _rows(free))
        assert seen or name == "greedy", banned
        for p, c in _rows(out):
            assert not _ends_inside(p + c, banned, len(p)), (banned, p, c)


@pytest.mark.parametrize("name", ["sample", "greedy"])
def test_no_output_continues_past_a_stop_sequence_and_it_ends_as_eos(name):
    stops = [[4, 5], [7]] if name == "sample" else [[5]]
    kept = _run(name, stop=stops, include_stop=True)
    cut = _run(name, stop=stops, include_stop=False)
    lp = log_softmax64(TABLE)
    hits = 0
    for b, ((p, c), (_, c_cut)) in enumerate(zip(_rows(kept), _rows(cut))):
        bi, i = divmod(b, kept.tokens.shape[1])
        # a stop sequence occurs only as the continuation's last tokens
        for s in stops:
            assert not _ends_inside(c[:-1], s, 0), (s, c)
        m = max((len(s) for s in stops if c[-len(s) :] == s), default=0)
        assert bool(kept.stopped[bi, i]) == (m > 0)
        if m == 0:
            assert c_cut == c
            continue
        hits += 1
        assert kept.ended[bi, i] and cut.ended[bi, i] and cut.stopped[bi, i]
        assert c_cut == c[:-m]  # the same draws, the stop cut
        assert kept.eos_logprob[bi, i] == 0.0 and cut.eos_logprob[bi, i] == 0.0
        assert (cut.tokens[bi, i, cut.lengths[bi, i] :] == PAD_ID).all()
        assert (kept.tokens[bi, i, kept.lengths[bi, i] :] == PAD_ID).all()
        for out, cont in ((kept, c), (cut, c_cut)):  # the score is the returned sequence's
            want = brute_force_logprob(lp, p, cont, False)
            np.testing.assert_allclose(out.scores[bi, i], want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out.logprobs[bi, i].sum(), want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(
                out.processed_logprobs[bi, i, out.lengths[bi, i] :], 0.0, atol=0
            )
    assert hits > 0


def _first_token_counts(out) -> np.ndarray:
    return np.bincount(out.tokens[0, :, 0], minlength=V)


def test_bias_moves_frequencies_as_exp_bias_predicts():
    n = 4000
    bias = {4: 1.5, 5: -1.0, 7: 0.7}
    seq_bias = [[[4, 6], 2.0]]  # 6 after 4 only

    def first(prompt: list[int], **knobs):
        out = sample(
            DecodeRequest(
                markov_step,
                jnp.asarray(TABLE),
                jnp.zeros(1),
                np.array([prompt or [0]], np.int32),
                np.array([len(prompt)], np.int32),
                max_len=len(prompt) + 1,
                vocab_size=V,
                key=9,
                num_samples=n,
                cfg=NS(**knobs),
            )
        )
        out = to_numpy(out)
        toks = np.where(out.ended[0], EOS_ID, out.tokens[0, :, len(prompt)])
        return np.bincount(toks, minlength=V)

    def check(counts: np.ndarray, logits: np.ndarray, off: np.ndarray) -> None:
        p = np.exp(log_softmax64(logits))
        ok = p > 1e-12
        assert stats.chisquare(counts[ok], p[ok] * n).pvalue > 1e-3, (counts, p * n)
        q = np.exp(log_softmax64(off))  # the unbiased distribution is rejected
        assert stats.chisquare(counts[ok], q[ok] * n / q[ok].sum()).pvalue < 1e-6

    b = np.zeros(V)
    for k, x in bias.items():
        b[k] = x
    check(first([], logit_bias=bias), TABLE[1] + b, TABLE[1])
    sb = np.zeros(V)
    sb[6] = 2.0
    check(first([4], sequence_bias=seq_bias), TABLE[4] + sb, TABLE[4])
    after5 = first([5], sequence_bias=seq_bias)  # no prefix match: the model's own
    p5 = np.exp(log_softmax64(TABLE[5]))
    ok = p5 > 1e-12
    assert stats.chisquare(after5[ok], p5[ok] * n).pvalue > 1e-3


def test_allowed_tokens_only():
    out = _run("sample", allowed_tokens=[4, 7])
    for _, c in _rows(out):
        assert set(c) <= {4, 7}
    assert any(c for _, c in _rows(out))


def test_text_is_tokenized_with_the_vocabulary_and_unknown_symbols_are_named():
    vocab = Vocab.build(["abc ab"], "char")
    dec = {"name": "sample", "stop": ["ab"], "bad_words": [[5], "c"], "logit_bias": {"a": 1.0}}
    got = resolve(dec, vocab)
    assert got["stop"] == [vocab.encode("ab")] and got["bad_words"] == [[5], vocab.encode("c")]
    assert got["logit_bias"] == {vocab.id_of("a"): 1.0}
    from omegaconf import DictConfig, OmegaConf

    from seqgen.config import DecoderConfig

    typed = OmegaConf.merge(OmegaConf.structured(DecoderConfig), dec)  # as the pipeline has it
    got = resolve(typed, vocab)
    assert isinstance(got, DictConfig) and got.logit_bias == {vocab.id_of("a"): 1.0}
    assert resolve(OmegaConf.structured(DecoderConfig), vocab).stop == []  # nothing to resolve
    with pytest.raises(UserError, match="'z', not in the"):
        resolve({"stop": ["az"]}, vocab)
    with pytest.raises(UserError, match="allowed_tokens: 'ab' is 2 tokens"):
        resolve({"allowed_tokens": ["ab"]}, vocab)


@pytest.mark.parametrize(
    "knobs, msg",
    [
        ({"name": "beam", "stop": [[4]]}, "decoder.stop is not supported by decoder beam"),
        ({"name": "beam", "bad_words": [[4]]}, "bad_words is not supported by decoder beam"),
        ({"stop": ["ab"]}, "is text; decode\\(\\) takes token ids"),
        ({"bad_words": [[4, 99]]}, "non-empty list of token ids < 9"),
        ({"logit_bias": {4: "x"}}, "bias 'x' of 4 is not a number"),
        ({"allowed_tokens": [[4, 5]]}, "single tokens"),
    ],
)
def test_mistakes_are_one_line_before_any_compile(knobs, msg):
    with pytest.raises(UserError, match=msg):
        _run(knobs.pop("name", "sample"), **knobs)


# ---------------------------------------------------------------- log-probs (decode(logprobs=K))


def test_processed_logprobs_are_the_sampled_distribution():
    n, v = 4000, 9
    knobs = NS(temperature=0.7, top_k=4)
    out = to_numpy(
        decode(
            markov_step,
            jnp.asarray(TABLE),
            jnp.zeros(1),
            cfg=knobs,
            max_len=1,
            num_samples=n,
            key=3,
            vocab_size=v,
            logprobs=v,
            logprobs_mode="processed",
        )
    )
    ids, lps = out.top_ids[0, 0, 0], out.top_logprobs[0, 0, 0]  # [V] step 0 of row 0
    assert (out.top_ids[0, :, 0] == ids).all()  # every row saw the same distribution
    # the processed distribution by hand: top-4 of softmax(x / 0.7)
    x = TABLE[1] / 0.7
    keep = np.argsort(-x)[:4]
    want = np.full(v, -np.inf)
    want[keep] = log_softmax64(x[keep])
    np.testing.assert_allclose(lps, want[ids], rtol=1e-5)
    first = np.where(out.ended[0], EOS_ID, out.tokens[0, :, 0])
    counts = np.bincount(first, minlength=v)
    p = np.zeros(v)
    p[ids] = np.exp(lps)
    ok = p > 0
    assert counts[~ok].sum() == 0
    assert stats.chisquare(counts[ok], p[ok] * n).pvalue > 1e-3, (counts, p * n)
    # the sampled token's processed log-prob is its entry in the top list
    sampled = np.where(out.ended[0], out.eos_processed_logprob[0], out.processed_logprobs[0, :, 0])
    np.testing.assert_allclose(sampled, want[first], rtol=1e-5)


def test_raw_logprobs_equal_teacher_forced_scoring():
    from tests.helpers_decoding import lstm_carry, lstm_params, lstm_step

    params, k = lstm_params(), 3
    out = to_numpy(
        decode(
            lstm_step,
            params,
            lstm_carry(3),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=NS(name="sample", temperature=1.3, top_k=3),
            max_len=6,
            num_samples=2,
            key=1,
            vocab_size=9,
            logprobs=k,
        )
    )
    for b in range(3):
        for i in range(2):
            carry, last = lstm_carry(1), jnp.asarray([1])  # BOS
            ended_at = out.lengths[b, i] if out.ended[b, i] else None
            for t in range(6):
                carry, logits = lstm_step(params, carry, last)  # teacher forcing
                lp = log_softmax64(np.asarray(logits[0]))
                if t >= out.prompt_lengths[b] and (t <= (ended_at or 5)) and t < 6:
                    if t < out.lengths[b, i] or t == ended_at:
                        top = np.argsort(-lp, kind="stable")[:k]
                        np.testing.assert_allclose(out.top_logprobs[b, i, t], lp[top], atol=1e-5)
                        np.testing.assert_array_equal(np.sort(out.top_ids[b, i, t]), np.sort(top))
                tok = EOS_ID if t == ended_at else int(out.tokens[b, i, t])
                if tok == EOS_ID or (t >= out.lengths[b, i] and ended_at is None):
                    break
                last = jnp.asarray([tok])


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"logprobs": 10}, "decode.logprobs=10 is out of range"),
        ({"logprobs_mode": "final"}, "logprobs_mode='final' is unknown"),
        ({"logprobs": 2, "name": "beam"}, "not supported by decoder beam"),
    ],
)
def test_logprobs_mistakes_are_one_line(kw, msg):
    name = kw.pop("name", "sample")
    with pytest.raises(UserError, match=msg):
        _run(name, max_len=2, decode_kw=kw)


def test_prompt_logprobs_equal_teacher_forced_scoring():
    out = _run("greedy", max_len=5, decode_kw={"prompt_logprobs": True})
    lp = log_softmax64(TABLE)
    for b, p in enumerate(PROMPTS):
        prompt = p[: PROMPT_LENGTHS[b]].tolist()
        want = [lp[prev, tok] for prev, tok in zip([1, *prompt], prompt)]  # BOS first
        np.testing.assert_allclose(out.prompt_logprobs[b, : len(prompt)], want, rtol=1e-5)
        assert (out.prompt_logprobs[b, len(prompt) :] == 0).all()
