"""Shared pieces of every decoder: the output dataclass, the knobs, validation, row keys.

The decoders see only a step function `step_fn(params, carry, tokens[B]) -> (carry, logits[B, V])`
and an initial carry pytree whose leaves have leading axis B (= number of prompts). Nothing here
imports a model or a corpus.

The knobs -- name, default, range, static or traced -- are written once, in `knobs.py`;
`get` and `traced_knobs` are how a decoder reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqgen.decoding.constraint import check_prompts, check_vocab
from seqgen.decoding.knobs import DEFAULT_NAME, KNOBS, traced_names
from seqgen.errors import UserError
from seqgen.settings import setting
from seqgen.tokens import EOS_ID, PAD_ID

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
# the optional hidden-state step: (params, carry, tokens[B]) -> (carry, hidden[B, D], logits[B, V])
HiddenStep = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array, jax.Array]]


def with_hidden(step_fn: StepFn, hidden: HiddenStep) -> StepFn:
    """Attach `hidden`, the same step that also returns the representation its logits are
    read from, to `step_fn` (`seqgen.models.protocol`: what the built-in models provide);
    returns `step_fn`. A user's own step function opts in to contrastive search with it."""
    step_fn.hidden = hidden  # type: ignore[attr-defined]
    return step_fn


def hidden_step(step_fn: StepFn) -> HiddenStep | None:
    """The hidden-state step attached to `step_fn` by `with_hidden`, or None."""
    return getattr(step_fn, "hidden", None)


NEG_INF = -jnp.inf

# The decoder defaults by field, `name` included (from `knobs.KNOBS`); `cfg` may omit any of them.
DEFAULTS: dict[str, Any] = {"name": DEFAULT_NAME, **{k.name: k.default for k in KNOBS.values()}}


@struct.dataclass
class DecodeOutput:
    """What every decoder returns (N = num_samples for sampling, 1 for greedy, beam_size for beams).

    tokens:            int32[B, N, max_len]  prompt, then continuation, then EOS (at position
                       `lengths` when `ended`), then PAD.
    lengths:           int32[B, N]  total length incl. prompt, excl. EOS.
    prompt_lengths:    int32[B]
    ended:             bool[B, N]   the sequence emitted EOS (else it was cut at max_len).
    logprobs:          f32[B, N, max_len]  model's unmodified log-prob of each generated token;
                       0 on prompt, EOS and PAD positions.
    tempered_logprobs: f32[B, N, max_len]  log softmax(logits / t) of the unmodified logits
                       (t = 1 when t = 0, and for beam / diverse beam), same layout.
    processed_logprobs:f32[B, N, max_len]  log-prob under the processed distribution actually
                       sampled from (0 for greedy / temperature 0: a point mass), same layout.
    eos_logprob, eos_tempered_logprob, eos_processed_logprob: f32[B, N]  the same three
                       quantities for the EOS token (0 when not `ended`).
    scores:            f32[B, N]  the ranking score: sampling/greedy: the sequence log-prob
                       sum(logprobs) + eos_logprob; beam / diverse beam: the length-normalized
                       log-prob; stochastic beam: the perturbed log-prob G (= gumbel_scores).
                       Beam methods sort best first; an empty slot has score -inf, length 0.
    gumbel_scores, kappa, inclusion_probs: stochastic beam only (None otherwise):
                       f32[B, N] perturbed log-probs G_phi(y), f32[B] the threshold kappa
                       (the (K+1)-th largest perturbed log-prob; -inf when fewer than K+1
                       sequences exist), f32[B, N] q(y) = 1 - exp(-exp(phi_y - kappa)).
    proven, expansions: exact only (None otherwise): bool[B] the row's result is the proven
                       mode; int32[B] step-function calls the search spent.
    constraint_logmass: with a constraint only (None otherwise): f32[B, N, T] log m_t, the
                       log of the model's (t = 1, unmodified) probability of the tokens the
                       automaton allowed at position t, at every generated position (the EOS
                       position included); 0 on prompt and PAD positions (`decoding.constraint`).
    top_ids, top_logprobs: with `logprobs=K` only (None otherwise): int32 / f32[B, N, T, K]
                       the K most probable tokens at each generated position (EOS's
                       included) and their log-probs under the `logprobs_mode` distribution,
                       most probable first; PAD / 0 at prompt and PAD positions.
    prompt_logprobs:   with `prompt_logprobs=True` only (None otherwise): f32[B, T] the model's
                       log p(x_t | BOS, x_<t) of each prompt token (vLLM `prompt_logprobs`,
                       here defined for the first token too: it follows BOS); 0 elsewhere.
    stopped:           with `decoder.stop` only (None otherwise): bool[B, N] the row ended at a
                       stop sequence (`ended` too; `decoding.steering`). It has no EOS token:
                       PAD follows the kept tokens, and eos_* are 0.
    """

    tokens: jax.Array  # [B, N, T]
    lengths: jax.Array  # [B, N]
    prompt_lengths: jax.Array  # [B]
    ended: jax.Array  # [B, N]
    logprobs: jax.Array  # [B, N, T]
    tempered_logprobs: jax.Array  # [B, N, T]
    processed_logprobs: jax.Array  # [B, N, T]
    eos_logprob: jax.Array  # [B, N]
    eos_tempered_logprob: jax.Array  # [B, N]
    eos_processed_logprob: jax.Array  # [B, N]
    scores: jax.Array  # [B, N]
    gumbel_scores: jax.Array | None = None  # [B, N]
    kappa: jax.Array | None = None  # [B]
    inclusion_probs: jax.Array | None = None  # [B, N]
    proven: jax.Array | None = None  # [B]
    expansions: jax.Array | None = None  # [B]
    constraint_logmass: jax.Array | None = None  # [B, N, T]
    stopped: jax.Array | None = None  # [B, N]
    top_ids: jax.Array | None = None  # [B, N, T, K]
    top_logprobs: jax.Array | None = None  # [B, N, T, K]
    prompt_logprobs: jax.Array | None = None  # [B, T]

    @classmethod
    def of(
        cls,
        tokens: jax.Array,
        lengths: jax.Array,
        prompt_lengths: jax.Array,
        ended: jax.Array,
        logprobs: jax.Array | tuple[jax.Array, jax.Array, jax.Array],
        eos_logprob: jax.Array | tuple[jax.Array, jax.Array, jax.Array],
        **rest: Any,
    ) -> DecodeOutput:
        """The output from its arrays: `logprobs` and `eos_logprob` are each the (raw,
        tempered, processed) triple, or one array where the decoder searched the model's own
        distribution (the three are the same); `rest`: `scores` and the optional fields."""
        lps = logprobs if isinstance(logprobs, tuple) else (logprobs,) * 3
        eos = eos_logprob if isinstance(eos_logprob, tuple) else (eos_logprob,) * 3
        return cls(
            tokens, lengths.astype(jnp.int32), prompt_lengths, ended, *lps, *eos, **rest
        )  # fmt: skip


def get(cfg: Any, name: str) -> Any:
    """A decoder field of `cfg` (dataclass, DictConfig, SimpleNamespace, dict or None)."""
    return setting(cfg, name, DEFAULTS[name])


def traced_knobs(cfg: Any) -> dict[str, jax.Array]:
    """The continuous knobs as float32 arrays: jit traces them, so new values reuse the program."""
    return {k: jnp.asarray(float(get(cfg, k)), jnp.float32) for k in traced_names()}


@dataclass(frozen=True)
class DecodeRequest:
    """One decode call: what every decoder takes (`seqgen.decoding.decode` documents each field).

    The arrays are host or device values as the caller has them; `prepare` validates them.
    """

    step_fn: StepFn  # pure (params, carry, tokens[B]) -> (carry, logits[B, V])
    params: Any
    init_carry: Any  # pytree, every leaf [B, ...]
    prompts: Any = None  # int[B, P] left-aligned, PAD-padded, without BOS; None = BOS only
    prompt_lengths: Any = None  # int[B]; None = all P
    _: KW_ONLY
    max_len: int  # prompt + continuation budget (BOS not counted)
    vocab_size: int
    cfg: Any = None  # the decoder knobs (`get`); None = every default
    num_samples: int = 1  # rows per prompt for `sample`
    key: Any = None  # a PRNG key or an int seed (None = 0)
    prompt_ids: Any = None  # int[B] global prompt indices for the row keys (None = 0..B-1)
    constraint: Any = None  # a `constraint.Constraint`, or None
    loop: str = "auto"  # the loop variant (`seqgen.decoding.loop.LOOPS`); outputs are the same
    logprobs: int = 0  # K: the top-K alternatives and their log-probs per position (0 = none)
    logprobs_mode: str = "raw"  # raw: the model's distribution; processed: the one sampled
    prompt_logprobs: bool = False  # the model's log-prob of every prompt token (greedy, sample)
    guidance_prompts: Any = None  # int[B, U] unconditional contexts (`guidance`); None = BOS
    guidance_lengths: Any = None  # int[B]; None = all U


LOGPROBS_MODES = ("raw", "processed")


def check_logprobs(req: DecodeRequest, decoder: str, supported: bool) -> None:
    """`decode.logprobs`, `decode.logprobs_mode`, `decode.prompt_logprobs`: one `UserError`
    line when wrong."""
    k, mode, vocab_size = req.logprobs, req.logprobs_mode, req.vocab_size
    if not _is_int(k) or not 0 <= k <= vocab_size:
        _fail(f"decode.logprobs={k!r} is out of range; allowed: an integer in [0, {vocab_size}]")
    if mode not in LOGPROBS_MODES:
        _fail(f"decode.logprobs_mode={mode!r} is unknown; allowed: {', '.join(LOGPROBS_MODES)}")
    if (k or req.prompt_logprobs) and not supported:
        what = f"decode.logprobs={k}" if k else "decode.prompt_logprobs=true"
        _fail(f"{what} is not supported by decoder {decoder}; allowed: greedy, sample")


@dataclass(frozen=True)
class Prepared:
    """Host-side, validated inputs shared by the decoders."""

    prompts: jax.Array  # [B, max_len] int32, PAD after each prompt
    prompt_lengths: jax.Array  # [B] int32
    prompt_ids: jax.Array  # [B] int32, index used to derive each row's PRNG key
    key: jax.Array
    batch: int


def _fail(msg: str) -> None:
    raise UserError(msg)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def validate_knobs(cfg: Any, vocab_size: int | None, where: str = "decoder") -> None:
    """Raise one UserError naming the first bad knob of `cfg` (as `where.knob`) and what is
    allowed, before any compile. Without a `vocab_size` (a config checked before its corpus is
    read) the vocabulary bound is left out. The name and the rules between knobs are the
    registry's (`registry.validate_decoder`)."""
    for knob in list(KNOBS.values()):
        knob.check(get(cfg, knob.name), where, vocab_size)


def prepare(req: DecodeRequest, *, num_samples: int = 1, keyed: bool = True) -> Prepared:
    """Validate sizes, prompts and key of `req` on the host and pad prompts to [B, max_len];
    with a constraint, check its vocabulary size and run every prompt through it (UserError on
    a reject). `num_samples`: the rows per prompt the decoder makes; `keyed=False` (the
    deterministic decoders) ignores `req.key` and `req.prompt_ids`."""
    init_carry, prompts, prompt_lengths = req.init_carry, req.prompts, req.prompt_lengths
    max_len, vocab_size, constraint = req.max_len, req.vocab_size, req.constraint
    key, prompt_ids = (req.key, req.prompt_ids) if keyed else (None, None)
    if not _is_int(max_len) or max_len < 1:
        _fail(f"max_len={max_len!r} is out of range; allowed: an integer >= 1")
    if not _is_int(num_samples) or num_samples < 1:
        _fail(f"num_samples={num_samples!r} is out of range; allowed: an integer >= 1")
    if not _is_int(vocab_size) or vocab_size <= EOS_ID:
        _fail(f"vocab_size={vocab_size!r} is out of range; allowed: an integer > {EOS_ID}")
    leaves = jax.tree.leaves(init_carry)
    if not leaves:
        _fail("init_carry has no arrays; allowed: a pytree whose leaves have leading axis B")
    batch = int(np.shape(leaves[0])[0])
    if any(np.ndim(x) < 1 or np.shape(x)[0] != batch for x in leaves):
        _fail("init_carry leaves disagree on the leading (batch) axis; allowed: one B for all")
    if prompts is None:
        p = np.zeros((batch, 0), np.int32)
        lengths = np.zeros((batch,), np.int32)
    else:
        p = np.asarray(prompts)
        if p.ndim != 2 or p.shape[0] != batch or not np.issubdtype(p.dtype, np.integer):
            _fail(
                f"prompts has shape {p.shape} and dtype {p.dtype}; allowed: int[{batch}, P] "
                "(one row per init_carry row)"
            )
        if prompt_lengths is None:
            lengths = np.full((batch,), p.shape[1], np.int32)
        else:
            lengths = np.asarray(prompt_lengths)
            if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
                _fail(f"prompt_lengths has shape {lengths.shape}; allowed: int[{batch}]")
        if lengths.size and (lengths.min() < 0 or lengths.max() > p.shape[1]):
            _fail(f"prompt_lengths must lie in [0, {p.shape[1]}] (the prompts' width)")
    if lengths.size and lengths.max() > max_len:
        _fail(
            f"a prompt has length {int(lengths.max())} > max_len={max_len}; allowed: "
            "prompt length <= max_len (max_len counts prompt + continuation)"
        )
    width = min(p.shape[1], max_len)
    p = p[:, :width].astype(np.int64)
    live = np.arange(width)[None, :] < lengths[:, None]
    if live.any() and (p[live].min() < 0 or p[live].max() >= vocab_size):
        _fail(f"a prompt token is outside the vocabulary; allowed: ids in [0, {vocab_size})")
    if live.any() and (p[live] == EOS_ID).any():
        _fail(f"a prompt contains EOS (id {EOS_ID}); allowed: prompts without EOS")
    padded = np.full((batch, max_len), PAD_ID, np.int32)
    padded[:, :width] = np.where(live, p, PAD_ID)
    if constraint is not None:
        check_vocab(constraint, vocab_size)
        check_prompts(constraint, padded, lengths)
    if prompt_ids is None:
        ids = np.arange(batch, dtype=np.int32)
    else:
        ids = np.asarray(prompt_ids)
        if ids.shape != (batch,) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
            _fail(f"prompt_ids has shape {ids.shape}; allowed: non-negative int[{batch}]")
    if key is None:
        key = jax.random.key(0)
    elif _is_int(key):
        key = jax.random.key(int(key))
    return Prepared(
        prompts=jnp.asarray(padded),
        prompt_lengths=jnp.asarray(lengths, jnp.int32),
        prompt_ids=jnp.asarray(ids, jnp.int32),
        key=key,
        batch=batch,
    )


def row_keys(key: jax.Array, prompt_ids: jax.Array, num_samples: int) -> jax.Array:
    """One key per (prompt, sample) row: fold_in(fold_in(key, prompt_id), sample_index).

    A row's key depends only on its own indices, so its output does not change with the batch
    size or its neighbours; chunked decoding passes the global `prompt_ids`.
    """
    per_prompt = jax.vmap(lambda i: jax.random.fold_in(key, i))(prompt_ids)  # [B]
    per_row = jax.vmap(
        lambda k: jax.vmap(lambda n: jax.random.fold_in(k, n))(jnp.arange(num_samples))
    )(per_prompt)  # [B, N]
    return per_row.reshape(-1)  # [B * N]


def key_words(keys: jax.Array) -> jax.Array:
    """The two uint32 words of threefry keys [R] (typed or raw) -> [R, 2]."""
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.key_data(keys)
    if keys.shape[-1] != 2:  # a non-threefry key: draw two words from it
        keys = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(keys)
    return keys.astype(jnp.uint32)


def gumbel_noise(words: jax.Array, t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Gumbel(0, 1) noise [R, *shape] for step t: Threefry-2x32 (Salmon et al. 2011) keyed by
    each row's key words, on the counters t * size + i, mapped through -log(-log(u)).

    One Threefry call per step (fold_in(key, t) followed by jax.random.gumbel would be two,
    and XLA's CPU compile time grows with each call site); rows stay independent of each
    other and of the batch size.
    """
    size = int(np.prod(shape))
    counter = (t * size + jnp.arange(size)).astype(jnp.uint32)  # [size]
    bits = jax.vmap(lambda w: jax.extend.random.threefry_2x32((w[0], w[1]), counter))(words)
    mantissa = (bits >> jnp.uint32(9)) | jnp.uint32(0x3F800000)
    u = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0  # [0, 1)
    u = jnp.maximum(u, jnp.finfo(jnp.float32).tiny)
    return -jnp.log(-jnp.log(u)).reshape(words.shape[0], *shape)


def repeat_rows(tree: Any, n: int) -> Any:
    """Repeat every leaf n times along axis 0: row b becomes rows b*n .. b*n+n-1."""
    if n == 1:
        return tree
    return jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x), n, axis=0), tree)


def take_along(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x[..., idx] row by row: `take_along_axis` on the last axis (x [..., N], idx [..., M])."""
    return jnp.take_along_axis(x, idx, axis=-1)


def gather_rows(tree: Any, index: jax.Array) -> Any:
    """Reorder the rows of every leaf of a pytree (beam reordering for any carry)."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), tree)


def length_norm(raw: jax.Array, gen_len: jax.Array, mode: str, alpha: jax.Array) -> jax.Array:
    """Length-normalized score of a log-prob sum `raw` over `gen_len` generated tokens (incl. EOS).

    none:    raw
    average: raw / L
    gnmt:    raw / ((5 + L) / 6) ** alpha   (Wu et al. 2016, "Google's NMT system", eq. 14)
    power:   raw / L ** alpha               (fairseq's `--lenpen`: eos_scores / (step + 1) ** a)

    A hypothesis cut at max_len has L = its generated tokens (no EOS). Every normalizer is >= 1
    and non-decreasing in L for alpha >= 0, which the beam's exact stopping rule relies on.
    """
    gen = jnp.maximum(gen_len, 1).astype(jnp.float32)
    if mode == "none":
        return raw
    if mode == "average":
        return raw / gen
    if mode == "power":
        return raw / gen**alpha
    return raw / ((5.0 + gen) / 6.0) ** alpha
