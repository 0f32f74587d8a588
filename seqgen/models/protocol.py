"""The model protocol: what training, decoding, scoring and preflight need from a network.

A model is an NNX module with three methods (`SequenceModel`):

- `__call__(tokens[B, T], *, rngs=None, backward="autodiff") -> logits[B, T, V]`: teacher
  forcing, for training and held-out perplexity (`rngs`: the dropout key of a train step, used
  only in train mode; `backward`: `train.backward`, which a model without a recurrence ignores);
- `init_carry(batch_size, max_len=None) -> carry`: the decode state before BOS, a pytree whose
  every leaf has leading axis B (the decoders repeat, gather and shard rows along it).
  `max_len` is the most steps the carry will take (the decode budget, static): a recurrent
  carry ignores it, a Transformer sizes its KV cache by it;
- `step(carry, tokens[B]) -> (carry, logits[B, V])`: one token at a time, for decoding; the
  carry keeps its shapes.

`step` and `__call__` compute the same function: feeding a sequence step by step gives the
logits of the teacher-forced pass (each model's tests check it).

Optional: `step_hidden(carry, tokens[B]) -> (carry, hidden[B, D], logits[B, V])`, the same step
and the representation its logits are read from (the recurrent cells: the top layer's h; the
Transformer: the last hidden state after the final layer norm, Hugging Face's
`last_hidden_state`). Contrastive search compares candidates by it. `make_step_fn` attaches it
to the step function (`seqgen.decoding.common.with_hidden`, where the decoders' step-function
protocol lives; `hidden_step(step_fn)` reads it back, None for a model or a user's step
function without one: every decoder but those whose row says `hidden` runs such a model).

`ModelSpec` is one row of the models table (`seqgen.models.registry.MODELS`): how to build the
module from its `model.*` config fields, which fields those are (its cache identity), its
training activations per token for preflight's memory estimate, and its cross-field checks.
The parameter count needs no formula per model: `estimate_params` builds the module abstractly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from seqgen.decoding.common import with_hidden
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

Array = jax.Array
Carry = Any  # a pytree, every leaf [B, ...]

# PAD and BOS are never a target, so a head gives them this logit (large negative, never -inf:
# no NaN in log-softmax arithmetic); the model's distribution is over the other ids.
NEVER_PREDICTED = (PAD_ID, BOS_ID)
MASKED_LOGIT = -1e9


def never_predicted(predict_eos: bool) -> tuple[int, ...]:
    """The ids a head masks: PAD and BOS, and EOS for a text stream without EOS targets."""
    return NEVER_PREDICTED + (() if predict_eos else (EOS_ID,))


def mask_logits(logits: Array, never: tuple[int, ...]) -> Array:
    """`logits[..., V]` with the `never` ids set to MASKED_LOGIT."""
    ids = jnp.arange(logits.shape[-1])
    return jnp.where(jnp.isin(ids, jnp.asarray(never)), MASKED_LOGIT, logits)


def output_logits(model: Any, x: Array) -> Array:
    """The output layer of a built-in model: logits of features x [..., D], through the
    embedding's transpose plus `head_bias` when `model.tie_weights` (Press & Wolf 2017), else
    through `model.head`; the ids the model never predicts masked (`mask_logits`)."""
    if model.tie_weights:
        logits = x @ model.embed.embedding[...].T + model.head_bias[...]
    else:
        logits = model.head(x)
    return mask_logits(logits, model.never_predicted)


class SequenceModel(Protocol):
    """What every model module provides (see the module docstring)."""

    def __call__(
        self, tokens: Array, *, rngs: Array | None = None, backward: str = "autodiff"
    ) -> Array: ...

    def init_carry(self, batch_size: int, max_len: int | None = None) -> Carry: ...

    def step(self, carry: Carry, tokens: Array) -> tuple[Carry, Array]: ...


@dataclass(frozen=True)
class ModelSpec:
    """One row of the models table.

    name:       the `model.cell` value that selects it.
    build:      `build(fields, vocab_size, *, predict_eos, rngs) -> SequenceModel`; `fields` is
                a dict of the `model.*` values named in `fields`.
    fields:     the `model.*` config fields the model reads, in order. They (with `cell`) are
                its cache identity and its `meta.json` record: a field it does not read never
                retrains it.
    activation_floats: `(fields, vocab_size, seq_len) -> float32 values` kept per training
                token for the backward pass (a lower estimate; preflight's memory check).
    check:      optional `(fields, seq_len, max_len) -> None`, raising `UserError` on a rule
                between fields or against `train.seq_len` / `decode.max_len`, before any work.
    """

    name: str
    build: Callable[..., nnx.Module]
    fields: tuple[str, ...]
    activation_floats: Callable[[Mapping[str, Any], int, int], float]
    check: Callable[[Mapping[str, Any], int, int], None] | None = None


def make_step_fn(model: nnx.Module) -> tuple[Callable[..., tuple[Carry, Array]], nnx.State]:
    """Split `model` once; return a pure `step_fn(params, carry, tokens)` and its `params`.

    `params` is the `nnx.Param` state of the model (the only arrays a decoder needs to pass
    around); the remaining state (dropout RNG streams, unused in eval mode) is closed over.
    The model is put in eval mode first (no dropout while decoding). `step_fn` is jittable
    and preserves the carry's shapes.
    """
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def step_fn(params: nnx.State, carry: Carry, tokens: Array) -> tuple[Carry, Array]:
        return nnx.merge(graphdef, params, rest).step(carry, tokens)

    if provides_hidden(model):

        def hidden(params: nnx.State, carry: Carry, tokens: Array) -> tuple[Carry, Array, Array]:
            return nnx.merge(graphdef, params, rest).step_hidden(carry, tokens)

        with_hidden(step_fn, hidden)
    return step_fn, params


def provides_hidden(model: Any) -> bool:
    """Whether a model module has the optional `step_hidden`."""
    return callable(getattr(model, "step_hidden", None))


def make_init_carry_fn(model: nnx.Module) -> Callable[..., Carry]:
    """The model's own `init_carry(batch_size, max_len=None)`, holding only the parameters'
    shapes (a carry depends on sizes, never on weights)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)

    def init_carry(batch_size: int, max_len: int | None = None) -> Carry:
        return nnx.merge(graphdef, shapes, rest).init_carry(batch_size, max_len)

    return init_carry


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (`nnx.Param` leaves only)."""
    params = nnx.state(model, nnx.Param)
    return int(sum(x.size for x in jax.tree.leaves(params)))
