"""The logits processors as ONE ordered table: each row's name, stage, knobs, function and the
state it needs. Everything else about processors is derived from it:

- `ProcessorFlags`, the compiled program's static key (which rows are on, in which order, and
  their static knobs' values), from `flags_from_cfg`;
- when a row is on: one of its knobs is away from its neutral value (`knobs.Knob.neutral`); a
  row with no such knob (temperature, min-length: traced, so cheap to keep) is always on;
- the order shown in docs, README and `--help` (`render_order`; a test holds the README to it);
- the knobs of the decoders that sample (`registry`: `sample` reads every row's knobs,
  `greedy` the penalty stage's).

Stages run in this order: penalty (before temperature; greedy applies only these), temperature,
truncation (every truncation works on the distribution left by the rows before it, softmax of
the current logits, as in Hugging Face's warpers), post (Mirostat: after the truncations, with
state of its own). Within a stage the rows run in table order. The order is data (`ORDER`), so
a user's row goes where `register_processor` puts it, and a config can later carry an order.

State a row may need (the sampler keeps it only when a row that is on needs it):
  counts   [R, V] int32  how often each token occurred (`penalize_prompt`: the prompt's too)
  history  [R, T] int32  the tokens so far
  key      [R]           a PRNG key per row and step, fold_in(fold_in(row key, row id), t):
                         a row's draws depend on its own (prompt, sample) key only, so the
                         output is batch-invariant
  own      `init(rows, knobs) -> state`, `update(state, logits_in, token, knobs) -> state`
           after each sampled token (Mirostat's running mu).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqgen.decoding import llama_samplers as L
from seqgen.decoding import processors as P
from seqgen.decoding import steering as S
from seqgen.decoding.common import DEFAULTS
from seqgen.decoding.knobs import CONFIG_FIELDS, KNOBS, Knob, add_knob
from seqgen.errors import UserError

STAGES = ("penalty", "temperature", "truncation", "post")
# Where a stage may go in a user's order (`check_order`): penalties first (greedy applies only
# them), Mirostat's post stage last (it reads the final distribution); temperature and the
# truncations interleave freely, as in llama.cpp's chain (which puts temperature last).
ORDER_RANK = {"penalty": 0, "temperature": 1, "truncation": 1, "post": 2}
SHARED_STATE = ("counts", "history", "key")
PENALTY_STAGES = ("penalty",)  # greedy applies only these


@dataclass(frozen=True)
class Context:
    """What a processor sees at one step. R rows, V tokens, T positions."""

    knobs: Mapping[str, Any]  # traced knobs (float32 scalars) and static ones (Python values)
    t: Any  # the position being chosen (scalar)
    generated: jax.Array | None = None  # [R] continuation tokens so far (EOS not counted)
    counts: jax.Array | None = None  # [R, V] int32 ("counts")
    history: jax.Array | None = None  # [R, T] int32 ("history")
    keys: jax.Array | None = None  # [R] PRNG keys of this row and step ("key")
    state: Any = None  # the processor's own state (`init`/`update`)
    mass_method: str | None = None  # how top-p / typical-p find their set


ProcessorFn = Callable[[jax.Array, Context], jax.Array]


@dataclass(frozen=True)
class Processor:
    """One row. `fn(logits [R, V], ctx) -> logits [R, V]` (removed tokens get -inf).

    knobs:  the knobs (names in `knobs.KNOBS`) it reads; those with a `neutral` value switch it.
    needs:  shared state from SHARED_STATE.
    init, update: its own state (both or neither), see the module docstring.
    is_on:  `(get, vocab_size) -> bool` instead of the neutral-value rule (top-k: k >= V is off).
    before: rows it must run before in any order (dynatemp: temperature, whose x / t it rescales).
    doc:    the paper or toolkit and the definition it implements.
    """

    name: str
    stage: str
    fn: ProcessorFn
    knobs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    init: Callable[[int, Mapping[str, Any]], Any] | None = None
    update: Callable[[Any, jax.Array, jax.Array, Mapping[str, Any]], Any] | None = None
    is_on: Callable[[Callable[[str], Any], int | None], bool] | None = None
    before: tuple[str, ...] = ()
    doc: str = ""

    def on(self, get: Callable[[str], Any], vocab_size: int | None = None) -> bool:
        """Whether the row is compiled in for the knob values `get(name)`."""
        if self.is_on is not None:
            return bool(self.is_on(get, vocab_size))
        switches = [k for k in self.knobs if KNOBS[k].neutral is not None]
        return not switches or any(get(k) != KNOBS[k].neutral for k in switches)


def _m(ctx: Context) -> int:
    return ctx.knobs["min_tokens_to_keep"]


def _min_length(x: jax.Array, c: Context) -> jax.Array:
    return x if c.generated is None else P.min_length(x, c.generated, c.knobs["min_length"])


def _miro_init(rows: int, knobs: Mapping[str, Any]) -> jax.Array:
    return jnp.full((rows,), 2.0, jnp.float32) * knobs["mirostat_tau"]  # mu_0 = 2 tau


def _miro_update(mu: jax.Array, logits_in: jax.Array, tok: jax.Array, knobs: Mapping) -> jax.Array:
    picked = jnp.take_along_axis(logits_in, tok[:, None], axis=-1)[:, 0]
    surprise = -(picked - jax.nn.logsumexp(logits_in, axis=-1)) / P.LOG2  # bits
    return P.mirostat_update(mu, surprise, knobs["mirostat_tau"], knobs["mirostat_lr"])


_KEEP = ("min_tokens_to_keep",)
# the penalties' knobs and state: `penalty_last_n` > 0 counts the last n tokens of the history
_PENALTY = ("penalize_prompt", "penalty_last_n")
_PENALTY_NEEDS = ("counts", "history")


def _counts(c: Context) -> jax.Array:
    """The token counts the penalties read: all so far, or the last `penalty_last_n`."""
    last_n = c.knobs["penalty_last_n"]
    if not last_n:
        return c.counts
    first = jnp.zeros(c.history.shape[:1], jnp.int32)
    if c.generated is not None:  # the prompt ends where the continuation starts
        first = jnp.where(c.knobs["penalize_prompt"] > 0.5, first, c.t - c.generated)
    return L.window_counts(c.history, c.t, first, last_n, c.counts.shape[-1])


def _truncation(fn: Callable, mass_method: bool = False, **facts: Any) -> Processor:
    """A truncation row: `fn(logits, knob, min_keep[, method])`, named like its knob."""
    name = fn.__name__
    if mass_method:
        run = lambda x, c: fn(x, c.knobs[name], _m(c), c.mass_method)  # noqa: E731
    else:
        run = lambda x, c: fn(x, c.knobs[name], _m(c))  # noqa: E731
    return Processor(name, "truncation", run, (name, *_KEEP), doc=fn.__doc__, **facts)


# the shared state a `_positional` row's function takes after the logits, per entry of `needs`
_STATE_ARGS = {"history": lambda c: (c.history, c.t), "key": lambda c: (c.keys,)}
_DRY_KNOBS = ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_sequence_breakers")


def _positional(fn: Callable, stage: str, knobs: tuple[str, ...], needs=(), **facts) -> Processor:
    """A row named like `fn`, calling `fn(logits, *its needs' state, *its knobs' values)`."""

    def run(x: jax.Array, c: Context) -> jax.Array:
        state = [a for s in needs for a in _STATE_ARGS[s](c)]
        return fn(x, *state, *(c.knobs[k] for k in knobs))

    facts.setdefault("doc", fn.__doc__)
    return Processor(fn.__name__, stage, run, knobs, tuple(needs), **facts)


def _steer(name: str, fn: Callable, doc: str, needs: tuple[str, ...] = ()) -> Processor:
    """A steering row (`steering`), on when its knob is not empty: `fn(logits, value, ctx)`."""
    return Processor(
        name,
        "penalty",
        lambda x, c: fn(x, c.knobs[name], c),
        (name,),
        needs,
        doc=doc,
    )


def _bad_words(x: jax.Array, words: Any, c: Context) -> jax.Array:
    """vLLM `bad_words`, HF `bad_words_ids`: a sequence bias of -inf on each word."""
    return S.sequence_bias(x, c.history, c.t, tuple((w, -float("inf")) for w in words))


_STEERING = (
    _steer("allowed_tokens", lambda x, v, c: S.allowed_tokens(x, v), S.allowed_tokens.__doc__),
    _steer("bad_words", _bad_words, _bad_words.__doc__, ("history",)),
    _steer("logit_bias", lambda x, v, c: S.logit_bias(x, v), S.logit_bias.__doc__),
    _steer(
        "sequence_bias",
        lambda x, v, c: S.sequence_bias(x, c.history, c.t, v),
        S.sequence_bias.__doc__,
        ("history",),
    ),
)

_BUILTIN = (
    Processor("min_length", "penalty", _min_length, ("min_length",), doc=P.min_length.__doc__),
    *_STEERING,
    Processor(
        "repetition_penalty",
        "penalty",
        lambda x, c: P.repetition_penalty(x, _counts(c), c.knobs["repetition_penalty"]),
        ("repetition_penalty", *_PENALTY),
        _PENALTY_NEEDS,
        doc=P.repetition_penalty.__doc__,
    ),
    Processor(
        "presence_frequency_penalty",
        "penalty",
        lambda x, c: P.presence_frequency_penalty(
            x, _counts(c), c.knobs["presence_penalty"], c.knobs["frequency_penalty"]
        ),
        ("presence_penalty", "frequency_penalty", *_PENALTY),
        _PENALTY_NEEDS,
        doc=P.presence_frequency_penalty.__doc__,
    ),
    Processor(
        "no_repeat_ngram",
        "penalty",
        lambda x, c: P.no_repeat_ngram(x, c.history, c.t, c.knobs["no_repeat_ngram_size"]),
        ("no_repeat_ngram_size",),
        ("history",),
        doc=P.no_repeat_ngram.__doc__,
    ),
    _positional(L.dry, "penalty", _DRY_KNOBS, ("history",)),
    _positional(
        L.dynatemp,
        "temperature",
        ("temperature", "dynatemp_range", "dynatemp_exponent"),
        before=("temperature",),
        doc=L.dynatemp_factor.__doc__,
    ),
    Processor(
        "temperature",
        "temperature",
        lambda x, c: P.temperature(x, c.knobs["temperature"]),
        ("temperature",),
        doc=P.temperature.__doc__,
    ),
    _truncation(
        P.top_k,
        is_on=lambda get, v: 0 < int(get("top_k")) and (v is None or int(get("top_k")) < v),
    ),
    _truncation(P.top_p, mass_method=True),
    _truncation(P.typical_p, mass_method=True),
    _truncation(P.min_p),
    _truncation(P.epsilon),
    _truncation(P.eta),
    _truncation(P.top_n_sigma),
    _positional(L.xtc, "truncation", ("xtc_threshold", "xtc_probability", *_KEEP), ("key",)),
    Processor(
        "mirostat",
        "post",
        lambda x, c: P.mirostat_truncate(x, c.state),
        ("mirostat_tau", "mirostat_lr"),
        init=_miro_init,
        update=_miro_update,
        doc=P.mirostat_truncate.__doc__,
    ),
)

# The table: name -> row, and the order the rows run in (data: `register_processor` inserts).
PROCESSORS: dict[str, Processor] = {p.name: p for p in _BUILTIN}
ORDER: list[str] = [p.name for p in _BUILTIN]


class ProcessorFlags(NamedTuple):
    """The static key of a sampling program: the rows compiled in, in the order they run, the
    values of their static knobs (sizes, counts), and how top-p / typical-p find their set."""

    order: tuple[str, ...] = ()
    static: tuple[tuple[str, Any], ...] = ()
    mass_method: str | None = None

    def needs(self, state: str) -> bool:
        """Whether a row that is on needs the shared `state` (SHARED_STATE)."""
        return any(state in PROCESSORS[n].needs for n in self.order)

    def stateful(self) -> tuple[str, ...]:
        """The rows that are on and keep state of their own."""
        return tuple(n for n in self.order if PROCESSORS[n].init is not None)


def check_order(order: Sequence[str], where: str = "order") -> tuple[str, ...]:
    """The full order a user's `order` gives (llama.cpp's sampler chain), or one `UserError`
    line naming what is wrong. The named rows take, in the given order, the places the table
    gives them; the rows not named keep theirs. An order is impossible with an unknown or a
    repeated name, a stage before an earlier one (`ORDER_RANK`: penalties first, post last,
    temperature and truncations in any order), or a row after one it must precede (`before`)."""
    order = tuple(order)
    unknown = [n for n in order if n not in PROCESSORS]
    twice = sorted({n for n in order if order.count(n) > 1})
    if unknown or twice:
        what = f"{unknown} unknown" if unknown else f"{twice} twice"
        raise UserError(
            f"{where}={list(order)} names {what}; allowed: each of {', '.join(ORDER)} at most once"
        )
    named = iter(order)
    full = tuple(next(named) if n in order else n for n in ORDER)
    for a, b in zip(full, full[1:]):
        if ORDER_RANK[PROCESSORS[b].stage] < ORDER_RANK[PROCESSORS[a].stage]:
            raise UserError(
                f"{where}: {b} ({PROCESSORS[b].stage}) cannot run after {a} "
                f"({PROCESSORS[a].stage}); allowed: the penalty rows first, then temperature and "
                "the truncations in any order, then post"
            )
    for n in full:
        late = [b for b in PROCESSORS[n].before if full.index(b) < full.index(n)]
        if late:
            raise UserError(f"{where}: {n} must run before {', '.join(late)}")
    return full


def _static(knob: Knob, value: Any) -> Any:
    """A static knob's value as part of the program's (hashable) key."""
    return S.freeze(knob.name, value) if knob.steer else knob.type(value)


def flags_from_cfg(
    get: Callable[[str], Any],
    vocab_size: int | None = None,
    stages: tuple[str, ...] = STAGES,
    order: Sequence[str] | None = None,
) -> ProcessorFlags:
    """Switch on exactly the rows of `stages` that are on for the knob values `get(name)`, in
    `order` (`check_order`; None: the `order` knob's, whose default [] is the table's)."""
    names = check_order(get("order") if order is None else order)
    order = tuple(
        n for n in names if PROCESSORS[n].stage in stages and PROCESSORS[n].on(get, vocab_size)
    )
    static = {
        k: _static(KNOBS[k], get(k))
        for n in order
        for k in PROCESSORS[n].knobs
        if not KNOBS[k].traced
    }
    # the backend's method, read here so that it is part of the program's static key
    return ProcessorFlags(order, tuple(static.items()), P.nucleus_method())


def processor_keys(words: jax.Array, name: str, t: Any) -> jax.Array:
    """The keys [R] of row `name` at step t from the rows' key words [R, 2] (`common.key_words`):
    fold_in(fold_in(row key, crc32(name)), t). Independent of the batch and of the order."""
    salt = zlib.crc32(name.encode()) & 0x7FFFFFFF
    base = jax.random.wrap_key_data(words, impl="threefry2x32")
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, salt), t))(base)


def apply(
    logits: jax.Array,
    flags: ProcessorFlags,
    knobs: Mapping[str, jax.Array],
    stages: tuple[str, ...] = STAGES,
    *,
    t: Any = 0,
    generated: jax.Array | None = None,
    counts: jax.Array | None = None,
    history: jax.Array | None = None,
    words: jax.Array | None = None,
    states: Mapping[str, Any] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Run the rows of `flags` that belong to `stages`, in `flags.order`. logits [R, V] ->
    (processed logits [R, V], {stateful row: the logits it received, its `update`'s input})."""
    all_knobs = {**knobs, **dict(flags.static)}
    inputs = {}
    for name in flags.order:
        row = PROCESSORS[name]
        if row.stage not in stages:
            continue
        keys = processor_keys(words, name, t) if "key" in row.needs else None
        ctx = Context(
            all_knobs,
            t,
            generated,
            counts,
            history,
            keys,
            None if states is None else states.get(name),
            flags.mass_method,
        )
        if row.update is not None:
            inputs[name] = logits
        logits = row.fn(logits, ctx)
    return logits, inputs


def process_logits(
    logits: jax.Array, knobs: Mapping[str, jax.Array], flags: ProcessorFlags, **state: Any
) -> jax.Array:
    """Every row of `flags` (all stages) on logits [R, V]; `state`: as `apply`."""
    return apply(logits, flags, knobs, **state)[0]


def render_order(sep: str = " -> ") -> str:
    """The processor order as docs show it: `min_length -> repetition_penalty -> ...`."""
    return sep.join(ORDER)


def stage_knobs(stages: tuple[str, ...] = STAGES) -> tuple[str, ...]:
    """The knobs of the rows of `stages`, in table order, each once (the sampler's knobs)."""
    return tuple(
        dict.fromkeys(
            k for n in ORDER if PROCESSORS[n].stage in stages for k in PROCESSORS[n].knobs
        )
    )


def check_new_knob(knob: Knob, where: str) -> None:
    """A user's knob: a number or bool with a default inside its range, and a neutral value
    equal to its default (so the processor is off unless a config turns it on)."""
    if not isinstance(knob, Knob):
        raise UserError(f"{where}: {knob!r} is not a seqgen.decoding.knobs.Knob or a knob name")
    if not knob.name.isidentifier() or knob.name in KNOBS or knob.name in CONFIG_FIELDS:
        raise UserError(f"{where}: knob {knob.name!r} clashes or is not a Python identifier")
    if knob.type not in (float, int, bool):
        raise UserError(
            f"{where}: knob {knob.name!r} has type {knob.type}; allowed: float, int, bool"
        )
    knob.check(knob.default, where)
    if knob.type is not bool and knob.neutral is not None and knob.neutral != knob.default:
        raise UserError(
            f"{where}: knob {knob.name!r} has neutral={knob.neutral!r} != default="
            f"{knob.default!r}; allowed: neutral equal to the default (off unless set)"
        )


def register_processor(
    name: str,
    fn: ProcessorFn,
    *,
    stage: str,
    knobs: tuple[Knob | str, ...] = (),
    needs: tuple[str, ...] = (),
    init: Callable | None = None,
    update: Callable | None = None,
    after: str | None = None,
    doc: str = "",
) -> Processor:
    """Add a user's logits processor as a row of the table (one call, from the user's own code).

    fn:     `fn(logits [R, V], ctx: Context) -> logits [R, V]`, jit-traceable; it reads its
            knobs as `ctx.knobs[name]` (traced knobs are float32 scalars).
    knobs:  new `Knob`s (at least one with a `neutral` value equal to its default, so the row
            is off, and not compiled, until a config sets it) or names of existing knobs.
            Each becomes `decoder.<knob>` in the Hydra config and a `decode(cfg=...)` field;
            traced ones are swept without a recompile.
    stage:  one of STAGES; the row runs after the last row of its stage, or after `after`.
    needs:  shared state from SHARED_STATE ("key" gives per-row PRNG keys, `ctx.keys`).
    init, update: its own state (see the module docstring).

    Refused with one `UserError` line: a name clash, an unknown stage or state, a knob without
    a range's valid default or without a neutral value, init without update.
    """
    where = f"register_processor({name!r})"
    if not isinstance(name, str) or not name.isidentifier() or name in PROCESSORS:
        raise UserError(
            f"{where}: the name clashes or is not an identifier; taken: {', '.join(ORDER)}"
        )
    if stage not in STAGES:
        raise UserError(f"{where}: stage={stage!r} is unknown; allowed: {', '.join(STAGES)}")
    if not callable(fn):
        raise UserError(f"{where}: fn is not callable; allowed: fn(logits, ctx) -> logits")
    bad = [s for s in needs if s not in SHARED_STATE]
    if bad:
        raise UserError(f"{where}: needs={bad} unknown; allowed: {', '.join(SHARED_STATE)}")
    if (init is None) != (update is None):
        raise UserError(f"{where}: give both init and update (own state) or neither")
    new = [k for k in knobs if not isinstance(k, str)]
    for k in new:
        check_new_knob(k, where)
    for k in knobs:
        if isinstance(k, str) and k not in KNOBS:
            raise UserError(f"{where}: knob {k!r} is unknown; give a Knob to add it")
    if not any(k.neutral is not None for k in new):
        raise UserError(
            f"{where}: no new knob has a neutral value; allowed: at least one Knob(neutral=...) "
            "equal to its default, so the processor is off unless a config sets it"
        )
    if after is not None and after not in PROCESSORS:
        raise UserError(f"{where}: after={after!r} is unknown; allowed: {', '.join(ORDER)}")
    if after is not None and STAGES.index(PROCESSORS[after].stage) > STAGES.index(stage):
        raise UserError(f"{where}: after={after!r} is in a later stage than {stage!r}")
    names = tuple(k if isinstance(k, str) else k.name for k in knobs)
    row = Processor(name, stage, fn, names, tuple(needs), init, update, doc=doc or fn.__doc__ or "")
    for k in new:
        add_knob(k)
        DEFAULTS[k.name] = k.default
    if after is None:
        same = [
            i
            for i, n in enumerate(ORDER)
            if STAGES.index(PROCESSORS[n].stage) <= STAGES.index(stage)
        ]
        pos = same[-1] + 1 if same else 0
    else:
        pos = ORDER.index(after) + 1
    PROCESSORS[name] = row
    ORDER.insert(pos, name)
    return row
