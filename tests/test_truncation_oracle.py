"""oracle/trunc_precision, oracle/trunc_recall, oracle/off_support_rate (metrics/truncation.py)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.data.synthetic import DPFSA
from seqgen.decoding import decode
from seqgen.metrics import Generations, compute, decode_output_inputs
from seqgen.metrics.truncation import kept_sets
from seqgen.scoring import LoadedModel, step_logits
from seqgen.tokens import EOS_ID, NUM_SPECIAL, UNK_ID

A, B, C = NUM_SPECIAL, NUM_SPECIAL + 1, NUM_SPECIAL + 2
V = NUM_SPECIAL + 3
# state 0: a -> 1 (.5), b -> 0 (.3), c never, stop .2
# state 1: a never, b -> 0 (.4), c -> 0 (.2), stop .4   (3 true next tokens in each state)
ORACLE = DPFSA(
    np.array([[1, 0, 0], [1, 0, 0]]),
    np.array([[0.5, 0.3, 0.0], [0.0, 0.4, 0.2]]),
    np.array([0.2, 0.4]),
)


def _rows(*kept: tuple[int, ...]) -> np.ndarray:
    """Logits [steps, V]: 5 on each step's listed tokens, 0 elsewhere (top-2 keeps them)."""
    out = np.zeros((len(kept), V), np.float32)
    for j, toks in enumerate(kept):
        out[j, list(toks)] = 5.0
    return out


def test_hand_built_logits_give_hand_computed_precision_recall_and_exits():
    prompts = [[], [A], [UNK_ID]]
    seqs, ended = [[A, C], [A], [B]], [True, False, False]
    logits = [
        _rows((A, C), (B, C), (EOS_ID, A)),  # states 0, 1, 0; the last step chose EOS
        _rows((A, EOS_ID)),  # state 1 (after the prompt [a]); a is impossible there
        _rows((B, C)),  # impossible prompt: left out
    ]
    got = compute(
        Generations(
            seqs,
            ended=ended,
            prompts=prompts,
            oracle=ORACLE,
            decoder={"name": "sample", "top_k": 2},
            step_logits=lambda p, s, e: logits,
        )
    )
    # precision per step: 1/2, 2/2, 2/2, 1/2; recall: .5, .4 + .2, .2 + .5, .4
    assert got["oracle/trunc_precision"] == pytest.approx(0.75, rel=1e-12)
    assert got["oracle/trunc_recall"] == pytest.approx((0.5 + 0.6 + 0.7 + 0.4) / 4, rel=1e-12)
    assert got["oracle/off_support_rate"] == 0.5  # the second left the support, the first not


def test_kept_sets_are_the_processor_tables_not_a_copy():
    # min_p 0.5 after temperature 1: keeps tokens with p >= .5 * p_max
    logits = [np.log(np.array([[0.05, 0.05, 0.4, 0.3, 0.15, 0.05, 0.0]], np.float32) + 1e-12)]
    kept = kept_sets({"name": "sample", "min_p": 0.5}, logits)
    assert kept[0].tolist() == [[False, False, True, True, False, False, False]]


def _sample(model: LoadedModel, dec: dict, prompts, lengths, *, max_len: int, n: int) -> dict:
    """`Generations` fields (no `best_*`) of `decode` with sampler `dec` on `model`."""
    b = 1 if prompts is None else len(prompts)
    out = decode(
        model.step_fn,
        model.params,
        model.init_carry(b),
        prompts,
        None if lengths is None else np.array(lengths, np.int32),
        cfg=dec,
        max_len=max_len,
        num_samples=n,
        key=jax.random.key(0),
        vocab_size=V,
    )
    out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    out = {k: np.asarray(v) for k, v in out.items() if v is not None}
    out["prompt_lengths"] = np.zeros(b, np.int32) if lengths is None else np.array(lengths)
    fields = decode_output_inputs(out)
    return {k: v for k, v in fields.items() if not k.startswith("best_")}


def test_top_k_of_the_support_size_on_the_oracle_itself_is_exact():
    """A model equal to the oracle, truncated to k = |support| (3 in every state): it keeps
    exactly the support, so precision = recall = 1 and no sequence leaves it."""
    model = LoadedModel(ORACLE.step_fn, ORACLE.params(), ORACLE.init_carry, V)
    dec = {"name": "sample", "top_k": 3}
    fields = _sample(model, dec, np.array([[0], [A]], np.int32), [0, 1], max_len=8, n=4)
    gen = Generations(
        **fields, oracle=ORACLE, decoder=dec, step_logits=functools.partial(step_logits, model)
    )
    got = compute(gen)
    assert sum(len(s) for s in gen.sequences) > 0
    assert got["oracle/trunc_precision"] == 1.0
    assert got["oracle/trunc_recall"] == pytest.approx(1.0, rel=1e-6)
    assert got["oracle/off_support_rate"] == 0.0
    # top-2 drops a true token at every step: recall < 1, still on the support
    narrow = compute(dataclasses.replace(gen, decoder={"name": "sample", "top_k": 2}))
    assert narrow["oracle/trunc_recall"] < 1.0 and narrow["oracle/trunc_precision"] == 1.0


def test_rows_that_do_not_apply():
    base = dict(ended=[True], oracle=ORACLE, step_logits=lambda p, s, e: [_rows((A,), (B,))])
    for dec in ({"name": "greedy"}, {"name": "sample", "temperature": 0.0}):
        assert "oracle/trunc_recall" not in compute(Generations([[A]], decoder=dec, **base))
    # a row with state the metric cannot rerun (repetition penalty reads token counts)
    dec = {"name": "sample", "repetition_penalty": 1.3}
    assert "oracle/trunc_recall" not in compute(Generations([[A]], decoder=dec, **base))


def _rnn_step(params, h, tok):
    h = jnp.tanh(h @ params["w"] + params["e"][tok])
    return h, h @ params["u"]


@pytest.mark.slow  # several compiles: the full suite runs it
def test_every_sampled_token_is_in_its_recomputed_kept_set():
    """The teacher-forced logits are the ones the sampler saw: on a random RNN, each drawn
    token (EOS included) lies in the kept set recomputed at its step, for truncations that
    cut deep (top-p 0.6, eta 0.1, top-n-sigma 0.5 with min-p and temperature 0.8)."""
    k = jax.random.split(jax.random.key(1), 3)
    params = {
        "w": 0.5 * jax.random.normal(k[0], (8, 8)),
        "e": jax.random.normal(k[1], (V, 8)),
        "u": 3.0 * jax.random.normal(k[2], (8, V)),
    }
    model = LoadedModel(_rnn_step, params, lambda b: jnp.zeros((b, 8)), V)
    for dec in (
        {"name": "sample", "top_p": 0.6},
        {"name": "sample", "eta": 0.1},
        {"name": "sample", "top_n_sigma": 0.5, "min_p": 0.1, "temperature": 0.8},
    ):
        g = _sample(model, dec, None, None, max_len=12, n=16)
        logits = step_logits(model, g["prompts"], g["sequences"], list(g["ended"]))
        kept = kept_sets(dec, logits)
        for seq, e, keep in zip(g["sequences"], g["ended"], kept):
            toks = list(seq) + ([EOS_ID] if e else [])
            assert all(keep[j, t] for j, t in enumerate(toks))
            assert not keep.all()  # the truncation did cut
